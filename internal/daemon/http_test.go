package daemon

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

func sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// TestSlowClientsAreCutOff: connections that send a request slowly, or
// not at all, or stay idle after one, are closed by the server within its
// timeouts. Each client waits for the server's close (a read returning
// EOF); the read deadline is only a failsafe, far beyond the timeouts.
// Before the read, write and idle timeouts, the slow bodies stayed open.
func TestSlowClientsAreCutOff(t *testing.T) {
	const conns = 20
	limits := Limits{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond,
		WriteTimeout: 300 * time.Millisecond, IdleTimeout: 200 * time.Millisecond, MaxConns: 2 * conns}
	secret := []byte("secret")
	srv := &Server{Daemon: New(Options{Source: &fakeSource{fakeYAML}, Log: zaptest.NewLogger(t)}), Secret: secret,
		Log: zaptest.NewLogger(t), Limits: limits}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()

	for _, tt := range []struct{ name, send string }{
		{"slow body", "POST /hooks/reconcile HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"partial"},
		{"slow headers", "GET /healthz HTTP/1.1\r\nHost: x\r\n"},
		{"nothing", ""},
		{"idle after a request", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			for range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- holdUntilClosed(ln.Addr().String(), tt.send)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// holdUntilClosed sends send and reads until the server closes the
// connection.
func holdUntilClosed(addr, send string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, send); err != nil {
		return err
	}
	// A failsafe only: the server's timeouts are well under a second.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.Copy(io.Discard, c)
	if err == nil || errors.Is(err, syscall.ECONNRESET) {
		return nil // EOF: the server closed it
	}
	return fmt.Errorf("the server kept the connection open: %w", err)
}

func TestBodyIsLimited(t *testing.T) {
	secret := []byte("secret")
	idle := New(Options{Source: &fakeSource{fakeYAML}, Log: zaptest.NewLogger(t)})
	srv := httptest.NewServer((&Server{Daemon: idle, Secret: secret, Log: zaptest.NewLogger(t)}).Handler())
	defer srv.Close()
	body := bytes.Repeat([]byte("x"), maxBody+1)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hooks/reconcile", bytes.NewReader(body))
	req.Header.Set("X-Hub-Signature-256", sign(secret, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a %d-byte body: %d; want 413", len(body), resp.StatusCode)
	}
	if p := idle.pending(); len(p) != 0 {
		t.Errorf("an oversized webhook asked for a run: %v", p)
	}
}

// TestDuplicateDeliveryIgnored: a signed delivery replayed within ten
// minutes (by GitHub's redelivery or by whoever captured it) asks for no
// run; after ten minutes, or with another id, it does.
func TestDuplicateDeliveryIgnored(t *testing.T) {
	secret := []byte("secret")
	body := []byte(`{"ref":"refs/heads/main"}`)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	idle := New(Options{Source: &fakeSource{fakeYAML}, Log: zaptest.NewLogger(t)})
	s := &Server{Daemon: idle, Secret: secret, Log: zaptest.NewLogger(t), Now: func() time.Time { return now }}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	post := func(id, sig string) (int, string, bool) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hooks/reconcile", bytes.NewReader(body))
		req.Header.Set("X-Hub-Signature-256", sig)
		req.Header.Set("X-GitHub-Delivery", id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		idle.mu.Lock()
		triggered := idle.reasons["webhook"]
		clear(idle.reasons)
		idle.mu.Unlock()
		return resp.StatusCode, string(b), triggered
	}
	good := sign(secret, body)
	for _, step := range []struct {
		name      string
		advance   time.Duration
		id, sig   string
		code      int
		triggered bool
	}{
		{"first delivery", 0, "d1", good, http.StatusAccepted, true},
		{"replayed", time.Minute, "d1", good, http.StatusOK, false},
		{"replayed just inside the window", 9*time.Minute - time.Second, "d1", good, http.StatusOK, false},
		{"another delivery", 0, "d2", good, http.StatusAccepted, true},
		{"replayed after the window", 2 * time.Second, "d1", good, http.StatusAccepted, true},
		{"unsigned, with a new id", 0, "d3", "sha256=00", http.StatusUnauthorized, false},
		{"signed, with the id the unsigned one used", 0, "d3", good, http.StatusAccepted, true},
		{"no id", 0, "", good, http.StatusAccepted, true},
		{"no id again", 0, "", good, http.StatusAccepted, true},
	} {
		now = now.Add(step.advance)
		code, text, triggered := post(step.id, step.sig)
		if code != step.code || triggered != step.triggered {
			t.Errorf("%s: %d %q, triggered %v; want %d, triggered %v", step.name, code, text, triggered, step.code, step.triggered)
		}
		if step.code == http.StatusOK && !strings.Contains(text, "duplicate delivery") {
			t.Errorf("%s: %q; want it to say duplicate delivery", step.name, text)
		}
	}
}

// TestDeliveriesBounded: a flood of distinct ids keeps at most
// maxDeliveries in memory, forgetting the oldest first.
func TestDeliveriesBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := &Server{Now: func() time.Time { return now }}
	for i := range maxDeliveries + 500 {
		if s.seen(fmt.Sprint(i)) {
			t.Fatalf("id %d seen before", i)
		}
	}
	if len(s.deliveries) > maxDeliveries || len(s.order) > maxDeliveries {
		t.Errorf("%d ids and %d in order remembered; want at most %d", len(s.deliveries), len(s.order), maxDeliveries)
	}
	if !s.seen(fmt.Sprint(maxDeliveries + 499)) {
		t.Error("the newest id was forgotten")
	}
	if s.seen("0") {
		t.Error("the oldest id was kept past the bound")
	}
}

// TestStatusHidesPasswords: whatever carries a URL with a password in
// /status (the last run's error, the status report's fields) shows it
// redacted.
func TestStatusHidesPasswords(t *testing.T) {
	d := New(Options{Source: &fakeSource{fakeYAML}, Log: zaptest.NewLogger(t)})
	d.good = &desired.State{App: "a"}
	d.last = &Run{ID: "r1", Result: "failed", Error: "resolve: ls-remote https://ci:t0ken@git.example.com/app.git: refused"}
	status := func(context.Context) (any, error) {
		return map[string]any{"services": []any{map[string]string{"note": "http://admin:s3cret@127.0.0.1:9001 refused connection"}}}, nil
	}
	srv := httptest.NewServer((&Server{Daemon: d, Status: status, Log: zaptest.NewLogger(t)}).Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := string(b)
	for _, secret := range []string{"t0ken", "s3cret"} {
		if strings.Contains(out, secret) {
			t.Errorf("/status shows %s:\n%s", secret, out)
		}
	}
	for _, want := range []string{"https://ci:xxxxx@git.example.com/app.git", "http://admin:xxxxx@127.0.0.1:9001"} {
		if !strings.Contains(out, want) {
			t.Errorf("/status lacks %s:\n%s", want, out)
		}
	}
}
