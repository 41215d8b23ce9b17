package services

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

// Supervisord is a supervisord reached over its XML-RPC interface, as
// supervisorctl reaches it, without supervisorctl's Python start-up
// (0.3 s on an idle machine, seconds on a loaded one) on every call.
type Supervisord struct {
	// Server is where it listens: "unix:///run/supervisor.sock" or
	// "http://127.0.0.1:9001".
	Server string
	rpc    *rpcClient
}

// SupervisorRPC returns the supervisord that conn names, found the way
// supervisorctl finds it: conn.ServerURL, or the serverurl of the
// [supervisorctl] section of conn.Config (http://localhost:9001 when the
// section has none). It returns nil, with the reason, when the server is
// not known that way (no config named, a config it cannot read, an
// expansion it does not know): supervisorctl, which searches its default
// config paths, remains the way then.
func SupervisorRPC(conn desired.SupervisorConn) (*Supervisord, string) {
	url, user, pass := conn.ServerURL, "", ""
	if url == "" {
		if conn.Config == "" {
			return nil, "no supervisor config or server url named"
		}
		b, err := os.ReadFile(conn.Config)
		if err != nil {
			return nil, fmt.Sprintf("read %s: %v", conn.Config, err)
		}
		ini := parseINI(b)["supervisorctl"]
		if ini == nil {
			return nil, conn.Config + " has no [supervisorctl] section"
		}
		url = "http://localhost:9001"
		if v, ok := ini["serverurl"]; ok && !strings.EqualFold(v, "AUTO") {
			url = v
		}
		here := filepath.Dir(conn.Config)
		if !filepath.IsAbs(here) {
			if abs, err := filepath.Abs(here); err == nil {
				here = abs
			}
		}
		x, ok := expand(url, here)
		if !ok {
			return nil, fmt.Sprintf("serverurl %q of %s: an expansion the reconciler does not know", redact(url), conn.Config)
		}
		url = x
		user, _ = expand(ini["username"], here)
		pass, _ = expand(ini["password"], here)
	}
	switch {
	case strings.HasPrefix(url, "unix://"):
		path := strings.TrimPrefix(url, "unix://")
		if !filepath.IsAbs(path) {
			return nil, fmt.Sprintf("server url %s: not an absolute path", url)
		}
		return &Supervisord{Server: url, rpc: newRPCClient(filepath.Clean(path), "", user, pass)}, ""
	case strings.HasPrefix(url, "http://"):
		u, err := neturl.Parse(url)
		if err != nil {
			return nil, fmt.Sprintf("server url %s: %v", redact(url), err)
		}
		// A password in the URL is sent (basic auth), never shown.
		return &Supervisord{Server: u.Redacted(), rpc: newRPCClient("", url, user, pass)}, ""
	}
	return nil, fmt.Sprintf("server url %q: neither unix:// nor http://", redact(url))
}

// redact hides what may be a password in a URL that did not parse: all
// between "://" and the last "@".
func redact(url string) string {
	if i, j := strings.Index(url, "://"), strings.LastIndexByte(url, '@'); i >= 0 && j > i {
		return url[:i+3] + "xxxxx" + url[j:]
	}
	return url
}

// parseINI reads a supervisor config as its parser does (Python's
// RawConfigParser with inline comments): sections of lower-cased keys
// with "=" or ":" values; ";" and "#" start comments, inline after
// whitespace; indented lines continue a value.
func parseINI(b []byte) map[string]map[string]string {
	out := map[string]map[string]string{}
	var sec map[string]string
	var last string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == ';' || line[0] == '#' {
			continue
		}
		for i := 1; i < len(line); i++ {
			if (line[i] == ';' || line[i] == '#') && (line[i-1] == ' ' || line[i-1] == '\t') {
				line = strings.TrimSpace(line[:i])
				break
			}
		}
		if raw[0] == ' ' || raw[0] == '\t' {
			if sec != nil && last != "" {
				sec[last] += "\n" + line
			}
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			name := strings.TrimSpace(line[1 : len(line)-1])
			if out[name] == nil {
				out[name] = map[string]string{}
			}
			sec, last = out[name], ""
			continue
		}
		i := strings.IndexAny(line, "=:")
		if sec == nil || i < 0 {
			continue
		}
		last = strings.ToLower(strings.TrimSpace(line[:i]))
		sec[last] = strings.TrimSpace(line[i+1:])
	}
	return out
}

// expand performs supervisor's %(here)s, %(ENV_X)s and %% expansions; ok
// is false for any other.
func expand(s, here string) (string, bool) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			b.WriteString(s)
			return b.String(), true
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "%%"):
			b.WriteByte('%')
			s = s[2:]
		case strings.HasPrefix(s, "%(here)s"):
			b.WriteString(here)
			s = s[len("%(here)s"):]
		case strings.HasPrefix(s, "%(ENV_"):
			j := strings.Index(s, ")s")
			if j < 0 {
				return "", false
			}
			v, ok := os.LookupEnv(s[len("%(ENV_"):j])
			if !ok {
				return "", false
			}
			b.WriteString(v)
			s = s[j+2:]
		default:
			return "", false
		}
	}
}

