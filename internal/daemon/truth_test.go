package daemon

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/source"
)

// memSource is a desired state the test sets; it never triggers, so each
// run is one the test asked for.
type memSource struct {
	mu   sync.Mutex
	data string
	rev  int
}

func (m *memSource) set(data string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data, m.rev = data, m.rev+1
}

func (m *memSource) Load(context.Context) (*source.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &source.Snapshot{Data: []byte(m.data), Name: "mem.yaml", Rev: string(rune('a' + m.rev)), Dir: "/"}, nil
}

func (m *memSource) Watch(ctx context.Context, _ func(string)) error { <-ctx.Done(); return nil }

// waitRun waits until a run other than prev has finished and returns it.
// It waits on the event, however long the machine takes; the bound only
// turns a lost run into a failure instead of a hung test.
func waitRun(t *testing.T, d *Daemon, prev *Run) *Run {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if r := d.Last(); r != nil && (prev == nil || r.ID != prev.ID) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("no run finished after %+v", prev)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// metricLines returns the lines of /metrics that start with name.
func metricLines(t *testing.T, h http.Handler, name string) []string {
	t.Helper()
	_, body := get(t, h, "/metrics")
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			out = append(out, l)
		}
	}
	return out
}

// After a failed health check reverts the link, /metrics and /readyz say
// what is on the host: the old release is linked, the target is blocked,
// the host is not in sync, and the daemon is not ready until a fixed
// desired state deploys.
func TestMetricsAndReadinessTellTheTruthAfterARevert(t *testing.T) {
	e := newEnv(t)
	v3 := e.app.Commit("v3")
	src := &memSource{}
	src.set(e.yaml(e.v1, ""))
	ra := &realApply{}
	d := New(Options{Source: src, Apply: ra.fn(t), Log: zaptest.NewLogger(t)})
	h := (&Server{Daemon: d, Log: zaptest.NewLogger(t)}).Handler()
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || body != "no successful reconcile yet\n" {
		t.Errorf("/readyz before any run: %d %q", code, body)
	}
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before any run: %d; it is liveness", code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	run := waitRun(t, d, nil)
	if run.Result != "ok" {
		t.Fatalf("first run: %+v", run)
	}
	good := e.linked()
	if code, body := get(t, h, "/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz after a deploy: %d %q", code, body)
	}

	// v2 deploys, fails its health check, and the link returns to v1.
	src.set(e.yaml(e.v2, "health:\n  - {command: \"false\", timeout: 100ms, interval: 20ms}\n"))
	for i, want := range []string{"failed", "blocked again"} {
		d.Trigger("test")
		run = waitRun(t, d, run)
		if run.ErrorKind != KindTerminal || !strings.HasSuffix(run.Release, e.v2[:8]) || run.Linked != good {
			t.Fatalf("run %d (%s): %+v; want a terminal failure of v2 with %s linked", i, want, run, good)
		}
		for name, lines := range map[string][]string{
			`reconciler_release_info{commit="` + e.v1 + `",release="` + good + `"} 1`: metricLines(t, h, "reconciler_release_info"),
			"reconciler_target_blocked 1": metricLines(t, h, "reconciler_target_blocked"),
			"reconciler_in_sync 0":        metricLines(t, h, "reconciler_in_sync"),
		} {
			if len(lines) != 1 || lines[0] != name {
				t.Errorf("after the v2 run %d (%s): /metrics has %q, want %q", i, want, lines, name)
			}
		}
		code, body := get(t, h, "/readyz")
		t.Logf("/readyz: %d %s", code, body)
		wantBody := "target release " + run.Release + " failed at step "
		if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, wantBody) || !strings.HasSuffix(body, "; blocked\n") || strings.Count(body, "\n") != 1 {
			t.Errorf("/readyz after the v2 run %d (%s): %d %q; want 503 %q…; blocked", i, want, code, body, wantBody)
		}
		if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz while blocked: %d; it is liveness", code)
		}
	}

	// Fixed: a new commit deploys, and the daemon is ready again.
	src.set(e.yaml(v3, ""))
	d.Trigger("test")
	run = waitRun(t, d, run)
	if run.Result != "ok" || !strings.HasSuffix(e.linked(), v3[:8]) {
		t.Fatalf("the fixed desired state did not deploy: %+v, linked %s", run, e.linked())
	}
	for name, lines := range map[string][]string{
		`reconciler_release_info{commit="` + v3 + `",release="` + e.linked() + `"} 1`: metricLines(t, h, "reconciler_release_info"),
		"reconciler_target_blocked 0": metricLines(t, h, "reconciler_target_blocked"),
		"reconciler_in_sync 1":        metricLines(t, h, "reconciler_in_sync"),
	} {
		if len(lines) != 1 || lines[0] != name {
			t.Errorf("after the fix: /metrics has %q, want %q", lines, name)
		}
	}
	if code, body := get(t, h, "/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz after the fix: %d %q", code, body)
	}
}

// A panic in an apply fails that run as terminal and the daemon goes on:
// the next trigger runs again.
func TestPanicInApplyFailsTheRunOnly(t *testing.T) {
	var calls atomic.Int32
	fn := func(ctx context.Context, d *desired.State, s *source.Snapshot, trigger string, log *zap.Logger) (*apply.Result, error) {
		if n := calls.Add(1); n == 1 {
			_ = []string{}[n] // a real runtime panic: index out of range
		}
		return &apply.Result{Result: "no-changes"}, nil
	}
	d, stop := start(t, Options{Source: &fakeSource{fakeYAML}, Apply: fn})
	defer stop()
	run := waitRun(t, d, nil)
	if run.ErrorKind != KindTerminal || !strings.Contains(run.Error, "panic in apply") || !strings.Contains(run.Error, "index out of range") {
		t.Fatalf("the panicking run: %+v; want a terminal failure naming the panic", run)
	}
	d.Trigger("test")
	run = waitRun(t, d, run)
	if run.Result != "no-changes" || run.Error != "" || calls.Load() != 2 {
		t.Errorf("the run after the panic: %+v, %d calls", run, calls.Load())
	}
	if ok, why := d.Ready(); !ok {
		t.Errorf("not ready after a good run: %s", why)
	}
}

// A panic while parsing the desired state fails the run the same way.
func TestPanicInParseFailsTheRunOnly(t *testing.T) {
	// safely is what reconcile wraps the parser in; a parser that
	// panics can't be made from a YAML file, so the wrapper is tested.
	err := safely("parse x.yaml", func() error { panic("parser bug") })
	var pe *panicError
	if !errors.As(err, &pe) || err.Error() != "panic in parse x.yaml: parser bug" || len(pe.stack) == 0 {
		t.Errorf("safely: %v", err)
	}
}
