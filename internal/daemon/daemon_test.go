package daemon

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/source"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// realApply is the apply the CLI wires in, counting runs and noting the
// largest number running at once.
type realApply struct {
	runs, running, maxRunning atomic.Int32
	mu                        sync.Mutex
	revs                      []string
}

func (r *realApply) fn(t *testing.T) ApplyFunc {
	return func(ctx context.Context, d *desired.State, snap *source.Snapshot, trigger string, log *zap.Logger) (*apply.Result, error) {
		n := r.running.Add(1)
		defer r.running.Add(-1)
		for {
			m := r.maxRunning.Load()
			if n <= m || r.maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		r.runs.Add(1)
		r.mu.Lock()
		r.revs = append(r.revs, snap.Rev)
		r.mu.Unlock()
		l := layout.New(d.Root, d.Link)
		return apply.Apply(ctx, apply.Options{Desired: d, Runner: &runner.Runner{Log: log}, Log: log, Trigger: trigger, ConfigCommit: snap.Commit,
			Env: []string{"PATH=/usr/bin:/bin"},
			Git: &gitcache.Cache{Dir: l.RepoDir(), URL: d.Source.Repo, TmpDir: l.TmpDir()}})
	}
}

func (r *realApply) lastRev() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.revs) == 0 {
		return ""
	}
	return r.revs[len(r.revs)-1]
}

type env struct {
	t          *testing.T
	app        *testgit.Repo
	v1, v2     string
	root, file string
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, app: testgit.New(t)}
	e.v1 = e.app.Commit("v1")
	e.v2 = e.app.Commit("v2")
	dir := t.TempDir()
	e.root = filepath.Join(dir, "host")
	e.file = filepath.Join(dir, "desired.yaml")
	return e
}

func (e *env) yaml(commit, extra string) string {
	return fmt.Sprintf("app: site\nroot: %s\nsource: {repo: %s, commit: %s}\nbuild:\n  - {name: b, run: \"echo built\"}\n%s", e.root, e.app.Dir, commit, extra)
}

func (e *env) linked() string {
	target, _ := os.Readlink(filepath.Join(e.root, "current"))
	return filepath.Base(target)
}

// eventually polls ok until it holds. The tests wait for events, however
// long a loaded machine takes; the bound only turns an event that never
// comes into a failure instead of a hung test.
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) waitLinked(suffix string) {
	e.t.Helper()
	eventually(e.t, "linked to a release of "+suffix, func() bool { return strings.HasSuffix(e.linked(), suffix) })
}

// waitRunWhere waits until the last finished run satisfies ok.
func waitRunWhere(t *testing.T, d *Daemon, what string, ok func(*Run) bool) *Run {
	t.Helper()
	var r *Run
	eventually(t, what, func() bool { r = d.Last(); return r != nil && ok(r) })
	return r
}

func start(t *testing.T, opts Options) (*Daemon, func()) {
	if opts.Log == nil {
		opts.Log = zaptest.NewLogger(t)
	}
	d := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	return d, func() { cancel(); <-done }
}

func TestCommittedDesiredDeploysUncommittedDoesNot(t *testing.T) {
	e := newEnv(t)
	cfg := testgit.New(t)
	cfg.Write("hosts/web1.yaml", e.yaml(e.v1, ""))
	cfg.Commit("c1")
	ra := &realApply{}
	d, stop := start(t, Options{Source: &source.Repo{URL: cfg.Dir, Path: "hosts/web1.yaml", Branch: "main", Log: zaptest.NewLogger(t)}, Apply: ra.fn(t)})
	defer stop()
	run := waitRun(t, d, nil)
	e.waitLinked(e.v1[:8])

	// Saved, not committed: even a run (SIGHUP's) deploys the commit.
	cfg.Write("hosts/web1.yaml", e.yaml(e.v2, ""))
	d.Trigger("signal")
	run = waitRunWhere(t, d, "the run SIGHUP asked for", func(r *Run) bool { return r.ID != run.ID && strings.Contains(r.Trigger, "signal") })
	if !strings.HasSuffix(e.linked(), e.v1[:8]) || run.Result != "no-changes" {
		t.Fatalf("an uncommitted edit deployed (linked %s, run %+v)", e.linked(), run)
	}
	// Committed: the ref watch triggers the run. How fast is measured by
	// `go run ./bench -only daemon`; here the trigger proves the watch fired.
	c2 := cfg.Commit("c2")
	run = waitRunWhere(t, d, "the run of c2", func(r *Run) bool { return r.ConfigCommit == c2 })
	e.waitLinked(e.v2[:8])
	if run.Trigger != "commit" {
		t.Errorf("c2 deployed by a run triggered by %q; the ref watch did not fire", run.Trigger)
	}
	if ra.lastRev() != c2 {
		t.Errorf("deployed config %s; want %s", ra.lastRev(), c2)
	}
}

