package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// secretPath is the part of a webhook URL that is its credential, as in
// Slack's https://hooks.slack.com/services/T…/B…/<token>.
const secretPath = "/services/T0001/B0001/s3cr3tT0ken"

// post is one request a receiver got.
type post struct {
	Method, ContentType, Path string
	Body                      map[string]any
	Raw                       string
}

// receiver is a webhook endpoint on 127.0.0.1. answer, when set, picks
// the status of the n-th request (from 1); 200 otherwise.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	posts  []post
	got    chan post // every request, as it arrives
	answer func(n int, w http.ResponseWriter) int
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter) int) *receiver {
	r := &receiver{got: make(chan post, 100), answer: answer}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		p := post{Method: req.Method, ContentType: req.Header.Get("Content-Type"), Path: req.URL.Path, Raw: string(b)}
		json.Unmarshal(b, &p.Body)
		r.mu.Lock()
		r.posts = append(r.posts, p)
		n := len(r.posts)
		r.mu.Unlock()
		r.got <- p
		code := http.StatusOK
		if r.answer != nil {
			code = r.answer(n, w)
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "answer %d to %s", code, req.URL.Path) // echoes the path, as some servers do
	}))
	t.Cleanup(r.Close)
	return r
}

// hook is the receiver's URL with a secret path.
func (r *receiver) hook() string { return r.URL + secretPath }

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.posts)
}

// next waits for the next request; the bound only turns one that never
// comes into a failure instead of a hung test.
func (r *receiver) next(t *testing.T) post {
	t.Helper()
	select {
	case p := <-r.got:
		return p
	case <-time.After(time.Minute):
		t.Fatal("no notification arrived")
	}
	return post{}
}

// logs is a logger whose lines a test reads back, all of them, as text.
type logs struct{ *observer.ObservedLogs }

func newLogs() (*zap.Logger, logs) {
	core, obs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs{obs}
}

func (l logs) String() string {
	var b strings.Builder
	for _, e := range l.All() {
		fmt.Fprintf(&b, "%s %s %v\n", e.Level, e.Message, e.ContextMap())
	}
	return b.String()
}

// fast is a Sender that retries at once: the tests wait on events, not on
// the backoff.
func fast(log *zap.Logger, attempts int) *Sender {
	return &Sender{Log: log, Backoff: make([]time.Duration, attempts-1)}
}

func target(url string, on ...string) desired.Notify {
	if len(on) == 0 {
		on = desired.DefaultNotifyOn
	}
	return desired.Notify{URL: desired.Secret(url), On: on}
}

func testEvent(event string) Event {
	return Event{Event: event, App: "shop", Host: "web1", Result: "failed", ApplyID: "a1", Text: "shop on web1: " + event}
}

func closeAll(t *testing.T, s *Sender) {
	t.Helper()
	if n := s.Close(context.Background()); n != 0 {
		t.Errorf("%d notifications dropped", n)
	}
}

