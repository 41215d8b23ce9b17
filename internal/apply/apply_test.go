package apply

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/lock"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// countingGit is the real cache, counting the calls that do work.
type countingGit struct {
	*gitcache.Cache
	fetches, exports, lsRemotes atomic.Int32
}

func (g *countingGit) Fetch(ctx context.Context) error {
	g.fetches.Add(1)
	return g.Cache.Fetch(ctx)
}

func (g *countingGit) Export(ctx context.Context, sha, sub, dest string) error {
	g.exports.Add(1)
	return g.Cache.Export(ctx, sha, sub, dest)
}

func (g *countingGit) LsRemote(ctx context.Context, b string) (string, error) {
	g.lsRemotes.Add(1)
	return g.Cache.LsRemote(ctx, b)
}

var _ Git = (*countingGit)(nil)

type host struct {
	t    *testing.T
	repo *testgit.Repo
	dir  string
	root string
	l    layout.Layout
	// build and migrate are the build steps' and migration's scripts.
	build, migrate string
	keep           int
}

// The default build: count builds, prove the step runs in the new release
// while the link still points at the old one, and fail on demand.
const defaultBuild = `  - name: count
    run: |
      echo "$RECONCILER_COMMIT $PWD $(readlink "$RECONCILER_ROOT/current")" >> "$RECONCILER_SHARED/builds"
      cat VERSION > built.txt
  - name: check
    run: |
      if [ -f FAIL ] && [ ! -f "$RECONCILER_SHARED/fixed" ]; then echo "boom: not fixed" >&2; exit 3; fi
      if [ -f SLOW ] && [ ! -f "$RECONCILER_SHARED/fast" ]; then touch "$RECONCILER_SHARED/slow-started"; sleep 30; fi
`

