// Package runner is the one place the reconciler runs external commands:
// it applies the timeout, kills the whole process group when it expires,
// streams the output live and to a log, and wraps a failure with the tail
// of what the command printed.
package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Command is one shell command to run.
type Command struct {
	Name    string // for logs and errors: "build venv", "restart web"
	Script  string // run with sh -c
	Dir     string
	Env     []string // the whole environment of the command
	Timeout time.Duration
	Output  io.Writer // receives stdout and stderr interleaved; may be nil
	// Contain kills what the command left running in its process group
	// when it exits: a build step must not leave a process behind, while
	// a service command may legitimately start one.
	Contain bool
	// User, when set, is who the command runs as (a name or uid): its
	// uid, primary group and supplementary groups, with HOME, USER and
	// LOGNAME set to its own.
	User string
	// Started, when set, is told the command's pid, which is its process
	// group's id, once it started.
	Started func(pid int)
}

// pipeGrace is how long Run waits, after the command exited, for processes
// it left behind to close its output. A service command that starts a
// server in the background would otherwise hold Run forever.
const pipeGrace = 2 * time.Second

// Runner runs commands.
type Runner struct {
	Log *zap.Logger
	// KillGrace is how long a command has after SIGTERM before SIGKILL.
	KillGrace time.Duration
}

// Error is a command that failed: it exited non-zero, was killed by a
// signal, or timed out.
type Error struct {
	Name     string
	ExitCode int // -1 when killed by a signal or timed out
	TimedOut bool
	Signal   string
	Tail     string // the last lines the command printed
	Err      error
}

func (e *Error) Error() string {
	what := e.Summary()
	// The caller names the command when it wraps the error; Name is for
	// logs and for callers that match with errors.As.
	if e.Tail == "" {
		return what
	}
	return what + "; last output:\n" + e.Tail
}

// Summary is what happened, without the output: for a caller that showed
// the output live and keeps its tail apart.
func (e *Error) Summary() string {
	var what string
	switch {
	case e.TimedOut:
		what = "timed out"
	case e.Signal != "":
		what = "killed by signal " + e.Signal
	case e.ExitCode >= 0:
		what = fmt.Sprintf("exited with status %d", e.ExitCode)
	default:
		what = e.Err.Error()
	}
	return what
}

func (e *Error) Unwrap() error { return e.Err }

// tailLines is how many lines of output a failure carries.
const tailLines = 20

// Run runs c and waits for it. The command and its children get their own
// process group, so a timeout or a cancelled ctx kills them all: a build
// that forked a daemon must not outlive its step.
func (r *Runner) Run(ctx context.Context, c Command) error {
	log := r.Log
	if log == nil {
		log = zap.NewNop()
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	cmd := exec.Command("/bin/sh", "-c", c.Script)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.Contain {
		// A reconciler killed by SIGKILL cannot stop the group: the
		// kernel kills the command then (a preflight server started with
		// exec would otherwise hold its port for ever). The signal is tied
		// to the thread that started the command, which the Go runtime
		// does not end while no goroutine locks it (golang/go#27505).
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if c.User != "" {
		cred, env, err := credential(c.User, c.Env)
		if err != nil {
			return &Error{Name: c.Name, ExitCode: -1, Err: err}
		}
		cmd.SysProcAttr.Credential, cmd.Env = cred, env
	}
	cmd.WaitDelay = pipeGrace
	tail := &tailBuffer{max: tailLines}
	var out io.Writer = tail
	if c.Output != nil {
		out = io.MultiWriter(c.Output, tail)
	}
	// One writer for both streams keeps their lines in the order printed.
	sw := &syncWriter{w: out}
	cmd.Stdout, cmd.Stderr = sw, sw
	start := time.Now()
	log.Debug("command start", zap.String("command", c.Name), zap.String("dir", c.Dir))
	if err := cmd.Start(); err != nil {
		return &Error{Name: c.Name, ExitCode: -1, Err: err}
	}
	if c.Started != nil {
		c.Started(cmd.Process.Pid)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		grace := r.KillGrace
		if grace == 0 {
			grace = 5 * time.Second
		}
		select {
		case <-done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
		// Children that ignored SIGTERM and outlived the shell still
		// hold the group; SIGKILL reaches them.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		e := &Error{Name: c.Name, ExitCode: -1, Tail: tail.String(), Err: ctx.Err()}
		e.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		log.Info("command stopped", zap.String("command", c.Name), zap.Duration("elapsed", time.Since(start)), zap.Bool("timed_out", e.TimedOut))
		return e
	}
	if c.Contain {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // it exited 0; only a background child kept the output open
	}
	elapsed := time.Since(start)
	if err == nil {
		log.Debug("command done", zap.String("command", c.Name), zap.Duration("elapsed", elapsed))
		return nil
	}
	e := &Error{Name: c.Name, ExitCode: -1, Tail: tail.String(), Err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.Signal = ws.Signal().String()
		} else {
			e.ExitCode = ee.ExitCode()
		}
	}
	log.Info("command failed", zap.String("command", c.Name), zap.Duration("elapsed", elapsed), zap.Int("exit_code", e.ExitCode))
	return e
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	max   int
	lines []string
	part  bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' {
			t.push(t.part.String())
			t.part.Reset()
			continue
		}
		if t.part.Len() < 4096 {
			t.part.WriteByte(b)
		}
	}
	return len(p), nil
}

func (t *tailBuffer) push(line string) {
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

func (t *tailBuffer) String() string {
	lines := t.lines
	if t.part.Len() > 0 {
		lines = append(append([]string{}, lines...), t.part.String())
	}
	return strings.Join(lines, "\n")
}

// PrefixWriter prefixes each line written to it, for live output such as
// "  venv | Collecting django".
type PrefixWriter struct {
	W      io.Writer
	Prefix string
	mid    bool
}

func (p *PrefixWriter) Write(b []byte) (int, error) {
	var out bytes.Buffer
	for _, c := range b {
		if !p.mid {
			out.WriteString(p.Prefix)
			p.mid = true
		}
		out.WriteByte(c)
		if c == '\n' {
			p.mid = false
		}
	}
	if _, err := p.W.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Flush ends an unterminated last line.
func (p *PrefixWriter) Flush() {
	if p.mid {
		p.W.Write([]byte("\n"))
		p.mid = false
	}
}

// credential is what a command needs to run as name: the user's ids and
// groups, and env with the user's HOME, USER and LOGNAME.
func credential(name string, env []string) (*syscall.Credential, []string, error) {
	u, err := LookupUser(name)
	if err != nil {
		return nil, nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("run_as %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("run_as %s: gid %q: %w", name, u.Gid, err)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k != "HOME" && k != "USER" && k != "LOGNAME" {
			out = append(out, kv)
		}
	}
	return cred, append(out, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username), nil
}

// LookupUser finds the user a run_as names: a name, or a numeric uid.
func LookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("run_as %s: %w", name, err)
	}
	return u, nil
}
