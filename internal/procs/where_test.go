package procs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// TestWhere starts a service by hand: its main process in release A, a
// child in release B, another outside every release, and asks where it
// runs, through a root that is itself a symbolic link (the kernel reports
// resolved directories).
func TestWhere(t *testing.T) {
	real := t.TempDir()
	for _, d := range []string{"releases/A/sub", "releases/B", "run"} {
		if err := os.MkdirAll(filepath.Join(real, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Symlink(real, root); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	cmd := exec.Command("/bin/sh", "-c", `(cd ../B && exec sleep 1000) & (cd "$OUTSIDE" && exec sleep 1000) & cd sub && wait`)
	cmd.Dir = filepath.Join(root, "releases", "A")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "OUTSIDE=" + outside}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	main := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(real, "run", "web.pid"), []byte(itoa(main)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	svc := desired.Service{Name: "web", Manager: "command", PIDFile: "run/web.pid"}
	releases := filepath.Join(root, "releases")
	// Each process's directory, and the release it says that is.
	want := map[string]string{
		filepath.Join(real, "releases", "A", "sub"): "A",
		filepath.Join(real, "releases", "B"):        "B",
		outside:                                     "",
	}
	// The children cd and exec after the fork: wait until they did.
	var pl Placement
	deadline := time.Now().Add(time.Minute)
	for {
		var err error
		pl, err = Where(context.Background(), &runner.Runner{}, svc, root, nil, releases)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, p := range pl.Procs {
			got[p.Cwd] = p.Release
		}
		if len(pl.Procs) == 3 && reflect.DeepEqual(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Where = %+v; want processes in %q", pl, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pl.PID != main || pl.Procs[0].PID != main {
		t.Errorf("main pid %d, first process %d; want %d", pl.PID, pl.Procs[0].PID, main)
	}
	if got := pl.Releases(); !reflect.DeepEqual(got, []string{"A", "B"}) {
		t.Errorf("Releases() = %q", got)
	}
	if got := pl.InOtherReleases("A"); len(got) != 1 || got[0].Release != "B" {
		t.Errorf("InOtherReleases(A) = %+v; want the process in B", got)
	}
	if got := pl.InOtherReleases("C"); len(got) != 2 {
		t.Errorf("InOtherReleases(C) = %+v; want the processes in A and B", got)
	}

	// Killed: the pidfile names a dead process.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if _, err := Where(context.Background(), &runner.Runner{}, svc, root, nil, releases); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Where after the kill: %v; want not running", err)
	}
}
