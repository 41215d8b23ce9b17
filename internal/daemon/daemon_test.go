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
	"github.com/reconciler-dev/reconciler/internal/layout"
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

func (e *env) waitLinked(suffix string, within time.Duration) time.Duration {
	e.t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if strings.HasSuffix(e.linked(), suffix) {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("not linked to a release of %s within %s (linked: %q)", suffix, within, e.linked())
	return 0
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
	_, stop := start(t, Options{Source: &source.Repo{URL: cfg.Dir, Path: "hosts/web1.yaml", Branch: "main", Log: zaptest.NewLogger(t)}, Apply: ra.fn(t)})
	defer stop()
	e.waitLinked(e.v1[:8], 10*time.Second)

	cfg.Write("hosts/web1.yaml", e.yaml(e.v2, "")) // saved, not committed
	time.Sleep(700 * time.Millisecond)
	if !strings.HasSuffix(e.linked(), e.v1[:8]) || ra.runs.Load() != 1 {
		t.Fatalf("an uncommitted edit deployed (linked %s, %d runs)", e.linked(), ra.runs.Load())
	}
	c2 := cfg.Commit("c2")
	took := e.waitLinked(e.v2[:8], 5*time.Second)
	t.Logf("commit to link: %s", took)
	// The < 1s target is measured by `go run ./bench -only daemon`; here the
	// bound only proves the ref watch fired rather than some slower fallback,
	// with room for a loaded CI machine.
	if took > 5*time.Second {
		t.Errorf("a commit took %s to deploy; the ref watch did not fire", took)
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
	e.waitLinked(e.v1[:8], 10*time.Second)

	// A touch: same content, new mtime.
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
	e.waitLinked(e.v2[:8], 5*time.Second)
	// The watch survived the rename: a second save is seen too.
	os.WriteFile(tmp, []byte(e.yaml(e.v1, "")), 0o644)
	os.Rename(tmp, e.file)
	e.waitLinked(e.v1[:8], 5*time.Second)
}

func TestBurstOfCommitsCoalesces(t *testing.T) {
	e := newEnv(t)
	cfg := testgit.New(t)
	cfg.Write("d.yaml", e.yaml(e.v1, ""))
	cfg.Commit("c0")
	ra := &realApply{}
	_, stop := start(t, Options{Source: &source.Repo{URL: cfg.Dir, Path: "d.yaml", Branch: "main", Log: zaptest.NewLogger(t)}, Apply: ra.fn(t)})
	defer stop()
	e.waitLinked(e.v1[:8], 10*time.Second)
	var last string
	for i := 1; i <= 50; i++ {
		c := e.v1
		if i%2 == 1 {
			c = e.v2
		}
		cfg.Write("d.yaml", e.yaml(c, fmt.Sprintf("# burst %d\n", i)))
		last = cfg.Commit(fmt.Sprintf("c%d", i))
	}
	deadline := time.Now().Add(15 * time.Second)
	for ra.lastRev() != last || ra.running.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the last commit was not applied: last applied %s, want %s", ra.lastRev(), last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.HasSuffix(e.linked(), e.v1[:8]) == false {
		t.Errorf("linked %s; the last commit asks for v1", e.linked())
	}
	if ra.maxRunning.Load() != 1 {
		t.Errorf("%d applies ran at once", ra.maxRunning.Load())
	}
	t.Logf("50 commits: %d runs", ra.runs.Load())
	if ra.runs.Load() > 40 {
		t.Errorf("%d runs for a burst of 50 commits: triggers did not coalesce", ra.runs.Load())
	}
}

func TestScheduleRepairsDrift(t *testing.T) {
	e := newEnv(t)
	// Deploy v2 then v1, so two releases are on disk.
	os.WriteFile(e.file, []byte(e.yaml(e.v2, "")), 0o644)
	ra := &realApply{}
	d, stop := start(t, Options{Source: &source.File{Path: e.file, Log: zaptest.NewLogger(t)}, Apply: ra.fn(t), Schedule: "@every 1s"})
	defer stop()
	e.waitLinked(e.v2[:8], 10*time.Second)
	os.WriteFile(e.file, []byte(e.yaml(e.v1, "")), 0o644)
	good := filepath.Join("releases", func() string { e.waitLinked(e.v1[:8], 5*time.Second); return e.linked() }())
	// Let the runs the file change caused finish.
	time.Sleep(300 * time.Millisecond)
	for ra.running.Load() != 0 {
		time.Sleep(10 * time.Millisecond)
	}
	runs := ra.runs.Load()
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
	if strings.HasSuffix(e.linked(), e.v1[:8]) {
		t.Fatal("the hand edit did not take")
	}
	e.waitLinked(e.v1[:8], 4*time.Second)
	if target, _ := os.Readlink(filepath.Join(e.root, "current")); target != good {
		t.Errorf("repaired to %s, want %s", target, good)
	}
	for ra.running.Load() != 0 || ra.runs.Load() == runs {
		time.Sleep(10 * time.Millisecond)
	}
	if last := d.Last(); last == nil || !strings.Contains(last.Trigger, "schedule") {
		t.Errorf("the repair was not a scheduled run: %+v", last)
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
	e.waitLinked(e.v1[:8], 10*time.Second)
	for d.Last() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	before := treeDigest(t, e.root)
	os.WriteFile(e.file, []byte("app: site\nroot: [oops\n"), 0o644)
	deadline := time.Now().Add(5 * time.Second)
	for d.Last().ErrorKind != KindBadDesired {
		if time.Now().After(deadline) {
			t.Fatalf("no bad-desired run: %+v", d.Last())
		}
		time.Sleep(10 * time.Millisecond)
	}
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
	e.waitLinked(e.v2[:8], 5*time.Second)
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
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() < 4 || d.Last() == nil || d.Last().Result != "ok" {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls, last %+v", calls.Load(), d.Last())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	gaps := []time.Duration{times[1].Sub(times[0]), times[2].Sub(times[1]), times[3].Sub(times[2])}
	if gaps[0] < 40*time.Millisecond || gaps[1] < 90*time.Millisecond || gaps[2] < 140*time.Millisecond || gaps[2] > time.Second {
		t.Errorf("retry gaps %v; want about 50ms, 100ms, 150ms (capped)", gaps)
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
	time.Sleep(300 * time.Millisecond)
	if calls.Load() != 1 || d.Last().ErrorKind != KindTerminal {
		t.Errorf("%d calls, last %+v", calls.Load(), d.Last())
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
	if !sawCancel.Load() || took < 180*time.Millisecond || took > 2*time.Second {
		t.Errorf("stopped after %s, apply cancelled: %v; want the 200ms grace then a cancel", took, sawCancel.Load())
	}
}

func TestWebhookSignature(t *testing.T) {
	var calls atomic.Int32
	fn := func(ctx context.Context, d *desired.State, s *source.Snapshot, trigger string, log *zap.Logger) (*apply.Result, error) {
		calls.Add(1)
		return &apply.Result{Result: "no-changes"}, nil
	}
	d, stop := start(t, Options{Source: &fakeSource{fakeYAML}, Apply: fn})
	defer stop()
	for d.Last() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	secret := []byte("0123456789abcdef-secret")
	srv := httptest.NewServer((&Server{Daemon: d, Secret: secret, Log: zaptest.NewLogger(t)}).Handler())
	defer srv.Close()
	body := []byte(`{"ref":"refs/heads/main"}`)
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	good := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	post := func(sig string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hooks/reconcile", bytes.NewReader(body))
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
	for _, sig := range []string{"", "sha256=00", "sha1=" + good[7:], good[:len(good)-2] + "00"} {
		if code := post(sig); code != http.StatusUnauthorized {
			t.Errorf("signature %q: %d, want 401", sig, code)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if calls.Load() != 1 {
		t.Fatalf("a rejected webhook triggered a run (%d runs)", calls.Load())
	}
	if code := post(good); code != http.StatusAccepted {
		t.Fatalf("good signature: %d", code)
	}
	deadline := time.Now().Add(2 * time.Second)
	for calls.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("a signed webhook did not trigger a run")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for d.Last().Trigger != "webhook" {
		time.Sleep(5 * time.Millisecond)
	}
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
	_, stop := start(t, Options{Source: src, Apply: ra.fn(t)})
	defer stop()
	e.waitLinked(e.v1[:8], 10*time.Second)
	cfg.Write("d.yaml", e.yaml(e.v2, ""))
	time.Sleep(400 * time.Millisecond)
	if !strings.HasSuffix(e.linked(), e.v1[:8]) {
		t.Fatal("an uncommitted edit deployed from a remote")
	}
	c2 := cfg.Commit("c2")
	e.waitLinked(e.v2[:8], 5*time.Second)
	if ra.lastRev() != c2 {
		t.Errorf("deployed config %s, want %s", ra.lastRev(), c2)
	}
}
