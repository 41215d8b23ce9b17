package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

func TestChecks(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		switch r.URL.Path {
		case "/health":
			w.Write([]byte("ok abc123"))
		case "/slow-start": // fails twice, then passes: a server still starting
			if n%3 != 0 {
				http.Error(w, "starting", http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("up"))
		case "/broken":
			http.Error(w, "Internal Server Error: boom", http.StatusInternalServerError)
		case "/created":
			w.WriteHeader(http.StatusCreated)
		}
	}))
	defer srv.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Dir: t.TempDir(), Env: []string{"PATH=/usr/bin:/bin", "RECONCILER_COMMIT=abc123"}}
	c := func(kind, target string) desired.Check {
		// Generous: a check that passes or is answered wrongly ends long
		// before it, so a busy machine does not fail it.
		return desired.Check{Kind: kind, Target: target, Timeout: time.Minute, Interval: 20 * time.Millisecond, Failures: desired.DefaultCheckFailures}
	}
	// A check against what is not up runs until its timeout.
	short := func(c desired.Check) desired.Check { c.Timeout = 500 * time.Millisecond; return c }
	tests := []struct {
		name  string
		check desired.Check
		want  string // "" passes; else a substring of the error
		// wrong: the app answered wrongly, so the check fails after
		// exactly Failures attempts; otherwise it retries until timeout.
		wrong bool
	}{
		{"http 2xx", c("http", srv.URL+"/health"), "", false},
		{"http body expands", func() desired.Check { x := c("http", srv.URL+"/health"); x.Body = "${RECONCILER_COMMIT}"; return x }(), "", false},
		{"http body missing", func() desired.Check { x := c("http", srv.URL+"/health"); x.Body = "v2"; return x }(), `the body does not contain "v2": ok abc123`, true},
		{"http retried until up", c("http", srv.URL+"/slow-start"), "", false},
		{"http 500", c("http", srv.URL+"/broken"), "status 500: Internal Server Error: boom", true},
		{"http expect", func() desired.Check { x := c("http", srv.URL+"/created"); x.Expect = 201; return x }(), "", false},
		{"http expect mismatch", func() desired.Check { x := c("http", srv.URL+"/health"); x.Expect = 201; return x }(), "status 200", true},
		{"http refused", short(c("http", "http://"+closed+"/")), "connection refused", false},
		{"tcp open", c("tcp", strings.TrimPrefix(srv.URL, "http://")), "", false},
		{"tcp refused", short(c("tcp", closed)), "connection refused", false},
		{"command ok", c("command", "test -n \"$RECONCILER_COMMIT\""), "", false},
		{"command fails", c("command", "echo not ready >&2; exit 2"), "exited with status 2", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			err := k.Run(context.Background(), tt.check)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var he *Error
			if !errors.As(err, &he) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want %q", err, tt.want)
			}
			if tt.check.Kind == "command" && he.Output != "not ready" {
				t.Errorf("the command's output is %q; want it kept apart from the message", he.Output)
			}
			if tt.wrong {
				if he.Attempts != desired.DefaultCheckFailures {
					t.Errorf("gave up after %d attempts; want %d wrong answers in a row", he.Attempts, desired.DefaultCheckFailures)
				}
				return
			}
			if he.Attempts < 2 {
				t.Errorf("gave up after %d attempt", he.Attempts)
			}
			// It retried until its timeout. (How long past it a loaded
			// machine takes to give up is the benchmark's business.)
			if d := time.Since(start); d < 400*time.Millisecond {
				t.Errorf("failed after %s; the timeout is 500ms", d)
			}
		})
	}
}

// The last attempt is often cut short by the check's own timeout; the error
// must still say what the attempts before it saw, not "deadline exceeded".
func TestCutShortAttemptKeepsCause(t *testing.T) {
	var hits atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.Write([]byte("v1"))
			return
		}
		select { // hang until the checker gives up
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Dir: t.TempDir()}
	err := k.Run(context.Background(), desired.Check{Kind: "http", Target: srv.URL, Body: "v2", Timeout: 300 * time.Millisecond, Interval: 10 * time.Millisecond})
	var he *Error
	if !errors.As(err, &he) || !strings.Contains(he.Last, `the body does not contain "v2": v1`) {
		t.Fatalf("got %v; want the body mismatch of the first attempt", err)
	}
	if he.Attempts != 2 {
		t.Errorf("attempts = %d, want 2", he.Attempts)
	}
}