// ProcessInfo is what supervisord says of a program.
type ProcessInfo struct {
	Name      string
	State     string // RUNNING, STOPPED, FATAL...
	PID       int    // 0 when not running
	ExitCause string // supervisord's description
}

// group is the group of a "group:*" program, or "".
func group(program string) string {
	if g, ok := strings.CutSuffix(program, ":*"); ok {
		return g
	}
	return ""
}

func (s *Supervisord) call(ctx context.Context, method string, params ...any) (any, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
	}
	v, err := s.rpc.call(ctx, method, params...)
	var f *Fault
	if err != nil && !errors.As(err, &f) && ctx.Err() == nil {
		return nil, fmt.Errorf("%w at %s: %v", errNoAnswer, s.Server, err)
	}
	return v, err
}

// ProcessInfo asks supervisord about a program (not a group).
func (s *Supervisord) ProcessInfo(ctx context.Context, program string) (ProcessInfo, error) {
	v, err := s.call(ctx, "supervisor.getProcessInfo", program)
	if err != nil {
		return ProcessInfo{}, fmt.Errorf("supervisor: process info of %s: %w", program, err)
	}
	m, _ := v.(map[string]any)
	info := ProcessInfo{Name: program}
	info.State, _ = m["statename"].(string)
	info.PID, _ = m["pid"].(int)
	info.ExitCause, _ = m["description"].(string)
	if info.State == "" {
		return ProcessInfo{}, fmt.Errorf("supervisor: process info of %s: no state in the answer", program)
	}
	return info, nil
}

// Act performs the service's action (restart, or reload: a HUP that
// starts a stopped program) and writes what was done to out, in
// supervisorctl's words ("web: signalled", "web: started").
func (s *Supervisord) Act(ctx context.Context, svc desired.Service, out io.Writer) error {
	prog := svc.Program
	if g := group(prog); g != "" {
		return s.actGroup(ctx, svc, g, out)
	}
	say := func(what string) { fmt.Fprintf(out, "%s: %s\n", prog, what) }
	fail := func(what string, err error) error {
		return fmt.Errorf("supervisor %s %s %s: %w", s.Server, what, prog, err)
	}
	start := func() error {
		if _, err := s.call(ctx, "supervisor.startProcess", prog, true); err != nil {
			return fail("start", err)
		}
		say("started")
		return nil
	}
	if svc.Action == desired.ActionReload {
		_, err := s.call(ctx, "supervisor.signalProcess", prog, "HUP")
		var f *Fault
		switch {
		case err == nil:
			say("signalled")
			return nil
		case errors.As(err, &f) && f.Code == faultNotRunning:
			// The first deploy: autostart=false, nothing to signal yet.
			return start()
		}
		return fail("signal HUP", err)
	}
	_, err := s.call(ctx, "supervisor.stopProcess", prog, true)
	var f *Fault
	switch {
	case err == nil:
		say("stopped")
	case errors.As(err, &f) && f.Code == faultNotRunning:
	default:
		return fail("stop", err)
	}
	return start()
}

// actGroup acts on every program of a group: a reload signals the
// running ones and starts the others.
func (s *Supervisord) actGroup(ctx context.Context, svc desired.Service, g string, out io.Writer) error {
	// Each returns an array of {name, group, status, description}.
	each := func(what, method string, params ...any) error {
		v, err := s.call(ctx, method, append([]any{g}, params...)...)
		if err != nil {
			return fmt.Errorf("supervisor %s %s %s:*: %w", s.Server, what, g, err)
		}
		list, _ := v.([]any)
		// supervisord answers in the order its processes finished (a
		// stop's reverse priority, ties by chance): print by name.
		sort.SliceStable(list, func(i, j int) bool {
			a, _ := list[i].(map[string]any)
			b, _ := list[j].(map[string]any)
			an, _ := a["name"].(string)
			bn, _ := b["name"].(string)
			return an < bn
		})
		var bad []string
		for _, x := range list {
			m, _ := x.(map[string]any)
			name, _ := m["name"].(string)
			code, _ := m["status"].(int)
			desc, _ := m["description"].(string)
			if code != faultSuccess {
				bad = append(bad, fmt.Sprintf("%s:%s: %s (fault %d)", g, name, desc, code))
				continue
			}
			fmt.Fprintf(out, "%s:%s: %s\n", g, name, map[string]string{"stop": "stopped", "start": "started", "signal HUP": "signalled"}[what])
		}
		if len(bad) > 0 {
			return fmt.Errorf("supervisor %s %s %s:*: %s", s.Server, what, g, strings.Join(bad, "; "))
		}
		return nil
	}
	var err error
	if svc.Action == desired.ActionReload {
		err = each("signal HUP", "supervisor.signalProcessGroup", "HUP")
	} else {
		err = each("stop", "supervisor.stopProcessGroup", true)
	}
	if err != nil {
		return err
	}
	// Starts only the programs that are not running.
	return each("start", "supervisor.startProcessGroup", true)
}
