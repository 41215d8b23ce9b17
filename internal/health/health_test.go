package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
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
		return desired.Check{Kind: kind, Target: target, Timeout: 500 * time.Millisecond, Interval: 20 * time.Millisecond}
	}
	tests := []struct {
		name  string
		check desired.Check
		want  string // "" passes; else a substring of the error
	}{
		{"http 2xx", c("http", srv.URL+"/health"), ""},
		{"http body expands", func() desired.Check { x := c("http", srv.URL+"/health"); x.Body = "${RECONCILER_COMMIT}"; return x }(), ""},
		{"http body missing", func() desired.Check { x := c("http", srv.URL+"/health"); x.Body = "v2"; return x }(), `the body does not contain "v2": ok abc123`},
		{"http retried until up", c("http", srv.URL+"/slow-start"), ""},
		{"http 500", c("http", srv.URL+"/broken"), "status 500: Internal Server Error: boom"},
		{"http expect", func() desired.Check { x := c("http", srv.URL+"/created"); x.Expect = 201; return x }(), ""},
		{"http expect mismatch", func() desired.Check { x := c("http", srv.URL+"/health"); x.Expect = 201; return x }(), "status 200"},
		{"http refused", c("http", "http://"+closed+"/"), "connection refused"},
		{"tcp open", c("tcp", strings.TrimPrefix(srv.URL, "http://")), ""},
		{"tcp refused", c("tcp", closed), "connection refused"},
		{"command ok", c("command", "test -n \"$RECONCILER_COMMIT\""), ""},
		{"command fails", c("command", "echo not ready >&2; exit 2"), "exited with status 2"},
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
			if he.Attempts < 2 {
				t.Errorf("gave up after %d attempt", he.Attempts)
			}
			// It retried until its timeout. (How long past it a loaded
			// machine takes to give up is the benchmark's business.)
			if d := time.Since(start); d < 400*time.Millisecond {
				t.Errorf("failed after %s; the timeout is 500ms", d)
			}
			if tt.check.Kind == "command" && he.Output != "not ready" {
				t.Errorf("the command's output is %q; want it kept apart from the message", he.Output)
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