func newHost(t *testing.T) *host {
	dir := t.TempDir()
	h := &host{t: t, repo: testgit.New(t), dir: dir, root: filepath.Join(dir, "host"), keep: 5, build: defaultBuild,
		migrate: `test -f built.txt && echo "$RECONCILER_COMMIT $(readlink "$RECONCILER_ROOT/current")" >> "$RECONCILER_SHARED/migrations"`}
	h.l = layout.New(h.root, "current")
	if err := os.MkdirAll(filepath.Join(h.root, "shared"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.root, "shared", ".env"), []byte("SECRET=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *host) commit(version string, files ...string) string {
	h.repo.Write("VERSION", version+"\n")
	h.repo.Write("media/.gitkeep", "")
	for _, f := range files {
		h.repo.Write(f, "")
	}
	sha := h.repo.Commit(version)
	for _, f := range files {
		os.Remove(filepath.Join(h.repo.Dir, f))
	}
	return sha
}

func (h *host) desired(commit string) *desired.State {
	h.t.Helper()
	src := "app: shop\nroot: host\nkeep: " + itoa(h.keep) + "\n" +
		"source: {repo: " + h.repo.Dir + ", commit: \"" + commit + "\"}\n" +
		"shared: {dirs: [media], files: [.env]}\n" +
		"build:\n" + h.build +
		"migrate:\n  run: '" + h.migrate + "'\n" +
		"services:\n  - name: web\n    manager: command\n    restart: echo \"$RECONCILER_RELEASE\" >> \"$RECONCILER_SHARED/restarts\"\n"
	file := filepath.Join(h.dir, "desired.yaml")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		h.t.Fatal(err)
	}
	d, err := desired.Load(file)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func itoa(n int) string {
	s := ""
	for {
		s = string(rune('0'+n%10)) + s
		n /= 10
		if n == 0 {
			return s
		}
	}
}

func (h *host) git(d *desired.State) *countingGit {
	return &countingGit{Cache: &gitcache.Cache{Dir: h.l.RepoDir(), URL: d.Source.Repo, TmpDir: h.l.TmpDir()}}
}

func (h *host) apply(ctx context.Context, d *desired.State, mod ...func(*Options)) (*Result, *countingGit, error) {
	h.t.Helper()
	g := h.git(d)
	opts := Options{Desired: d, Git: g, Runner: &runner.Runner{Log: zaptest.NewLogger(h.t)}, Log: zaptest.NewLogger(h.t),
		Trigger: "test", Env: []string{"PATH=/usr/bin:/bin"}}
	for _, m := range mod {
		m(&opts)
	}
	res, err := Apply(ctx, opts)
	return res, g, err
}

// events is a view that keeps what the executor said, for tests.
type events struct {
	nopView
	notes []string
	plans []*plan.Plan
}

func (v *events) Note(_ plan.Step, msg string) { v.notes = append(v.notes, msg) }
func (v *events) Reverting(p *plan.Plan)       { v.plans = append(v.plans, p) }

func (h *host) mustApply(d *desired.State, mod ...func(*Options)) (*Result, *countingGit) {
	h.t.Helper()
	res, g, err := h.apply(context.Background(), d, mod...)
	if err != nil {
		h.t.Fatalf("apply: %v", err)
	}
	return res, g
}

func (h *host) linked() string {
	h.t.Helper()
	target, err := os.Readlink(h.l.LinkPath())
	if err != nil {
		h.t.Fatal(err)
	}
	return filepath.Base(target)
}

func (h *host) lines(name string) []string {
	b, err := os.ReadFile(filepath.Join(h.root, "shared", name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// releases lists the release directories, sorted.
func (h *host) releases() []string {
	entries, err := os.ReadDir(h.l.ReleasesDir())
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func sorted(s ...string) string {
	sort.Strings(s)
	return strings.Join(s, " ")
}

func (h *host) record(name string) *record.Release {
	h.t.Helper()
	r, err := record.ReadRelease(h.l.RecordFile(name))
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

func TestFirstDeployThenConverged(t *testing.T) {
	h := newHost(t)
	v1 := h.commit("v1")
	d := h.desired(v1[:8])
	res, g := h.mustApply(d)
	if g.fetches.Load() != 1 || g.exports.Load() != 1 {
		t.Errorf("first deploy: %d fetches, %d exports; want 1 and 1", g.fetches.Load(), g.exports.Load())
	}
	name := h.linked()
	if res.Release != name || !strings.HasSuffix(name, "-"+v1[:8]) {
		t.Errorf("linked %s, result release %s", name, res.Release)
	}
	rel := h.l.ReleaseDir(name)
	for path, want := range map[string]string{"VERSION": "v1\n", "built.txt": "v1\n", ".env": "SECRET=1\n"} {
		if b, err := os.ReadFile(filepath.Join(rel, path)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", path, b, err, want)
		}
	}
	if target, _ := os.Readlink(filepath.Join(rel, "media")); target != "../../shared/media" {
		t.Errorf("media links to %q", target)
	}
	if target, _ := os.Readlink(h.l.LinkPath()); target != "releases/"+name {
		t.Errorf("the link holds %q; want the relative releases/%s", target, name)
	}
	if r := h.record(name); r.State != record.Complete || r.Commit != v1 || len(r.Steps) != 5 {
		t.Errorf("record: %+v", r)
	}
	if b, err := os.ReadFile(h.l.StepLog(name, "count")); err != nil || len(b) != 0 {
		// count prints nothing; the log exists and is empty
		t.Errorf("step log: %q %v", b, err)
	}
	builds, restarts := len(h.lines("builds")), len(h.lines("restarts"))
	if builds != 1 || restarts != 1 || len(h.lines("migrations")) != 1 {
		t.Fatalf("builds %d, restarts %d, migrations %d", builds, restarts, len(h.lines("migrations")))
	}

	// Invariant 8: a converged host performs no step at all.
	res, g = h.mustApply(d)
	if res.Result != history.ResultNoop || len(res.Steps) != 0 || res.Plan.Changes() {
		t.Errorf("second apply: result %s, %d steps", res.Result, len(res.Steps))
	}
	if g.fetches.Load() != 0 || g.exports.Load() != 0 || g.lsRemotes.Load() != 0 {
		t.Errorf("second apply: %d fetches, %d exports, %d ls-remotes", g.fetches.Load(), g.exports.Load(), g.lsRemotes.Load())
	}
	if len(h.lines("builds")) != 1 || len(h.lines("restarts")) != 1 || len(h.lines("migrations")) != 1 {
		t.Errorf("second apply ran a build, a migration or a restart")
	}
	recs, _, _ := history.Read(h.l.HistoryFile())
	var applies []string
	for _, r := range recs {
		if r.Kind == history.KindApply {
			applies = append(applies, r.Result)
		}
	}
	if strings.Join(applies, ",") != "ok,no-changes" {
		t.Errorf("history applies: %v", applies)
	}
}

func TestBuildRunsInNewReleaseBeforeSwitch(t *testing.T) {
	h := newHost(t)
	h.mustApply(h.desired(h.commit("v1")))
	old := h.linked()
	h.mustApply(h.desired(h.commit("v2")))
	now := h.linked()
	// Invariant 3: the build ran in the new release while the link still
	// pointed at the old one, and so did the migration, after the build.
	b := strings.Fields(h.lines("builds")[1])
	if b[1] != h.l.ReleaseDir(now) || b[2] != "releases/"+old {
		t.Errorf("build ran in %s with the link at %s; want %s and releases/%s", b[1], b[2], h.l.ReleaseDir(now), old)
	}
	m := strings.Fields(h.lines("migrations")[1])
	if m[1] != "releases/"+old {
		t.Errorf("migration ran with the link at %s; want releases/%s", m[1], old)
	}
}

func TestUpgradeThenRollbackRunsNoBuild(t *testing.T) {
	h := newHost(t)
	v1 := h.commit("v1")
	h.mustApply(h.desired(v1))
	first := h.linked()
	v2 := h.commit("v2")
	h.mustApply(h.desired("main"))
	second := h.linked()
	if second == first || !strings.HasSuffix(second, v2[:8]) {
		t.Fatalf("upgrade linked %s", second)
	}
	builds := len(h.lines("builds"))

	start := time.Now()
	res, g := h.mustApply(h.desired(v1[:10]))
	elapsed := time.Since(start)
	if h.linked() != first {
		t.Errorf("rollback linked %s; want the first release %s again", h.linked(), first)
	}
	if len(h.lines("builds")) != builds || g.exports.Load() != 0 || g.fetches.Load() != 0 {
		t.Errorf("rollback ran a build (%d → %d builds, %d exports, %d fetches)", builds, len(h.lines("builds")), g.exports.Load(), g.fetches.Load())
	}
	var actions []string
	for _, s := range res.Steps {
		actions = append(actions, string(s.Action))
	}
	if strings.Join(actions, " ") != "switch service" {
		t.Errorf("rollback steps: %v", actions)
	}
	if r := h.lines("restarts"); r[len(r)-1] != h.l.ReleaseDir(first) {
		t.Errorf("last restart for %s", r[len(r)-1])
	}
	t.Logf("rollback took %s", elapsed)
}

func TestChangedBuildMakesNewRelease(t *testing.T) {
	h := newHost(t)
	v1 := h.commit("v1")
	h.mustApply(h.desired(v1))
	first := h.linked()
	h.build += "  - name: extra\n    run: touch extra\n"
	h.mustApply(h.desired(v1))
	second := h.linked()
	if second == first {
		t.Fatal("a changed build step rebuilt the linked release in place")
	}
	if _, err := os.Stat(filepath.Join(h.l.ReleaseDir(second), "extra")); err != nil {
		t.Error("the new build step did not run in the new release")
	}
	if _, err := os.Stat(filepath.Join(h.l.ReleaseDir(first), "extra")); err == nil {
		t.Error("the new build step ran in the old release")
	}
	if h.record(first).Fingerprint == h.record(second).Fingerprint {
		t.Error("same fingerprint for different builds")
	}
}

func TestFailedStepBlocksThenRetryResumes(t *testing.T) {
	h := newHost(t)
	h.mustApply(h.desired(h.commit("v1")))
	good := h.linked()
	bad := h.commit("v2", "FAIL")
	d := h.desired(bad)
	res, _, err := h.apply(context.Background(), d)
	var ae *Error
	if !errors.As(err, &ae) || ae.Kind != NeedsPerson || !strings.Contains(err.Error(), "exited with status 3") {
		t.Fatalf("failed build: %v", err)
	}
	// The output was shown live: the error says what happened, once, and
	// the record and the result keep the output's tail.
	if strings.Contains(err.Error(), "boom: not fixed") {
		t.Errorf("the error repeats the output: %v", err)
	}
	if last := res.Steps[len(res.Steps)-1]; last.Result != StepFailed || !strings.Contains(last.Output, "boom: not fixed") {
		t.Errorf("step result %+v lacks the output", last)
	}
	if h.linked() != good {
		t.Fatalf("the link moved to %s after a failed build", h.linked())
	}
	failed := res.Release
	r := h.record(failed)
	if r.State != record.Failed || r.Failure == nil || r.Failure.Step != "check" || !strings.Contains(r.Failure.Output, "boom: not fixed") || !r.Done("count", d.Build[0].Fingerprint()) {
		t.Fatalf("failed record: %+v", r)
	}
	builds := len(h.lines("builds"))

	// Invariant 10: not retried in a loop.
	_, _, err = h.apply(context.Background(), d)
	var be *BlockedError
	if !errors.As(err, &be) || be.Release != failed || be.Step != "check" {
		t.Fatalf("second apply of a failed target: %v", err)
	}
	if len(h.lines("builds")) != builds || h.linked() != good {
		t.Error("a blocked apply ran something")
	}

	// Fixed on the host, --retry resumes at the failed step.
	os.WriteFile(filepath.Join(h.root, "shared", "fixed"), nil, 0o644)
	res, _ = h.mustApply(d, func(o *Options) { o.Retry = true })
	if h.linked() != failed {
		t.Errorf("after retry linked %s; want the resumed release %s", h.linked(), failed)
	}
	if len(h.lines("builds")) != builds {
		t.Error("retry re-ran the step that had succeeded")
	}
	if res.Steps[0].Action != plan.Build || res.Steps[0].Name != "check" {
		t.Errorf("retry started at %s %s", res.Steps[0].Action, res.Steps[0].Name)
	}
	if r := h.record(failed); r.State != record.Complete || r.Failure != nil {
		t.Errorf("record after retry: %+v", r)
	}
}

func TestInterruptedBuildResumes(t *testing.T) {
	h := newHost(t)
	h.mustApply(h.desired(h.commit("v1")))
	good := h.linked()
	d := h.desired(h.commit("v2", "SLOW"))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if _, err := os.Stat(filepath.Join(h.root, "shared", "slow-started")); err == nil {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	res, _, err := h.apply(ctx, d, func(o *Options) { o.Runner.KillGrace = 100 * time.Millisecond })
	if err == nil {
		t.Fatal("cancelled apply succeeded")
	}
	if h.linked() != good {
		t.Fatal("link moved during an interrupted build")
	}
	unfinished := res.Release
	if r := h.record(unfinished); r.State != record.Building {
		t.Fatalf("an interrupted release is %s; want building (resumable)", r.State)
	}
	builds := len(h.lines("builds"))
	// The next apply resumes the same release at the interrupted step, and
	// does not run again the step that completed.
	os.WriteFile(filepath.Join(h.root, "shared", "fast"), nil, 0o644)
	res, _ = h.mustApply(d)
	if h.linked() != unfinished {
		t.Errorf("linked %s; want the resumed release %s", h.linked(), unfinished)
	}
	if res.Steps[0].Action != plan.Build || res.Steps[0].Name != "check" {
		t.Errorf("resumed at %s %s; want build check", res.Steps[0].Action, res.Steps[0].Name)
	}
	if len(h.lines("builds")) != builds {
		t.Error("the completed step ran again")
	}
}

func TestKeepPrunesOldFailedAndUnfinished(t *testing.T) {
	h := newHost(t)
	h.keep = 2
	var names []string
	for _, v := range []string{"v1", "v2", "v3"} {
		h.mustApply(h.desired(h.commit(v)))
		names = append(names, h.linked())
	}
	// keep 2: the linked and previous stay, v1 went.
	if got := h.releases(); strings.Join(got, " ") != sorted(names[1], names[2]) {
		t.Fatalf("after three deploys with keep 2: %v; want %v", got, names[1:])
	}
	// A failed and an unfinished release.
	_, _, err := h.apply(context.Background(), h.desired(h.commit("v4", "FAIL")))
	if err == nil {
		t.Fatal("FAIL build succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _, err = h.apply(ctx, h.desired(h.commit("v5", "SLOW")), func(o *Options) { o.Runner.KillGrace = 100 * time.Millisecond })
	if err == nil {
		t.Fatal("SLOW build finished within the deadline")
	}
	if n := len(h.releases()); n != 4 {
		t.Fatalf("want 4 releases (2 complete, 1 failed, 1 unfinished), have %d", n)
	}
	// Rolling back to the previous release switches; the failed and
	// unfinished ones go, and the old linked one stays as previous.
	h.mustApply(h.desired(h.record(names[1]).Commit))
	if got := h.releases(); strings.Join(got, " ") != sorted(names[1], names[2]) {
		t.Fatalf("after rollback: %v; want %v", got, names[1:])
	}
	// A release without a record is left alone, with a warning.
	stray := h.l.ReleaseDir("20260101T000000Z-00000000")
	os.MkdirAll(stray, 0o755)
	v6 := h.commit("v6")
	res, _ := h.mustApply(h.desired(v6))
	if _, err := os.Stat(stray); err != nil {
		t.Error("a release without a record was deleted")
	}
	if len(res.Plan.Warnings) == 0 || !strings.Contains(res.Plan.Warnings[0], "no record; left alone") {
		t.Errorf("warnings: %v", res.Plan.Warnings)
	}
}

func TestLockContention(t *testing.T) {
	h := newHost(t)
	d := h.desired(h.commit("v1"))
	os.MkdirAll(h.l.StateDir(), 0o755)
	held, err := lock.Acquire(context.Background(), h.l.LockFile(), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = h.apply(context.Background(), d)
	var he *lock.HeldError
	var ae *Error
	if !errors.As(err, &he) || he.PID != os.Getpid() || !errors.As(err, &ae) || ae.Kind != RetryLater {
		t.Fatalf("apply under a held lock: %v", err)
	}
	if !strings.Contains(err.Error(), "process "+itoa(os.Getpid())+" holds") {
		t.Errorf("message does not name the holder: %v", err)
	}
	if _, err := os.Lstat(h.l.LinkPath()); err == nil {
		t.Fatal("apply acted without the lock")
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		held.Release()
	}()
	h.mustApply(d, func(o *Options) { o.LockTimeout = 5 * time.Second })
	if h.linked() == "" {
		t.Fatal("no link after waiting for the lock")
	}
}

func TestSharedPathCannotEscapeThroughRepoSymlink(t *testing.T) {
	h := newHost(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "uploads"), []byte("precious"), 0o644)
	h.commit("v1")
	if err := os.Symlink(outside, filepath.Join(h.repo.Dir, "public")); err != nil {
		t.Fatal(err)
	}
	sha := h.repo.Commit("symlink")
	d := h.desired(sha)
	d.Shared.Dirs = []string{"public/uploads"}
	_, _, err := h.apply(context.Background(), d)
	if err == nil || !strings.Contains(err.Error(), "public -> "+outside+" points outside the release") {
		t.Fatalf("apply: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "uploads")); err != nil || string(b) != "precious" {
		t.Fatal("a file outside the root was touched")
	}
}
