package procs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/services/supervisortest"
)

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.Pid()
}

// TestMainPIDFromPIDFile reads pidfiles, including hostile ones: a
// pidfile is written by the service and is not trusted. None may hang,
// read more than a pid's worth, or show its content in the error.
func TestMainPIDFromPIDFile(t *testing.T) {
	const secret = "root:$y$j9T$secret-hash:19000:0:99999:7:::"
	root := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("self.pid", "  "+itoa(os.Getpid())+"\n")
	write("dead.pid", itoa(deadPID(t))+"\n")
	write("shadow", secret+"\n")
	write("garbage.pid", secret[:30])
	write("empty.pid", "")
	if err := os.Symlink(filepath.Join(root, "shadow"), filepath.Join(root, "link.pid")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(root, "zero.pid")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo.pid"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A sparse gigabyte that starts with a pid: only its size is read.
	f, err := os.Create(filepath.Join(root, "huge.pid"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(itoa(os.Getpid()) + "\n")
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()

	tests := []struct {
		pidfile    string
		pid        int
		notRunning bool   // a *NotRunningError
		err        string // in the error's message
	}{
		{"self.pid", os.Getpid(), false, ""},
		{filepath.Join(root, "self.pid"), os.Getpid(), false, ""}, // absolute
		{"dead.pid", 0, true, "from dead.pid is gone"},
		{"missing.pid", 0, true, "no pidfile missing.pid"},
		{"empty.pid", 0, true, "empty"},
		{"garbage.pid", 0, false, "pidfile garbage.pid does not hold a pid"},
		{"link.pid", 0, false, "pidfile link.pid is a symbolic link"},
		{"zero.pid", 0, false, "pidfile zero.pid is a symbolic link"},
		{"/dev/zero", 0, false, "pidfile /dev/zero is not a regular file"},
		{"fifo.pid", 0, false, "pidfile fifo.pid is not a regular file"},
		{"huge.pid", 0, false, "pidfile huge.pid holds 1073741824 bytes, more than a pid"},
		{".", 0, false, "pidfile . is not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.pidfile, func(t *testing.T) {
			type result struct {
				pid int
				err error
			}
			done := make(chan result, 1)
			go func() {
				pid, err := MainPID(context.Background(), &runner.Runner{}, desired.Service{Name: "web", Manager: "command", PIDFile: tt.pidfile}, root, nil)
				done <- result{pid, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(time.Minute):
				t.Fatal("MainPID blocks")
			}
			if r.pid != tt.pid {
				t.Errorf("pid %d; want %d", r.pid, tt.pid)
			}
			if got := errors.Is(r.err, ErrNotRunning); got != tt.notRunning {
				t.Errorf("errors.Is(%v, ErrNotRunning) = %v", r.err, got)
			}
			if (r.err == nil) != (tt.err == "") || r.err != nil && !strings.Contains(r.err.Error(), tt.err) {
				t.Errorf("error %v; want one saying %q", r.err, tt.err)
			}
			if r.err != nil && (strings.Contains(r.err.Error(), "secret") || strings.Contains(r.err.Error(), "root:")) {
				t.Errorf("the error shows the file's content: %v", r.err)
			}
		})
	}
}

// TestMainPIDFromSupervisor asks a real supervisord: a program never
// started reports pid 0 (and, on some versions, a non-zero exit status).
func TestMainPIDFromSupervisor(t *testing.T) {
	sup := supervisortest.Start(t, `[program:idle]
command=/bin/sleep 1000
autostart=false
[program:busy]
command=/bin/sleep 1000
autostart=true
startsecs=0
`)
	// Started by supervisord itself: wait until it says so.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(sup.Ctl(t, "status", "busy"), "RUNNING") {
		if time.Now().After(deadline) {
			t.Fatalf("busy did not start: %s", sup.Ctl(t, "status"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	svc := func(program string) desired.Service {
		return desired.Service{Name: "web", Manager: "supervisor", Program: program, Supervisor: desired.SupervisorConn{Config: sup.Config}}
	}
	env := os.Environ()
	tests := []struct {
		program    string
		running    bool
		notRunning bool
		err        string
	}{
		{"busy", true, false, ""},
		{"idle", false, true, "not running (supervisor: STOPPED)"},
		{"nosuch", false, false, "ask supervisor for the pid of web: no pid in its answer: No such process nosuch"},
	}
	for _, tt := range tests {
		pid, err := MainPID(context.Background(), &runner.Runner{}, svc(tt.program), t.TempDir(), env)
		if (pid > 0) != tt.running || errors.Is(err, ErrNotRunning) != tt.notRunning || (err == nil) != (tt.err == "") ||
			err != nil && err.Error() != tt.err {
			t.Errorf("%s: pid %d, error %v; want running %v, error %q", tt.program, pid, err, tt.running, tt.err)
		}
	}
	// supervisord unreachable: a sentence saying so, not "not running".
	bad := svc("busy")
	bad.Supervisor = desired.SupervisorConn{ServerURL: "unix://" + filepath.Join(t.TempDir(), "none.sock")}
	if _, err := MainPID(context.Background(), &runner.Runner{}, bad, t.TempDir(), env); err == nil || errors.Is(err, ErrNotRunning) ||
		!strings.HasPrefix(err.Error(), "ask supervisor for the pid of web: no pid in its answer: ") {
		t.Errorf("unreachable supervisord: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
