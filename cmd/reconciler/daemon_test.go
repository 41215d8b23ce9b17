package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startDaemon(t *testing.T, bin, dir string, args ...string) (*exec.Cmd, *syncBuf) {
	cmd := exec.Command(bin, append([]string{"run", "--listen", ""}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(testgit.Env(t.TempDir()), "PATH=/usr/bin:/bin")
	logs := &syncBuf{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, logs
}

// waitUntil polls ok until it holds. It waits for an event however long a
// loaded machine takes; the bound only turns an event that never comes into
// a failure instead of a hung test.
func waitUntil(t *testing.T, what string, ok func() bool, logs *syncBuf) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened\nlogs:\n%s", what, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runsDone counts the runs the daemon logged as done with this trigger.
func runsDone(logs *syncBuf, trigger string) int {
	n := 0
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"run done"`) && strings.Contains(l, `"trigger":"`+trigger+`"`) {
			n++
		}
	}
	return n
}

func linkedTo(root string) string {
	target, _ := os.Readlink(filepath.Join(root, "current"))
	return filepath.Base(target)
}

func TestDaemonDeploysCommits(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	app := testgit.New(t)
	v1, v2 := app.Commit("v1"), app.Commit("v2")
	dir := t.TempDir()
	root := filepath.Join(dir, "host")
	cfg := testgit.New(t)
	y := func(c string) string {
		return fmt.Sprintf("app: site\nroot: %s\nsource: {repo: %s, commit: %s}\nbuild:\n  - {name: b, run: \"echo built\"}\n", root, app.Dir, c)
	}
	cfg.Write("hosts/web1.yaml", y(v1))
	cfg.Commit("c1")
	cmd, logs := startDaemon(t, bin, dir, "--config-repo", cfg.Dir, "--config-path", "hosts/web1.yaml")
	waitUntil(t, "v1 deployed", func() bool { return strings.HasSuffix(linkedTo(root), v1[:8]) && runsDone(logs, "startup") == 1 }, logs)

	// Saved, not committed: even a run deploys only the commit. SIGHUP
	// re-reads the desired state: a run with trigger "signal".
	cfg.Write("hosts/web1.yaml", y(v2))
	cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "a run after SIGHUP", func() bool { return runsDone(logs, "signal") == 1 }, logs)
	if !strings.HasSuffix(linkedTo(root), v1[:8]) {
		t.Fatal("an uncommitted edit deployed")
	}
	c2 := cfg.Commit("c2")
	waitUntil(t, "v2 deployed after the commit", func() bool { return strings.HasSuffix(linkedTo(root), v2[:8]) && runsDone(logs, "commit") == 1 }, logs)

	// The config commit is in the history, and each log line of a run
	// carries the run id, trigger and commits.
	hist := exec.Command(bin, "history", "--json", "-f", filepath.Join(cfg.Dir, "hosts/web1.yaml"))
	out, err := hist.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"config_commit": "`+c2+`"`) {
		t.Errorf("history lacks the config commit %s: %v\n%s", c2, err, out)
	}
	if !strings.Contains(logs.String(), `"trigger":"commit"`) || !strings.Contains(logs.String(), `"config_commit":"`+c2+`"`) || !strings.Contains(logs.String(), `"run_id":"`) {
		t.Errorf("logs lack run_id, trigger or config_commit:\n%s", logs)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("daemon exit on SIGTERM: %v\n%s", err, logs)
	}
}

// SIGTERM during a build step: the step is cancelled after --grace, the
// link stays where it was, and a restarted daemon resumes the release.
func TestDaemonSIGTERMDuringBuildThenRestartConverges(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	app := testgit.New(t)
	v1 := app.Commit("v1")
	dir := t.TempDir()
	root := filepath.Join(dir, "host")
	marker := filepath.Join(dir, "slow-started")
	file := filepath.Join(dir, "desired.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf(`app: site
root: host
source: {repo: %s, commit: %s}
build:
  - {name: fast, run: "echo fast >> %[3]s.fast"}
  - {name: slow, run: "if [ ! -f %[3]s.done ]; then touch %[3]s; sleep 30; fi"}
`, app.Dir, v1, marker)), 0o644)
	cmd, logs := startDaemon(t, bin, dir, "-f", file, "--grace", "300ms")
	waitUntil(t, "the slow step started", func() bool { _, err := os.Stat(marker); return err == nil }, logs)
	t0 := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	// The slow step sleeps 30s: stopping sooner proves it was cancelled
	// after the grace, with room for a loaded machine.
	if took := time.Since(t0); took > 25*time.Second {
		t.Errorf("stopping took %s with --grace 300ms; the step was not cancelled", took)
	}
	if _, err := os.Lstat(filepath.Join(root, "current")); err == nil {
		t.Fatal("the link exists after a build that never finished")
	}
	// Restarted (the slow step is quick now): it resumes the release.
	os.WriteFile(marker+".done", nil, 0o644)
	cmd, logs = startDaemon(t, bin, dir, "-f", file)
	waitUntil(t, "converged after restart", func() bool { return strings.HasSuffix(linkedTo(root), v1[:8]) }, logs)
	if b, _ := os.ReadFile(marker + ".fast"); strings.Count(string(b), "fast") != 1 {
		t.Errorf("the completed step ran again after the restart: %q", b)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "releases"))
	if len(entries) != 1 {
		t.Errorf("%d releases; the restart should resume the one it had", len(entries))
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}
