package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/scrub"
)

// DefaultBackoff are the waits between the attempts of one notification:
// five attempts over about 15 s, then it is given up.
var DefaultBackoff = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}

// Bounds of one attempt.
const (
	// AttemptTimeout bounds one POST, from the dial to the end of the
	// answer.
	AttemptTimeout = 10 * time.Second
	// maxRetryAfter caps what a Retry-After asks for: a notification
	// is worth little a minute late.
	maxRetryAfter = 30 * time.Second
	// maxURLFile is the most of a url_file read: one URL.
	maxURLFile = 4 << 10
	// maxAnswer is the most of an answer kept for the message.
	maxAnswer = 200
)

// Sender posts events in the background. Send never blocks and never
// fails; each delivery is retried with backoff on its own and logged when
// it is given up. Close waits for what is in flight, within a bound.
// A Sender is safe for concurrent use.
type Sender struct {
	// Log receives one line per delivery: sent, given up or dropped.
	Log *zap.Logger
	// Client posts; nil for one with the timeouts above that follows
	// no redirect (the body goes nowhere but where notify: says).
	Client *http.Client
	// Backoff are the waits between attempts; DefaultBackoff when nil.
	Backoff []time.Duration

	once    sync.Once
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	closed  bool
	dropped int // deliveries cancelled by Close
}

func (s *Sender) init() {
	s.once.Do(func() {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		if s.Log == nil {
			s.Log = zap.NewNop()
		}
		if s.Client == nil {
			s.Client = NewClient()
		}
		if s.Backoff == nil {
			s.Backoff = DefaultBackoff
		}
	})
}

// NewClient is an HTTP client for notifications: every phase bounded, no
// redirect followed (a redirect is an answer that fails the attempt).
func NewClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 5 * time.Second
	tr.ResponseHeaderTimeout = AttemptTimeout
	return &http.Client{
		Transport:     tr,
		Timeout:       AttemptTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Send starts, in the background, one delivery of ev to each of targets
// that wants ev.Event. It returns at once. After Close it sends nothing.
func (s *Sender) Send(targets []desired.Notify, ev Event) {
	s.init()
	body, err := json.Marshal(ev)
	if err != nil {
		// Only strings and a time: cannot fail.
		s.Log.Error("notification not encoded", zap.Error(err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for i, t := range targets {
		if !t.Wants(ev.Event) {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.deliver(i, t, ev, body)
		}()
	}
}

// Close stops taking events and waits for the deliveries in flight until
// ctx is done; then it cancels them, logs each as dropped, and returns how
// many were. It returns only when no delivery runs.
func (s *Sender) Close(ctx context.Context) (dropped int) {
	s.init()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		<-done
	}
	s.cancel()
	s.Client.CloseIdleConnections()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// deliver posts body to one target until it is accepted, attempts run out,
// a permanent error, or Close cancels it.
func (s *Sender) deliver(i int, t desired.Notify, ev Event, body []byte) {
	name := fmt.Sprintf("notify[%d]", i)
	log := s.Log.With(zap.String("notify", name), zap.String("event", ev.Event), zap.String("apply_id", ev.ApplyID))
	// url_file is read now, once per delivery: a rotated secret takes
	// effect without a reload.
	raw, err := resolve(t)
	if err != nil {
		log.Error("notification not sent", zap.String("reason", name+".url_file: "+err.Error()))
		return
	}
	log = log.With(zap.String("host", hostOf(raw)))
	var last error
	for attempt := 1; ; attempt++ {
		wait, err := s.post(s.ctx, raw, body)
		if err == nil {
			log.Info("notification sent", zap.Int("attempts", attempt))
			return
		}
		last = err
		var perm *permanentError
		switch {
		case s.ctx.Err() != nil:
			s.drop(log, attempt, last)
			return
		case errors.As(err, &perm):
			log.Error("notification not sent", zap.Int("attempts", attempt), zap.String("reason", last.Error()))
			return
		case attempt > len(s.Backoff):
			log.Error("notification not sent: giving up", zap.Int("attempts", attempt), zap.String("reason", last.Error()))
			return
		}
		wait = max(wait, s.Backoff[attempt-1])
		log.Info("notification not sent yet; retrying", zap.Int("attempt", attempt), zap.Duration("in", wait), zap.String("reason", last.Error()))
		timer := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			timer.Stop()
			s.drop(log, attempt, last)
			return
		case <-timer.C:
		}
	}
}

// drop logs a delivery Close cancelled, and counts it.
func (s *Sender) drop(log *zap.Logger, attempts int, last error) {
	s.mu.Lock()
	s.dropped++
	s.mu.Unlock()
	log.Warn("notification dropped: the reconciler stopped before it was delivered", zap.Int("attempts", attempts), zap.String("last_error", last.Error()))
}

// permanentError is an answer that trying again cannot change: a 4xx
// other than 408 and 429, a redirect.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

// post makes one attempt. wait is how long the server asked to wait
// (Retry-After), 0 when it did not. Its errors never hold the URL.
func (s *Sender) post(ctx context.Context, raw string, body []byte) (wait time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, raw, bytes.NewReader(body))
	if err != nil {
		return 0, &permanentError{"the URL cannot be requested"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "reconciler")
	resp, err := s.Client.Do(req)
	if err != nil {
		// A *url.Error quotes the URL: keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, errors.New(hide(err.Error(), raw))
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return 0, nil
	}
	msg := "answered " + resp.Status
	if a := strings.TrimSpace(hide(scrub.Text(string(answer)), raw)); a != "" {
		msg += ": " + clipAnswer(a)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return retryAfter(resp.Header.Get("Retry-After")), errors.New(msg)
	default:
		return 0, &permanentError{msg}
	}
}

// retryAfter reads a Retry-After of seconds, capped; 0 when absent.
func retryAfter(h string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(h))
	if err != nil || n <= 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, maxRetryAfter)
}

func clipAnswer(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > maxAnswer {
		s = string(r[:maxAnswer]) + "…"
	}
	return s
}

// hide removes the URL and its secret parts (the user info, the path, the
// query) from s: an answer or an error may echo the request.
func hide(s, raw string) string {
	s = strings.ReplaceAll(s, raw, "xxxxx")
	u, err := url.Parse(raw)
	if err != nil {
		return s
	}
	for _, part := range []string{u.User.String(), u.EscapedPath(), u.Path, u.RawQuery} {
		if len(part) > 1 {
			s = strings.ReplaceAll(s, part, "xxxxx")
		}
	}
	return s
}

// hostOf is the host of a notification URL: what a message may name.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// resolve is the URL of a target: notify.url, or what notify.url_file
// holds, read now. Its errors name the file, never what is in it.
func resolve(t desired.Notify) (string, error) {
	if t.URLFile == "" {
		return t.URL.Reveal(), nil
	}
	f, err := os.Open(t.URLFile)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", t.URLFile)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxURLFile+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", t.URLFile, err)
	}
	if len(b) > maxURLFile {
		return "", fmt.Errorf("%s is larger than %d bytes; it should hold one URL", t.URLFile, maxURLFile)
	}
	raw := strings.TrimSpace(string(b))
	if raw == "" {
		return "", fmt.Errorf("%s is empty; it should hold one http:// or https:// URL", t.URLFile)
	}
	if err := desired.CheckNotifyURL(raw); err != nil {
		return "", fmt.Errorf("%s: the URL in it %w", t.URLFile, err)
	}
	return raw, nil
}