func TestFileRenameReplaceIsSeenAndTouchIsNot(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(e.file, []byte(e.yaml(e.v1, "")), 0o644)
	ra := &realApply{}
	_, stop := start(t, Options{Source: &source.File{Path: e.file, Log: zaptest.NewLogger(t)}, Apply: ra.fn(t)})
	defer stop()
	e.waitLinked(e.v1[:8])

	// A touch: same content, new mtime. That nothing happens can't be
	// waited for; the pause gives a wrong trigger time to show. On a slow
	// machine it can only let a bug pass, never fail a correct daemon.
	// (internal/source's tests hold the watcher's own contract.)
	now := time.Now().Add(time.Second)
	os.Chtimes(e.file, now, now)
	time.Sleep(500 * time.Millisecond)
	if ra.runs.Load() != 1 {
		t.Fatalf("a touch triggered a run (%d runs)", ra.runs.Load())
	}
	// An editor's save: write a new file, rename it over the old one.
	tmp := e.file + ".swp"
	os.WriteFile(tmp, []byte(e.yaml(e.v2, "")), 0o644)
	if err := os.Rename(tmp, e.file); err != nil {
		t.Fatal(err)
	}
	e.waitLinked(e.v2[:8])
	// The watch survived the rename: a second save is seen too.
	os.WriteFile(tmp, []byte(e.yaml(e.v1, "")), 0o644)
	os.Rename(tmp, e.file)
	e.waitLinked(e.v1[:8])
}

// gatedWatch passes on the triggers of a source's watcher and notes, for
// each, the commit the source holds when it is delivered. Once closed it
// passes on nothing more, so a test can know every trigger a run will see.
type gatedWatch struct {
	source.Source
	mu      sync.Mutex
	closed  bool
	seen    []string      // the tip when each trigger was delivered
	changed chan struct{} // capacity 1: seen grew
}

func (g *gatedWatch) Watch(ctx context.Context, changed func(string)) error {
	return g.Source.Watch(ctx, func(why string) {
		snap, err := g.Source.Load(ctx)
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.closed || err != nil {
			return
		}
		g.seen = append(g.seen, snap.Rev)
		changed(why) // the trigger is set after the tip was read
		select {
		case g.changed <- struct{}{}:
		default:
		}
	})
}

// waitFor waits until a trigger was delivered when the tip was rev.
func (g *gatedWatch) waitFor(rev string) {
	for range g.changed {
		g.mu.Lock()
		ok := slices.Contains(g.seen, rev)
		g.mu.Unlock()
		if ok {
			return
		}
	}
}

func (g *gatedWatch) close() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	return g.seen
}

