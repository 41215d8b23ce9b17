package view

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// stage is a host and a repository whose applies are rendered with
// OperationHuman on a clock that ticks one second a reading, so the
// output — release names, durations — is the same on every run.
type stage struct {
	t     *testing.T
	repo  *testgit.Repo
	dir   string
	clock time.Time
}

func newStage(t *testing.T) *stage {
	return &stage{t: t, repo: testgit.New(t), dir: t.TempDir(), clock: time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)}
}

func (s *stage) desired(extra string) *desired.State {
	s.t.Helper()
	src := "app: site\nroot: host\nsource: {repo: " + s.repo.Dir + ", commit: main}\n" + extra
	file := filepath.Join(s.dir, "desired.yaml")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		s.t.Fatal(err)
	}
	d, err := desired.Load(file)
	if err != nil {
		s.t.Fatal(err)
	}
	return d
}

// apply runs a real apply and returns what the human view showed, with
// the temporary paths replaced by stable names.
func (s *stage) apply(d *desired.State, retry bool) (string, error) {
	s.t.Helper()
	l := layout.New(d.Root, d.Link)
	var out bytes.Buffer
	_, err := apply.Apply(context.Background(), apply.Options{
		Desired: d, Retry: retry, Trigger: "test", User: "alice", Host: "web1",
		Git:    &gitcache.Cache{Dir: l.RepoDir(), URL: d.Source.Repo, TmpDir: l.TmpDir()},
		Runner: &runner.Runner{},
		View:   &OperationHuman{W: &out, Cmd: "reconciler"},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Now: func() time.Time {
			s.clock = s.clock.Add(time.Second)
			return s.clock
		},
	})
	// A plan with build steps warns when run as root: the output is the
	// same whoever runs the tests.
	text := rootWarning.ReplaceAllString(out.String(), "")
	text = strings.ReplaceAll(text, s.dir, "$DIR")
	return strings.ReplaceAll(text, s.repo.Dir, "$REPO"), err
}

var rootWarning = regexp.MustCompile(`(?m)^warning: running as root with no run_as: .*\n`)

const healthCheck = "health:\n  - {command: 'test ! -f BROKEN || { cat BROKEN >&2; exit 1; }', timeout: 1s, interval: 1s}\n"

// One attempt only (the interval is the whole timeout), so the golden
// file does not depend on how many attempts the machine's speed allows.

// The human view of an apply whose health check fails: the failure once,
// then the revert as a plan, then its steps.
func TestApplyRevertGolden(t *testing.T) {
	s := newStage(t)
	s.repo.Commit("v1")
	d := s.desired(healthCheck)
	if _, err := s.apply(d, false); err != nil {
		t.Fatal(err)
	}
	s.repo.Write("BROKEN", "status 500 from /health\n")
	s.repo.Commit("v2")
	out, err := s.apply(d, false)
	if err == nil {
		t.Fatal("the broken release was accepted")
	}
	golden(t, "apply_revert.txt", []byte(out))
	if n := strings.Count(out, "status 500 from /health"); n != 1 {
		t.Errorf("the check's output is shown %d times, want once", n)
	}

	out, err = s.apply(d, false)
	if err == nil {
		t.Fatal("a blocked target was applied")
	}
	golden(t, "apply_blocked.txt", []byte(out))
}

// The human view of `apply --retry` after a first deploy whose service
// failed: the services act again, the release is verified and complete.
func TestApplyRetryFirstDeployGolden(t *testing.T) {
	s := newStage(t)
	s.repo.Commit("v1")
	d := s.desired("services:\n  - {name: web, manager: command, restart: 'test -f \"$RECONCILER_SHARED/ok\" && echo started || { echo cannot bind; exit 1; }'}\n")
	if _, err := s.apply(d, false); err == nil {
		t.Fatal("the failing service was accepted")
	}
	os.MkdirAll(filepath.Join(d.Root, "shared"), 0o755)
	os.WriteFile(filepath.Join(d.Root, "shared", "ok"), nil, 0o644)
	out, err := s.apply(d, true)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "apply_retry_first_deploy.txt", []byte(out))
}

// The human view of a build step that fails: its output live, the
// failure, then where its full log is and the command that shows it.
func TestApplyBuildFailsGolden(t *testing.T) {
	s := newStage(t)
	s.repo.Commit("v1")
	d := s.desired("build:\n  - {name: deps, run: 'echo installing; echo \"error: no such package\" >&2; exit 7'}\n")
	out, err := s.apply(d, false)
	if err == nil {
		t.Fatal("the failing build was accepted")
	}
	golden(t, "apply_build_fails.txt", []byte(out))
	rel := regexp.MustCompile(`create release (\S+)`).FindStringSubmatch(out)
	if rel == nil {
		t.Fatalf("no release created in:\n%s", out)
	}
	log := layout.New(d.Root, d.Link).StepLog(rel[1], "deps")
	if !strings.Contains(out, "  full log: "+strings.ReplaceAll(log, s.dir, "$DIR")+"\n") {
		t.Errorf("the output does not name %s", log)
	}
	if b, err := os.ReadFile(log); err != nil || !strings.Contains(string(b), "error: no such package") {
		t.Errorf("the named log holds %q, %v", b, err)
	}
}
