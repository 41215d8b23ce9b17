package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func TestRun(t *testing.T) {
	env := []string{"PATH=/usr/bin:/bin"}
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		check   func(t *testing.T, e *Error)
	}{
		{"ok", "echo hi", 0, func(t *testing.T, e *Error) {
			if e != nil {
				t.Fatal(e)
			}
		}},
		{"exit status and tail", "for i in $(seq 1 30); do echo line$i; done; echo bad >&2; exit 4", 0, func(t *testing.T, e *Error) {
			if e == nil || e.ExitCode != 4 || !strings.HasPrefix(e.Error(), "exited with status 4; last output:\n") {
				t.Fatalf("got %v", e)
			}
			lines := strings.Split(e.Tail, "\n")
			if len(lines) != tailLines || lines[len(lines)-1] != "bad" || lines[0] != "line12" {
				t.Errorf("tail %q", lines)
			}
		}},
		{"timeout", "sleep 20", 200 * time.Millisecond, func(t *testing.T, e *Error) {
			if e == nil || !e.TimedOut || e.Error() != "timed out" {
				t.Fatalf("got %v", e)
			}
		}},
		{"signal", "kill -KILL $$", 0, func(t *testing.T, e *Error) {
			if e == nil || e.Signal != "killed" {
				t.Fatalf("got %#v", e)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Runner{Log: zaptest.NewLogger(t), KillGrace: 100 * time.Millisecond}
			start := time.Now()
			err := r.Run(context.Background(), Command{Name: tt.name, Script: tt.script, Dir: t.TempDir(), Env: env, Timeout: tt.timeout})
			var e *Error
			if err != nil && !errors.As(err, &e) {
				t.Fatalf("not a *Error: %v", err)
			}
			tt.check(t, e)
			if time.Since(start) > 5*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
		})
	}
}

// A timed-out step takes its children with it, and a contained step leaves
// nothing running; an uncontained one (a service starting a server) may.
func TestProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "pid")
	r := &Runner{Log: zaptest.NewLogger(t), KillGrace: 100 * time.Millisecond}
	env := []string{"PATH=/usr/bin:/bin"}
	alive := func() bool {
		b, err := os.ReadFile(pidfile)
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		for _, c := range strings.TrimSpace(string(b)) {
			pid = pid*10 + int(c-'0')
		}
		// Reaped or zombie both count as gone.
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat")
		if err != nil {
			return false
		}
		return !strings.Contains(string(stat), ") Z ") && syscall.Kill(pid, 0) == nil
	}
	bg := "sleep 30 >/dev/null 2>&1 & echo $! > " + pidfile

	err := r.Run(context.Background(), Command{Name: "timeout", Script: bg + "; sleep 30", Dir: dir, Env: env, Timeout: 200 * time.Millisecond})
	if err == nil {
		t.Fatal("no timeout")
	}
	time.Sleep(50 * time.Millisecond)
	if alive() {
		t.Error("a timed-out command's child survived")
	}

	if err := r.Run(context.Background(), Command{Name: "contained", Script: bg, Dir: dir, Env: env, Contain: true}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if alive() {
		t.Error("a contained command left a process running")
	}

	if err := r.Run(context.Background(), Command{Name: "service", Script: bg, Dir: dir, Env: env}); err != nil {
		t.Fatal(err)
	}
	if !alive() {
		t.Error("an uncontained command's background process was killed")
	}
	b, _ := os.ReadFile(pidfile)
	var pid int
	for _, c := range strings.TrimSpace(string(b)) {
		pid = pid*10 + int(c-'0')
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

func TestPrefixWriter(t *testing.T) {
	var b bytes.Buffer
	p := &PrefixWriter{W: &b, Prefix: "x | "}
	p.Write([]byte("one\ntw"))
	p.Write([]byte("o\nthree"))
	p.Flush()
	if got := b.String(); got != "x | one\nx | two\nx | three\n" {
		t.Errorf("got %q", got)
	}
}

// A contained command dies with a reconciler killed by SIGKILL, which
// cannot stop it itself: the test binary runs the command as a child
// process ("parent"), which is then killed.
func TestContainedCommandDiesWithKilledParent(t *testing.T) {
	if os.Getenv("RUNNER_TEST_PARENT") != "" {
		(&Runner{}).Run(context.Background(), Command{Name: "server", Script: "echo $$ > " + os.Getenv("RUNNER_TEST_PARENT") + "; exec sleep 60", Contain: true})
		os.Exit(0)
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	parent := exec.Command(os.Args[0], "-test.run=^TestContainedCommandDiesWithKilledParent$")
	parent.Env = append(os.Environ(), "RUNNER_TEST_PARENT="+pidFile)
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	start := time.Now()
	for pid == 0 {
		b, _ := os.ReadFile(pidFile)
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			pid = n
		} else if time.Since(start) > time.Minute {
			parent.Process.Kill()
			t.Fatal("the parent never started the command")
		} else {
			time.Sleep(5 * time.Millisecond)
		}
	}
	parent.Process.Kill()
	parent.Wait()
	// The kernel sends SIGKILL as the parent dies; only reaping may lag.
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("pid %d outlived its killed parent: %s", pid, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
