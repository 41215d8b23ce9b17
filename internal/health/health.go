// Package health runs health checks: an HTTP request, a TCP connection or
// a command, tried at once, then again after 50 ms doubling up to its
// interval (from 50 ms again when the app first answers), until it passes,
// the app answers wrongly `failures` times in a row, or its timeout ends.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// Error is a check that did not pass within its timeout.
type Error struct {
	Check    string // e.g. "http http://127.0.0.1:8000/health"
	Attempts int
	Last     string // what the last attempt saw
	// Output is the tail of what a command check printed on its last
	// attempt, kept apart from the message so it is shown once.
	Output string
}

func (e *Error) Error() string {
	attempts := "1 attempt"
	if e.Attempts != 1 {
		attempts = fmt.Sprintf("%d attempts", e.Attempts)
	}
	return fmt.Sprintf("health check %s failed after %s: %s", e.Check, attempts, e.Last)
}

// Checker runs checks for one release.
type Checker struct {
	Runner *runner.Runner
	Dir    string   // where command checks run: the release
	Env    []string // the environment of commands, and of ${VAR} in URLs and bodies
	User   string   // who command checks run as; "" for the reconciler's own user
	Client *http.Client
	// Settling, when set and true, says the app is still changing over
	// (old processes of a graceful reload still stopping): a wrong answer
	// then may be theirs, and is retried like "not up yet", not counted.
	Settling func() bool

	// after is time.After, but for tests that record the waits.
	after func(time.Duration) <-chan time.Time
}

// firstBackoff is the wait before the second attempt; it doubles up to the
// check's interval. A server that is up in 80 ms is seen in 80 ms, not in
// a second.
const firstBackoff = 50 * time.Millisecond

// Backoff is the wait before attempt n (counted from 1): none before the
// first, then 50 ms doubling, capped at interval.
func Backoff(n int, interval time.Duration) time.Duration {
	if n <= 1 {
		return 0
	}
	d := firstBackoff
	for i := 2; i < n && d < interval; i++ {
		d *= 2
	}
	return min(d, interval)
}

// attemptTimeout bounds one attempt, so an attempt that hangs (a server
// that accepts and never answers) is tried again while the check has time.
// It is generous: a cold first request of a real app may take seconds.
const attemptTimeout = 5 * time.Second

// commandGrace is how long a command check has after SIGTERM before
// SIGKILL (a tenth of the check's timeout when that is shorter). Its attempt ends this much before the check's deadline, so the
// check is over at its timeout even when the command ignores SIGTERM.
const commandGrace = 100 * time.Millisecond

// wrongAnswer is an attempt the app itself answered, wrongly: an HTTP
// status it should not give, a body without what it must contain, a
// command check that exited non-zero. Unlike "not up yet" (refused,
// reset, 502/503/504 from a proxy, no answer in time), it is not cured by
// waiting: `failures` of them in a row fail the check at once.
type wrongAnswer struct{ err error }

func (w *wrongAnswer) Error() string { return w.err.Error() }
func (w *wrongAnswer) Unwrap() error { return w.err }

