// Package health runs health checks: an HTTP request, a TCP connection or
// a command, retried every interval until it passes or its timeout ends.
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
}

// Run runs c until it passes, its timeout ends or ctx is done.
func (k *Checker) Run(ctx context.Context, c desired.Check) error {
	env := map[string]string{}
	for _, kv := range k.Env {
		if name, val, ok := strings.Cut(kv, "="); ok {
			env[name] = val
		}
	}
	expand := func(s string) string { return os.Expand(s, func(v string) string { return env[v] }) }
	deadline := time.Now().Add(c.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	e := &Error{Check: c.Name()}
	for {
		e.Attempts++
		err := k.once(ctx, c, expand)
		if err == nil {
			return nil
		}
		// An attempt cut short by the overall deadline only says "deadline
		// exceeded"; the attempt before it saw what is actually wrong.
		if ctx.Err() == nil || e.Last == "" {
			e.Last, e.Output = err.Error(), ""
			var re *runner.Error
			if errors.As(err, &re) {
				e.Last, e.Output = re.Summary(), re.Tail
			}
		}
		if ctx.Err() != nil || time.Until(deadline) < c.Interval {
			return e
		}
		select {
		case <-ctx.Done():
			return e
		case <-time.After(c.Interval):
		}
	}
}

func (k *Checker) once(ctx context.Context, c desired.Check, expand func(string) string) error {
	switch c.Kind {
	case desired.CheckHTTP:
		return k.http(ctx, c, expand)
	case desired.CheckTCP:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", c.Target)
		if err != nil {
			return err
		}
		return conn.Close()
	case desired.CheckCommand:
		return k.Runner.Run(ctx, runner.Command{Name: "health " + c.Target, Script: c.Target, Dir: k.Dir, Env: k.Env, Contain: true, User: k.User})
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
		return fmt.Errorf("status %d: %s", resp.StatusCode, snippet(body))
	}
	if want := expand(c.Body); want != "" && !strings.Contains(string(body), want) {
		return fmt.Errorf("status %d, but the body does not contain %q: %s", resp.StatusCode, want, snippet(body))
	}
	return nil
}

func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