// Commits made while a run is in progress coalesce into one follow-up run
// of the last. The first run is held until the watcher has delivered a
// trigger made after the last commit; then the watch is closed, so the
// count of runs depends on the daemon only, never on the machine's speed.
func TestBurstOfCommitsCoalesces(t *testing.T) {
	e := newEnv(t)
	cfg := testgit.New(t)
	cfg.Write("d.yaml", e.yaml(e.v2, ""))
	c0 := cfg.Commit("c0")
	ra := &realApply{}
	started, release := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	inner := ra.fn(t)
	fn := func(ctx context.Context, d *desired.State, snap *source.Snapshot, trigger string, log *zap.Logger) (*apply.Result, error) {
		if held.CompareAndSwap(false, true) {
			close(started)
			<-release
		}
		return inner(ctx, d, snap, trigger, log)
	}
	src := &gatedWatch{Source: &source.Repo{URL: cfg.Dir, Path: "d.yaml", Branch: "main", Log: zaptest.NewLogger(t)}, changed: make(chan struct{}, 1)}
	d, stop := start(t, Options{Source: src, Apply: fn})
	defer stop()
	<-started
	var last string
	for i := 1; i <= 50; i++ {
		c := e.v1
		if i%2 == 1 {
			c = e.v2
		}
		cfg.Write("d.yaml", e.yaml(c, fmt.Sprintf("# burst %d\n", i)))
		last = cfg.Commit(fmt.Sprintf("c%d", i))
	}
	src.waitFor(last)
	seen := src.close()
	t.Logf("50 commits: %d triggers delivered while the first run was held", len(seen))
	close(release)

	// The first run, then exactly one more, of the last commit.
	run := waitRun(t, d, nil)
	for run.Trigger == "startup" {
		run = waitRun(t, d, run)
	}
	stop()
	if run.Trigger != "commit" || run.ConfigCommit != last || run.Result != "ok" {
		t.Errorf("the follow-up run: %+v; want the last commit %s deployed", run, last)
	}
	if got := d.Last(); got.ID != run.ID {
		t.Errorf("a run after the follow-up: %+v", got)
	}
	ra.mu.Lock()
	revs := ra.revs
	ra.mu.Unlock()
	if len(revs) != 2 || revs[0] != c0 || revs[1] != last {
		t.Errorf("applied %d configs %v; want 2: %s then %s", len(revs), revs, c0[:8], last[:8])
	}
	if !strings.HasSuffix(e.linked(), e.v1[:8]) {
		t.Errorf("linked %s; the last commit asks for v1", e.linked())
	}
	if ra.maxRunning.Load() != 1 {
		t.Errorf("%d applies ran at once", ra.maxRunning.Load())
	}
}

func TestScheduleRepairsDrift(t *testing.T) {
	e := newEnv(t)
	// Deploy v2 then v1, so two releases are on disk.
	os.WriteFile(e.file, []byte(e.yaml(e.v2, "")), 0o644)
	ra := &realApply{}
	d, stop := start(t, Options{Source: &source.File{Path: e.file, Log: zaptest.NewLogger(t)}, Apply: ra.fn(t), Schedule: "@every 1s"})
	defer stop()
	e.waitLinked(e.v2[:8])
	os.WriteFile(e.file, []byte(e.yaml(e.v1, "")), 0o644)
	// The host, not the last run: with a schedule of 1s, a run that found
	// nothing to do may already have followed the one that deployed v1.
	e.waitLinked(e.v1[:8])
	good := filepath.Join("releases", e.linked())
	entries, _ := os.ReadDir(filepath.Join(e.root, "releases"))
	var other string
	for _, en := range entries {
		if !strings.HasSuffix(en.Name(), e.v1[:8]) {
			other = en.Name()
		}
	}
	// A person moves the link by hand.
	os.Remove(filepath.Join(e.root, "current"))
	os.Symlink(filepath.Join("releases", other), filepath.Join(e.root, "current"))
	edited := time.Now()
	if strings.HasSuffix(e.linked(), e.v1[:8]) {
		t.Fatal("the hand edit did not take")
	}
	// When the first scheduled run that started after the edit is done,
	// the link is repaired — by it, or by one that started a moment
	// before and looked at the host after the edit. Nothing but the
	// schedule triggers runs now: the desired file is not touched.
	run := waitRunWhere(t, d, "a scheduled run after the hand edit", func(r *Run) bool {
		return r.Trigger == "schedule" && r.Started.After(edited)
	})
	if target, _ := os.Readlink(filepath.Join(e.root, "current")); target != good || run.Linked != e.linked() {
		t.Errorf("after %+v the link is %s, want %s", run, target, good)
	}
}

func treeDigest(t *testing.T, root string) string {
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "%s %v %d %d\n", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		}
		return nil
	})
	return b.String()
}