func TestBackoff(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		n        int
		interval time.Duration
		want     time.Duration
	}{
		{1, time.Second, 0}, // the first attempt at once
		{2, time.Second, 50 * ms},
		{3, time.Second, 100 * ms},
		{4, time.Second, 200 * ms},
		{5, time.Second, 400 * ms},
		{6, time.Second, 800 * ms},
		{7, time.Second, time.Second}, // capped at the interval
		{50, time.Second, time.Second},
		{2, 20 * ms, 20 * ms}, // an interval shorter than the first step
		{3, 150 * ms, 100 * ms},
		{4, 150 * ms, 150 * ms},
	}
	for _, tt := range tests {
		if got := Backoff(tt.n, tt.interval); got != tt.want {
			t.Errorf("Backoff(%d, %s) = %s, want %s", tt.n, tt.interval, got, tt.want)
		}
	}
}

// check is a check that would wait long if it waited for its timeout:
// a test that passes only when the check decides early cannot pass by
// being slow.
func check(kind, target string, failures int) desired.Check {
	return desired.Check{Kind: kind, Target: target, Timeout: time.Minute, Interval: 20 * time.Millisecond, Failures: failures}
}

// A deterministic 500 is refused after exactly `failures` attempts, not
// retried until the timeout.
func TestWrongAnswerFailsEarly(t *testing.T) {
	for _, failures := range []int{1, 2, 3, 5} {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			http.Error(w, "Internal Server Error: boom", http.StatusInternalServerError)
		}))
		k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Dir: t.TempDir()}
		err := k.Run(context.Background(), check("http", srv.URL+"/health", failures))
		srv.Close()
		var he *Error
		if !errors.As(err, &he) || he.Attempts != failures || int(hits.Load()) != failures {
			t.Fatalf("failures %d: got %v after %d requests; want a failure after exactly %d", failures, err, hits.Load(), failures)
		}
		if !strings.Contains(err.Error(), "status 500: Internal Server Error: boom") {
			t.Errorf("error %q does not say what the app answered", err)
		}
	}
}

// While the app is settling (old processes of a graceful reload still
// stopping), a wrong answer may be an old process's: it is retried, not
// counted; once settled, wrong answers count again.
func TestWrongAnswerWhileSettlingIsRetried(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := hits.Add(1); {
		case n <= 5: // the old release answers
			w.Write([]byte("old"))
		default:
			w.Write([]byte("new"))
		}
	}))
	defer srv.Close()
	c := check("http", srv.URL+"/health", 2)
	c.Body, c.Interval = "new", time.Second
	k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Dir: t.TempDir(), Settling: func() bool { return hits.Load() < 5 }}
	var waits []time.Duration
	k.after = func(d time.Duration) <-chan time.Time {
		waits = append(waits, d)
		return time.After(time.Millisecond)
	}
	if err := k.Run(context.Background(), c); err != nil || hits.Load() != 6 {
		t.Fatalf("got %v after %d requests; want a pass on the 6th", err, hits.Load())
	}
	// Old answers are checked again at the first step's pace, not doubling.
	for i, w := range waits[:4] {
		if w != firstBackoff {
			t.Errorf("wait %d after an old answer: %s, want %s (all: %v)", i+1, w, firstBackoff, waits)
		}
	}
	// Settled at once: the same wrong answers fail after 2.
	hits.Store(0)
	k.Settling = func() bool { return false }
	var he *Error
	if err := k.Run(context.Background(), c); !errors.As(err, &he) || he.Attempts != 2 {
		t.Fatalf("settled: got %v; want a failure after 2 attempts", err)
	}
}

// A command check that exits non-zero answered wrongly too.
func TestCommandExitFailsEarly(t *testing.T) {
	dir := t.TempDir()
	k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}}
	err := k.Run(context.Background(), check("command", "echo x >> attempts; echo broken; exit 1", 2))
	var he *Error
	if !errors.As(err, &he) || he.Attempts != 2 || he.Output != "broken" {
		t.Fatalf("got %v (%+v); want a failure after 2 attempts with its output", err, he)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "attempts"))
	if n := strings.Count(string(b), "x"); n != 2 {
		t.Errorf("the command ran %d times, want 2", n)
	}
}

