// Package supervisortest runs a real supervisord for tests: its own config
// and unix socket in a temporary directory, no TCP port, stopped when the
// test ends.
package supervisortest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Supervisor is a running supervisord.
type Supervisor struct {
	Dir    string // its config, socket, logs and pidfile
	Config string // pass to supervisorctl -c
}

// Start starts supervisord with programs (ini sections, "[program:x]..."),
// and waits until supervisorctl reaches it. Without supervisord the test
// is skipped, unless CI=true: .ci/run installs it (Debian's supervisor
// package), so there its absence is a failure.
func Start(t testing.TB, programs string) *Supervisor {
	t.Helper()
	if _, err := exec.LookPath("supervisord"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("supervisord is not installed, and CI=true: .ci/run installs it (apt-get install supervisor)")
		}
		t.Skip("supervisord is not installed (apt-get install supervisor; .ci/run does)")
	}
	// A unix socket path has a limit of 108 bytes: t.TempDir() can be
	// longer, so the directory is a short one of our own.
	dir, err := os.MkdirTemp("", "sup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Supervisor{Dir: dir, Config: filepath.Join(dir, "supervisord.conf")}
	conf := fmt.Sprintf(`[unix_http_server]
file=%[1]s/s.sock
[supervisord]
nodaemon=true
%[2]s
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
childlogdir=%[1]s
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://%[1]s/s.sock
`, dir, rootUser()) + programs
	if err := os.WriteFile(s.Config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("supervisord", "-c", s.Config)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own group: the fallback kill reaches the programs too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGTERM: supervisord stops its programs, then exits.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	// Ready when supervisorctl gets an answer; the socket file appears a
	// moment before supervisord serves it.
	deadline := time.Now().Add(time.Minute)
	for {
		if exec.Command("supervisorctl", "-c", s.Config, "pid").Run() == nil {
			return s
		}
		select {
		case <-exited:
			t.Fatalf("supervisord exited:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("supervisord did not answer within a minute:\n%s", out.String())
		}
	}
}

// rootUser says user=root when the test runs as root: supervisord then
// runs as root without complaining about it in the test's output.
func rootUser() string {
	if os.Geteuid() == 0 {
		return "user=root"
	}
	return ""
}

// Ctl runs supervisorctl with args and returns what it printed; its exit
// status is ignored, as supervisorctl's varies across versions.
func (s *Supervisor) Ctl(t testing.TB, args ...string) string {
	t.Helper()
	out, _ := exec.Command("supervisorctl", append([]string{"-c", s.Config}, args...)...).CombinedOutput()
	return string(out)
}