func TestBadDesiredKeepsDaemonUpAndHostUnchanged(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(e.file, []byte(e.yaml(e.v1, "")), 0o644)
	ra := &realApply{}
	d, stop := start(t, Options{Source: &source.File{Path: e.file, Log: zaptest.NewLogger(t)}, Apply: ra.fn(t)})
	defer stop()
	waitRun(t, d, nil)
	e.waitLinked(e.v1[:8])
	before := treeDigest(t, e.root)
	os.WriteFile(e.file, []byte("app: site\nroot: [oops\n"), 0o644)
	waitRunWhere(t, d, "a bad-desired run", func(r *Run) bool { return r.ErrorKind == KindBadDesired })
	if !strings.Contains(d.Last().Error, "invalid YAML") || ra.runs.Load() != 1 {
		t.Errorf("last run %+v, %d applies", d.Last(), ra.runs.Load())
	}
	if treeDigest(t, e.root) != before {
		t.Error("a bad desired file changed the host")
	}
	if d.Desired() == nil || d.Desired().Source.Commit != e.v1 {
		t.Error("the last good desired state was dropped")
	}
	// Fixed: deploys.
	os.WriteFile(e.file, []byte(e.yaml(e.v2, "")), 0o644)
	e.waitLinked(e.v2[:8])
}

// fakeSource is a file-less source for the tests of the daemon's loop.
type fakeSource struct{ data string }

func (f *fakeSource) Load(context.Context) (*source.Snapshot, error) {
	return &source.Snapshot{Data: []byte(f.data), Name: "fake.yaml", Rev: "r", Dir: "/"}, nil
}
func (f *fakeSource) Watch(ctx context.Context, _ func(string)) error { <-ctx.Done(); return nil }

const fakeYAML = "app: a\nroot: /nonexistent/root\nsource: {repo: /nonexistent/repo, commit: main}\n"

func TestTransientFailuresRetryWithBackoff(t *testing.T) {
	var calls atomic.Int32
	var times []time.Time
	var mu sync.Mutex
	fn := func(ctx context.Context, d *desired.State, s *source.Snapshot, trigger string, log *zap.Logger) (*apply.Result, error) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if calls.Add(1) <= 3 {
			return nil, &apply.Error{Kind: apply.RetryLater, Err: errors.New("remote did not answer")}
		}
		return &apply.Result{Result: "ok"}, nil
	}
	d, stop := start(t, Options{Source: &fakeSource{fakeYAML}, Apply: fn, BackoffMin: 50 * time.Millisecond, BackoffMax: 150 * time.Millisecond})
	defer stop()
	waitRunWhere(t, d, "a run after three retries", func(r *Run) bool { return r.Result == "ok" })
	mu.Lock()
	defer mu.Unlock()
	// A retry timer never fires early, so the gaps are at least the
	// backoff however loaded the machine is; how much later is its load.
	gaps := []time.Duration{times[1].Sub(times[0]), times[2].Sub(times[1]), times[3].Sub(times[2])}
	if len(times) != 4 || gaps[0] < 50*time.Millisecond || gaps[1] < 100*time.Millisecond || gaps[2] < 150*time.Millisecond {
		t.Errorf("%d calls, retry gaps %v; want at least 50ms, 100ms, 150ms (capped)", len(times), gaps)
	}
	d.mu.Lock()
	backoff := d.backoff
	d.mu.Unlock()
	if backoff != 0 {
		t.Errorf("backoff %s after a success; want it reset", backoff)
	}
	if d.Last().Trigger != "retry" {
		t.Errorf("last trigger %q", d.Last().Trigger)
	}
}

func TestTerminalFailureIsNotRetried(t *testing.T) {
	var calls atomic.Int32
	fn := func(ctx context.Context, d *desired.State, s *source.Snapshot, trigger string, log *zap.Logger) (*apply.Result, error) {
		calls.Add(1)
		return nil, &apply.BlockedError{Release: "r", Step: "health"}
	}
	d, stop := start(t, Options{Source: &fakeSource{fakeYAML}, Apply: fn, BackoffMin: 10 * time.Millisecond})
	defer stop()
	run := waitRun(t, d, nil)
	// Not retried: no retry is armed when the run is done.
	d.mu.Lock()
	armed := d.retry != nil
	d.mu.Unlock()
	if armed || calls.Load() != 1 || run.ErrorKind != KindTerminal {
		t.Errorf("%d calls, retry armed %v, last %+v", calls.Load(), armed, run)
	}
}

