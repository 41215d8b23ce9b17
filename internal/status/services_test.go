package status

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/services/supervisortest"
)

// TestServicesNotRunning: a stopped supervisor program and a pidfile that
// names a dead process read as "not running", with what says so, and not
// as the text of a failed command.
func TestServicesNotRunning(t *testing.T) {
	sup := supervisortest.Start(t, "[program:web]\ncommand=/bin/sleep 1000\nautostart=false\n")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("/bin/true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(dead.ProcessState.Pid())
	if err := os.WriteFile(filepath.Join(root, "run", "worker.pid"), []byte(pid+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &desired.State{App: "shop", Root: root, Link: "current", Services: []desired.Service{
		{Name: "web", Manager: "supervisor", Action: "reload", Program: "web", Supervisor: desired.SupervisorConn{Config: sup.Config}},
		{Name: "worker", Manager: "command", Action: "restart", Restart: "true", PIDFile: "run/worker.pid"},
		{Name: "cron", Manager: "command", Action: "restart", Restart: "true"},
	}}
	svcs := ObserveServices(context.Background(), d, &runner.Runner{})
	want := []string{
		"not running (supervisor: STOPPED)",
		"not running (pid " + pid + " from run/worker.pid is gone)",
		"no pidfile: processes unknown",
	}
	for i, s := range svcs {
		if s.Note != want[i] || s.PID != 0 {
			t.Errorf("%s: pid %d, note %q; want %q", s.Name, s.PID, s.Note, want[i])
		}
	}
	var b bytes.Buffer
	if err := RenderText(&b, &Report{App: "shop", Root: root, Link: "current", Services: svcs}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\n  web     not running (supervisor: STOPPED)\n") {
		t.Errorf("status shows:\n%s", b.String())
	}
}
