package procs

import (
	"os"
	"os/exec"
	"testing"
)

// StartTime names a process across pid reuse: our own start time is
// stable, a child started later has a later one, a gone pid has none.
func TestStartTime(t *testing.T) {
	self := StartTime(os.Getpid())
	if self == 0 || StartTime(os.Getpid()) != self {
		t.Fatalf("StartTime(self) = %d, then %d", self, StartTime(os.Getpid()))
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := StartTime(cmd.Process.Pid)
	cmd.Process.Kill()
	cmd.Wait()
	if child < self {
		t.Errorf("child started at %d, before us at %d", child, self)
	}
	if got := StartTime(cmd.Process.Pid); got != 0 {
		t.Errorf("StartTime of a reaped pid = %d, want 0", got)
	}
}