func TestOnFilters(t *testing.T) {
	all := newReceiver(t, nil)
	failures := newReceiver(t, nil)
	def := newReceiver(t, nil)
	log, _ := newLogs()
	s := fast(log, 1)
	targets := []desired.Notify{
		target(all.hook(), desired.NotifyEvents...),
		target(failures.hook(), Failure),
		target(def.hook()), // all but success
	}
	for _, ev := range []string{Success, Failure, Blocked, Revert} {
		s.Send(targets, testEvent(ev))
	}
	closeAll(t, s)
	got := func(r *receiver) string {
		var evs []string
		for _, p := range r.posts {
			evs = append(evs, p.Body["event"].(string))
		}
		return strings.Join(sorted(evs), ",")
	}
	for _, c := range []struct {
		r    *receiver
		want string
	}{{all, "blocked,failure,revert,success"}, {failures, "failure"}, {def, "blocked,failure,revert"}} {
		if g := got(c.r); g != c.want {
			t.Errorf("received %s, want %s", g, c.want)
		}
	}
	for _, p := range all.posts {
		if p.Method != http.MethodPost || p.ContentType != "application/json" || p.Path != secretPath {
			t.Errorf("request %s %s %q", p.Method, p.Path, p.ContentType)
		}
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestRetries(t *testing.T) {
	// A port nothing listens on: taken, then freed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + secretPath
	ln.Close()

	tests := []struct {
		name string
		// answer is the receiver's status per request; nil: no receiver,
		// the URL is down.
		answer   func(n int, w http.ResponseWriter) int
		attempts int    // the Sender's
		requests int    // the receiver sees
		log      string // the last log line's message
		reason   string // in it
	}{
		{name: "down", attempts: 3, log: "notification not sent: giving up", reason: "connection refused"},
		{name: "500 then 200", answer: func(n int, _ http.ResponseWriter) int {
			if n == 1 {
				return 500
			}
			return 200
		}, attempts: 3, requests: 2, log: "notification sent"},
		{name: "503 with Retry-After", answer: func(n int, w http.ResponseWriter) int {
			if n == 1 {
				w.Header().Set("Retry-After", "0")
				return 503
			}
			return 200
		}, attempts: 2, requests: 2, log: "notification sent"},
		{name: "always 500", answer: func(int, http.ResponseWriter) int { return 500 }, attempts: 3, requests: 3,
			log: "notification not sent: giving up", reason: "answered 500 Internal Server Error: answer 500 to xxxxx"},
		{name: "429 is retried", answer: func(n int, _ http.ResponseWriter) int {
			if n == 1 {
				return 429
			}
			return 204
		}, attempts: 2, requests: 2, log: "notification sent"},
		// A 4xx will not pass by trying again: Slack's 404 no_service,
		// 403 invalid_token.
		{name: "404 is not retried", answer: func(int, http.ResponseWriter) int { return 404 }, attempts: 5, requests: 1,
			log: "notification not sent", reason: "answered 404 Not Found: answer 404 to xxxxx"},
		{name: "a redirect is not followed", answer: func(_ int, w http.ResponseWriter) int {
			w.Header().Set("Location", "http://example.com/elsewhere")
			return 307
		}, attempts: 5, requests: 1, log: "notification not sent", reason: "answered 307 Temporary Redirect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := down
			var r *receiver
			if tt.answer != nil {
				r = newReceiver(t, tt.answer)
				url = r.hook()
			}
			log, obs := newLogs()
			s := fast(log, tt.attempts)
			s.Send([]desired.Notify{target(url)}, testEvent(Failure))
			closeAll(t, s)
			if r != nil && r.count() != tt.requests {
				t.Errorf("%d requests, want %d", r.count(), tt.requests)
			}
			all := obs.All()
			last := all[len(all)-1]
			if last.Message != tt.log || !strings.Contains(fmt.Sprint(last.ContextMap()["reason"]), tt.reason) {
				t.Errorf("last log line %q %v; want %q with %q\n%s", last.Message, last.ContextMap(), tt.log, tt.reason, obs)
			}
			if last.ContextMap()["notify"] != "notify[0]" {
				t.Errorf("the log does not name notify[0]: %v", last.ContextMap())
			}
			if strings.Contains(obs.String(), "s3cr3t") || strings.Contains(obs.String(), "/services/") {
				t.Errorf("the log shows the URL:\n%s", obs)
			}
		})
	}
}

// A server that does not answer delays neither Send nor, beyond the bound
// the caller gives, Close: what is still in flight is dropped, and said.
func TestSlowServerNeverDelaysTheApply(t *testing.T) {
	release := make(chan struct{})
	r := newReceiver(t, func(int, http.ResponseWriter) int { <-release; return 200 })
	defer close(release)
	log, obs := newLogs()
	s := fast(log, 5)
	sent := make(chan struct{})
	go func() {
		s.Send([]desired.Notify{target(r.hook())}, testEvent(Failure))
		close(sent)
	}()
	// Send returns while the server holds the request: it never waits.
	r.next(t)
	select {
	case <-sent:
	case <-time.After(time.Minute):
		t.Fatal("Send waits for the server")
	}
	// The bound is over (a done context): Close cancels what is in flight.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n := s.Close(ctx); n != 1 {
		t.Errorf("Close dropped %d, want 1", n)
	}
	l := obs.FilterMessageSnippet("dropped").All()
	if len(l) != 1 || l[0].Level != zapcore.WarnLevel || l[0].ContextMap()["notify"] != "notify[0]" {
		t.Errorf("the drop is not logged as a warning naming notify[0]:\n%s", obs)
	}
	// Closed: nothing more is sent.
	s.Send([]desired.Notify{target(r.hook())}, testEvent(Failure))
	if r.count() != 1 {
		t.Errorf("%d requests after Close", r.count())
	}
}