// 502, 503 and 504 are a proxy saying the app is not up yet: retried past
// `failures`, and the check passes once the app answers.
func TestNotUpYetIsRetried(t *testing.T) {
	for _, status := range []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout} {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hits.Add(1) <= 6 {
				http.Error(w, "starting", status)
				return
			}
			w.Write([]byte("ok"))
		}))
		k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Dir: t.TempDir()}
		err := k.Run(context.Background(), check("http", srv.URL+"/health", 2))
		srv.Close()
		if err != nil || hits.Load() != 7 {
			t.Errorf("status %d: got %v after %d requests; want a pass on the 7th", status, err, hits.Load())
		}
	}
}

// A refused connection is "not up yet": the check passes once the server
// listens. The server starts only after the checker saw a refusal.
func TestRefusedThenUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	refused := make(chan struct{})
	var once sync.Once
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, a)
			if err != nil {
				once.Do(func() { close(refused) })
			}
			return c, err
		}}}
	k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Dir: t.TempDir(), Client: client}
	done := make(chan error, 1)
	go func() { done <- k.Run(context.Background(), check("http", "http://"+addr+"/health", 1)) }()
	<-refused
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })}
	go srv.Serve(ln)
	defer srv.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A server that accepts and never answers fails the check at its timeout:
// the one attempt ends with the check, and the error says why.
func TestNoAnswerFailsAtTimeout(t *testing.T) {
	var hits atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Dir: t.TempDir()}
	c := check("http", srv.URL+"/health", 3)
	c.Timeout = 300 * time.Millisecond
	err := k.Run(context.Background(), c)
	var he *Error
	if !errors.As(err, &he) || he.Attempts != 1 || hits.Load() != 1 {
		t.Fatalf("got %v after %d requests; want one attempt", err, hits.Load())
	}
	if want := "failed after 1 attempt: no answer within the check's timeout (300ms)"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q; want %q", err, want)
	}
}

// A command check that ignores SIGTERM is killed within the check's
// timeout: the check does not wait for the runner's usual grace.
func TestCommandEndsWithinTimeout(t *testing.T) {
	dir := t.TempDir()
	k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t), KillGrace: time.Hour}, Dir: dir, Env: []string{"PATH=/usr/bin:/bin"}}
	c := check("command", "trap '' TERM; while :; do sleep 0.05; done", 3)
	c.Timeout = 500 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- k.Run(context.Background(), c) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute): // far beyond any slow machine
		t.Fatal("the check outlived its timeout by far: it waited for the runner's grace")
	}
	var he *Error
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("got %v; want the check timed out", err)
	}
}

// A wrong answer after a long wait for the app to come up is confirmed at
// 50 ms doubling again, not at the pace the wait had reached (the check's
// interval: a second by default, so a refused release took 3 s more).
func TestBackoffRestartsWhenTheAppAnswers(t *testing.T) {
	for _, tt := range []struct {
		name     string
		statuses []int           // answers in order; the last one repeats
		want     []time.Duration // in ms
	}{
		{"not up yet, then 500", []int{502, 502, 502, 502, 502, 502, 500},
			[]time.Duration{50, 100, 200, 400, 800, 1000, 50, 100}},
		{"500 from the start", []int{500},
			[]time.Duration{50, 100}},
		{"500, not up yet, 500", []int{500, 502, 502, 502, 500},
			[]time.Duration{50, 50, 100, 200, 50, 100}},
	} {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := min(int(hits.Add(1)), len(tt.statuses))
			http.Error(w, "no", tt.statuses[n-1])
		}))
		var waits []time.Duration // in ms
		now := make(chan time.Time, 1)
		k := &Checker{Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Dir: t.TempDir(),
			after: func(d time.Duration) <-chan time.Time {
				waits = append(waits, d/time.Millisecond)
				now <- time.Now()
				return now
			}}
		c := check("http", srv.URL+"/health", 3)
		c.Interval = time.Second
		err := k.Run(context.Background(), c)
		srv.Close()
		if !strings.Contains(fmt.Sprint(err), "status 500") {
			t.Errorf("%s: %v; want a failure on the 500s", tt.name, err)
		}
		if fmt.Sprint(waits) != fmt.Sprint(tt.want) {
			t.Errorf("%s: waits (ms) %v; want %v", tt.name, waits, tt.want)
		}
	}
}