// Run runs c until it passes, the app answers wrongly c.Failures times in
// a row, its timeout ends or ctx is done. The timeout bounds the whole
// check: every attempt ends by then, whatever it waits on.
func (k *Checker) Run(ctx context.Context, c desired.Check) error {
	env := map[string]string{}
	for _, kv := range k.Env {
		if name, val, ok := strings.Cut(kv, "="); ok {
			env[name] = val
		}
	}
	expand := func(s string) string { return os.Expand(s, func(v string) string { return env[v] }) }
	deadline := time.Now().Add(c.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	failures := c.Failures
	if failures <= 0 {
		failures = desired.DefaultCheckFailures
	}
	e := &Error{Check: c.Name()}
	wrong := 0
	// streak counts the attempts since the app's answer changed kind (not
	// up yet, or answering wrongly): the backoff starts again at 50 ms
	// when the app first answers. Waiting for an app to come up, the
	// doubling spares it; once it answers, a wrong answer is confirmed at
	// the same pace as from an app that answered from the first attempt,
	// not at the pace the wait for its start-up had reached (a second per
	// attempt: a deterministic 500 refused in 3 s instead of 0.2).
	streak, wasWrong := 0, false
	after := k.after
	if after == nil {
		after = time.After
	}
	for {
		e.Attempts++
		err := k.once(ctx, c, expand)
		if err == nil {
			return nil
		}
		// An attempt cut short by the overall deadline only says "deadline
		// exceeded"; the attempt before it saw what is actually wrong.
		cutShort := ctx.Err() != nil || !time.Now().Before(deadline)
		if !cutShort || e.Last == "" {
			e.Last, e.Output = err.Error(), ""
			var re *runner.Error
			if errors.As(err, &re) {
				e.Last, e.Output = re.Summary(), re.Tail
			}
		}
		answered := errors.As(err, new(*wrongAnswer))
		settling := answered && k.Settling != nil && k.Settling()
		isWrong := answered && !settling
		if isWrong {
			wrong++
		} else {
			wrong = 0
		}
		if wrong >= failures {
			return e
		}
		if isWrong != wasWrong {
			streak, wasWrong = 0, isWrong
		}
		streak++
		wait := Backoff(streak+1, c.Interval)
		if settling {
			// An old process answered: the new ones answer within
			// moments, not at the pace of a slow start.
			wait = min(firstBackoff, c.Interval)
		}
		if cutShort || time.Until(deadline) <= wait {
			return e
		}
		select {
		case <-ctx.Done():
			return e
		case <-after(wait):
		}
	}
}

// once runs one attempt with its own deadline, no later than ctx's.
func (k *Checker) once(ctx context.Context, c desired.Check, expand func(string) string) error {
	limit := attemptTimeout
	if c.Interval > limit {
		limit = c.Interval
	}
	switch c.Kind {
	case desired.CheckHTTP:
		actx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		err := k.http(actx, c, expand)
		switch {
		case err == nil || errors.As(err, new(*wrongAnswer)) || actx.Err() == nil:
			return err
		case ctx.Err() == nil:
			return fmt.Errorf("no answer within %s", limit)
		}
		return fmt.Errorf("no answer within the check's timeout (%s)", c.Timeout)
	case desired.CheckTCP:
		actx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		var d net.Dialer
		conn, err := d.DialContext(actx, "tcp", c.Target)
		if err != nil {
			return err
		}
		return conn.Close()
	case desired.CheckCommand:
		// The runner sends SIGTERM at the attempt's deadline and SIGKILL a
		// grace later: both must fall within the check's timeout.
		// A short check keeps most of its time for the command.
		grace := max(min(commandGrace, c.Timeout/10), time.Millisecond) // 0 would be the runner's default, 5 s
		end := time.Now().Add(limit)
		if d, ok := ctx.Deadline(); ok && d.Add(-grace).Before(end) {
			end = d.Add(-grace)
		}
		actx, cancel := context.WithDeadline(ctx, end)
		defer cancel()
		r := runner.Runner{KillGrace: grace}
		if k.Runner != nil {
			r.Log = k.Runner.Log
		}
		err := r.Run(actx, runner.Command{Name: "health " + c.Target, Script: c.Target, Dir: k.Dir, Env: k.Env, Contain: true, User: k.User})
		var re *runner.Error
		if errors.As(err, &re) && re.ExitCode > 0 {
			return &wrongAnswer{err}
		}
		return err
	}
	return fmt.Errorf("unknown check kind %q", c.Kind)
}

// maxBody bounds what a check reads of a response.
const maxBody = 1 << 20

func (k *Checker) http(ctx context.Context, c desired.Check, expand func(string) string) error {
	client := k.Client
	if client == nil {
		client = &http.Client{
			// A health check asks this server, not where it redirects.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, expand(c.Target), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			return ue.Unwrap()
		}
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	if c.Expect != 0 {
		ok = resp.StatusCode == c.Expect
	}
	if !ok {
		err := fmt.Errorf("status %d: %s", resp.StatusCode, snippet(body))
		if notUpYet(resp.StatusCode) {
			return err // a proxy in front of an app that is not up yet
		}
		return &wrongAnswer{err}
	}
	if want := expand(c.Body); want != "" && !strings.Contains(string(body), want) {
		return &wrongAnswer{fmt.Errorf("status %d, but the body does not contain %q: %s", resp.StatusCode, want, snippet(body))}
	}
	return nil
}

// notUpYet reports whether an HTTP status is a proxy saying the app
// behind it does not answer yet: bad gateway, unavailable, gateway timeout.
func notUpYet(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