func TestURLFile(t *testing.T) {
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "hook-url")
	log, obs := newLogs()
	s := fast(log, 1)
	tg := []desired.Notify{{URLFile: file, On: desired.DefaultNotifyOn}}

	// Missing: an error naming notify[0].url_file; nothing sent.
	missing := filepath.Join(dir, "missing")
	s.Send([]desired.Notify{{URLFile: missing, On: desired.DefaultNotifyOn}}, testEvent(Failure))
	// A file that holds no URL: said without showing what it holds.
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("hooks.slack.com"+secretPath+"\n"), 0o600)
	s.Send([]desired.Notify{{URLFile: bad, On: desired.DefaultNotifyOn}}, testEvent(Failure))
	// Read at each send: a rotated secret takes effect without a reload.
	os.WriteFile(file, []byte(a.hook()+"\n"), 0o600)
	s.Send(tg, testEvent(Failure))
	a.next(t)
	os.WriteFile(file, []byte("  "+b.hook()+"\n\n"), 0o600)
	s.Send(tg, testEvent(Revert))
	b.next(t)
	closeAll(t, s)
	if a.count() != 1 || b.count() != 1 {
		t.Errorf("%d and %d requests, want 1 and 1", a.count(), b.count())
	}
	errs := obs.FilterMessage("notification not sent").All()
	if len(errs) != 2 {
		t.Fatalf("%d errors logged, want 2:\n%s", len(errs), obs)
	}
	want := []string{"notify[0].url_file: open " + missing + ": no such file or directory",
		"notify[0].url_file: " + bad + ": the URL in it is not an http:// or https:// URL"}
	for _, e := range errs {
		reason := e.ContextMap()["reason"]
		if reason != want[0] && reason != want[1] {
			t.Errorf("logged %q; want one of %q", reason, want)
		}
	}
	if strings.Contains(obs.String(), "s3cr3t") {
		t.Errorf("the log shows the URL:\n%s", obs)
	}
}

func TestOnceTellsEachDestinationOfAFailureOnce(t *testing.T) {
	all := target("http://127.0.0.1:1/a", desired.NotifyEvents...)
	blockedOnly := target("http://127.0.0.1:1/b", Blocked)
	file := desired.Notify{URLFile: "/etc/hook", On: desired.DefaultNotifyOn}
	targets := []desired.Notify{all, blockedOnly, file}
	ev := func(event, key string) Event { return Event{Event: event, Key: key} }
	names := map[string]string{"url:http://127.0.0.1:1/a": "all", "url:http://127.0.0.1:1/b": "blocked-only", "file:/etc/hook": "file"}
	var o Once
	steps := []struct {
		name  string
		ev    Event
		clear bool
		want  string
	}{
		{name: "build failed", ev: ev(Failure, "r3@T1"), want: "all,file"},
		{name: "next tick: blocked on it", ev: ev(Blocked, "r3@T1"), want: "blocked-only"},
		{name: "and the next", ev: ev(Blocked, "r3@T1"), want: ""},
		{name: "retried, failed again", ev: ev(Failure, "r3@T2"), want: "all,file"},
		{name: "blocked again", ev: ev(Blocked, "r3@T2"), want: "blocked-only"},
		{name: "no key: always", ev: ev(Success, ""), want: "all,blocked-only,file"},
		{name: "after success", clear: true, ev: ev(Blocked, "r3@T2"), want: "all,blocked-only,file"},
	}
	for _, st := range steps {
		if st.clear {
			o.Clear()
		}
		var got []string
		for _, tg := range o.Filter(targets, st.ev) {
			got = append(got, names[destination(tg)])
		}
		if g := strings.Join(got, ","); g != st.want {
			t.Errorf("%s: told %q, want %q", st.name, g, st.want)
		}
	}
}

func TestTextIsSlackSafe(t *testing.T) {
	if got := slackEscape("a <b> & c"); got != "a &lt;b&gt; &amp; c" {
		t.Errorf("escaped %q", got)
	}
	long := strings.Repeat("x", 1000) + "\nsecond line"
	if c := clip(long); strings.Contains(c, "second") || len([]rune(c)) != maxTextError+1 {
		t.Errorf("clip: %d runes", len([]rune(c)))
	}
}