func TestShutdownGivesGraceThenCancels(t *testing.T) {
	started := make(chan struct{})
	var sawCancel atomic.Bool
	fn := func(ctx context.Context, d *desired.State, s *source.Snapshot, trigger string, log *zap.Logger) (*apply.Result, error) {
		close(started)
		<-ctx.Done()
		sawCancel.Store(true)
		return nil, ctx.Err()
	}
	d := New(Options{Source: &fakeSource{fakeYAML}, Apply: fn, Grace: 200 * time.Millisecond, Log: zaptest.NewLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	<-started
	t0 := time.Now()
	cancel()
	<-done
	took := time.Since(t0)
	// The grace is a timer, so it is never cut short; how long after it
	// the apply returns is the machine's load, not asserted.
	if !sawCancel.Load() || took < 200*time.Millisecond {
		t.Errorf("stopped after %s, apply cancelled: %v; want the 200ms grace then a cancel", took, sawCancel.Load())
	}
}

// pending returns the triggers a run has not taken yet.
func (d *Daemon) pending() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var rs []string
	for r := range d.reasons {
		rs = append(rs, r)
	}
	return rs
}

func TestWebhookSignature(t *testing.T) {
	var calls atomic.Int32
	fn := func(ctx context.Context, d *desired.State, s *source.Snapshot, trigger string, log *zap.Logger) (*apply.Result, error) {
		calls.Add(1)
		return &apply.Result{Result: "no-changes"}, nil
	}
	secret := []byte("0123456789abcdef-secret")
	body := []byte(`{"ref":"refs/heads/main"}`)
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	good := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	post := func(url, sig string) int {
		req, _ := http.NewRequest(http.MethodPost, url+"/hooks/reconcile", bytes.NewReader(body))
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	// The handler decides before it answers; a daemon not yet running
	// keeps what it was asked, so nothing has to be waited for.
	idle := New(Options{Source: &fakeSource{fakeYAML}, Apply: fn, Log: zaptest.NewLogger(t)})
	isrv := httptest.NewServer((&Server{Daemon: idle, Secret: secret, Log: zaptest.NewLogger(t)}).Handler())
	defer isrv.Close()
	for _, sig := range []string{"", "sha256=00", "sha1=" + good[7:], good[:len(good)-2] + "00"} {
		if code := post(isrv.URL, sig); code != http.StatusUnauthorized {
			t.Errorf("signature %q: %d, want 401", sig, code)
		}
	}
	if p := idle.pending(); len(p) != 0 {
		t.Fatalf("a rejected webhook asked for a run: %v", p)
	}
	if code := post(isrv.URL, good); code != http.StatusAccepted {
		t.Fatalf("good signature: %d", code)
	}
	if p := idle.pending(); len(p) != 1 || p[0] != "webhook" {
		t.Fatalf("a signed webhook asked for %v; want a webhook run", p)
	}

	// Running: the signed webhook's run is counted in /metrics.
	d, stop := start(t, Options{Source: &fakeSource{fakeYAML}, Apply: fn})
	defer stop()
	run := waitRun(t, d, nil)
	srv := httptest.NewServer((&Server{Daemon: d, Secret: secret, Log: zaptest.NewLogger(t)}).Handler())
	defer srv.Close()
	if code := post(srv.URL, good); code != http.StatusAccepted {
		t.Fatalf("good signature: %d", code)
	}
	waitRunWhere(t, d, "the webhook's run", func(r *Run) bool { return r.ID != run.ID && r.Trigger == "webhook" })
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/status": 200} {
		resp, err := http.Get(srv.URL + path)
		if err != nil || resp.StatusCode != want {
			t.Errorf("GET %s: %v %v", path, resp.StatusCode, err)
		}
		if path == "/metrics" {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			for _, m := range []string{`reconciler_runs_total{result="no-changes",trigger="webhook"} 1`, "reconciler_run_duration_seconds_count 2", "reconciler_last_success_timestamp_seconds"} {
				if !strings.Contains(b.String(), m) {
					t.Errorf("metrics lack %s", m)
				}
			}
		}
		resp.Body.Close()
	}
	if calls.Load() != 2 {
		t.Errorf("%d applies; want the startup run and the webhook's", calls.Load())
	}
}

func TestPolledRemoteRepo(t *testing.T) {
	e := newEnv(t)
	cfg := testgit.New(t)
	cfg.Write("d.yaml", e.yaml(e.v1, ""))
	cfg.Commit("c1")
	ra := &realApply{}
	src := &source.Repo{URL: "file://" + cfg.Dir, Path: "d.yaml", Branch: "main", CacheDir: filepath.Join(t.TempDir(), "cache"),
		Poll: 100 * time.Millisecond, Log: zaptest.NewLogger(t)}
	if src.Local() {
		t.Fatal("a file:// URL should be cloned and polled")
	}
	d, stop := start(t, Options{Source: src, Apply: ra.fn(t)})
	defer stop()
	run := waitRun(t, d, nil)
	e.waitLinked(e.v1[:8])
	cfg.Write("d.yaml", e.yaml(e.v2, ""))
	d.Trigger("signal")
	run = waitRunWhere(t, d, "the run SIGHUP asked for", func(r *Run) bool { return r.ID != run.ID && strings.Contains(r.Trigger, "signal") })
	if !strings.HasSuffix(e.linked(), e.v1[:8]) || run.Result != "no-changes" {
		t.Fatalf("an uncommitted edit deployed from a remote (linked %s, run %+v)", e.linked(), run)
	}
	c2 := cfg.Commit("c2")
	run = waitRunWhere(t, d, "the run of c2", func(r *Run) bool { return r.ConfigCommit == c2 })
	e.waitLinked(e.v2[:8])
	if run.Trigger != "commit" {
		t.Errorf("c2 deployed by a run triggered by %q; the poll did not see it", run.Trigger)
	}
	if ra.lastRev() != c2 {
		t.Errorf("deployed config %s, want %s", ra.lastRev(), c2)
	}
}

// While deploys are suspended, the daemon's schedule and triggers only
// report: a hand fix stays, a new desired commit is not deployed. After
// resume, the next run deploys.
func TestSuspendedDaemonOnlyReports(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(e.file, []byte(e.yaml(e.v1, "")), 0o644)
	ra := &realApply{}
	d, stop := start(t, Options{Source: &source.File{Path: e.file, Log: zaptest.NewLogger(t)}, Apply: ra.fn(t), Schedule: "@every 1s"})
	defer stop()
	e.waitLinked(e.v1[:8])
	l := layout.New(e.root, "current")
	if err := record.WriteSuspension(l.SuspendFile(), &record.Suspension{By: "alice", At: time.Now(), Reason: "incident"}); err != nil {
		t.Fatal(err)
	}
	runs := ra.runs.Load()
	suspendedAt := time.Now()
	os.WriteFile(e.file, []byte(e.yaml(e.v2, "")), 0o644)
	d.Trigger("signal")
	run := waitRunWhere(t, d, "a scheduled run while suspended", func(r *Run) bool {
		return r.Trigger == "schedule" && r.Started.After(suspendedAt)
	})
	if run.Result != history.ResultSuspended || !strings.Contains(run.Error, "suspended by alice") {
		t.Errorf("run while suspended: %+v", run)
	}
	if got := ra.runs.Load(); got != runs {
		t.Errorf("%d applies ran while suspended", got-runs)
	}
	var m strings.Builder
	d.opts.Metrics.WriteTo(&m)
	if !strings.Contains(m.String(), "\nreconciler_suspended 1\n") {
		t.Errorf("/metrics while suspended:\n%s", m.String())
	}
	if !strings.HasSuffix(e.linked(), e.v1[:8]) {
		t.Errorf("the host moved while suspended: %s", e.linked())
	}
	record.RemoveSuspension(l.SuspendFile())
	e.waitLinked(e.v2[:8])
}
