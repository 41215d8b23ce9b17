package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/reconciler-dev/reconciler/internal/health"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// preflightPort picks the loopback port the preflight's server listens on.
// A variable so that a test can hand out a port that is in use.
var preflightPort = freePort

// freePort asks the kernel for a free port on 127.0.0.1 and releases it
// for the preflight's server to take. Between the release and the
// server's bind another process may take it (a small race, as with any
// "port 0, then pass the number on" scheme): the server then fails to
// bind and exits, and the preflight fails saying the port is in use.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}

// preflight starts the step's server in the release on a free loopback
// port, named by RECONCILER_PREFLIGHT_PORT, runs its checks against it and
// stops it: SIGTERM to its process group, SIGKILL after the runner's
// grace, so nothing it started is left running. The step's timeout bounds
// the start and the checks. A server that exits before its checks pass,
// or a check that fails, fails the step with the server's last output.
func (e *executor) preflight(ctx context.Context, p *plan.Plan, s plan.Step) error {
	port, err := preflightPort()
	if err != nil {
		return fmt.Errorf("pick a loopback port: %w", err)
	}
	dir := e.l.ReleaseDir(s.Release)
	env := append(e.env(p, s.Release, s.Commit), "RECONCILER_PREFLIGHT_PORT="+strconv.Itoa(port))
	out := e.View.Output(s)
	if out == nil {
		out = io.Discard
	}
	logPath := e.l.StepLog(s.Release, s.Name)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	// The server's output may hold secrets: the log is the reconciler's alone.
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	e.stepLog = logPath

	srvCtx, stop := context.WithCancel(ctx)
	defer stop()
	exited := make(chan error, 1)
	go func() {
		exited <- e.Runner.Run(srvCtx, runner.Command{Name: "preflight", Script: s.Run, Dir: dir, Env: env,
			Output: io.MultiWriter(f, out), Contain: true, User: s.RunAs})
	}()

	checkCtx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	checked := make(chan error, 1)
	var passed []string // read once checked has sent: notes are told from this goroutine, as the view expects
	go func() {
		k := &health.Checker{Runner: e.Runner, Dir: dir, Env: env, User: s.RunAs}
		for _, c := range s.Checks {
			start := time.Now()
			if err := k.Run(checkCtx, c); err != nil {
				checked <- err
				return
			}
			passed = append(passed, fmt.Sprintf("passed %s (%s)", c.Name(), round(time.Since(start))))
		}
		checked <- nil
	}()

	var checkErr, runErr error
	early, stopped := false, ""
	select {
	case checkErr = <-checked:
		// A server that exited while the checks ran did not answer them:
		// whatever did holds the port.
		select {
		case runErr = <-exited:
			early = true
		default:
			// The stop is part of the step's time (a graceful shutdown:
			// gunicorn waits for its workers): say how much.
			start := time.Now()
			stop()
			runErr = <-exited
			stopped = fmt.Sprintf("stopped the server (%s)", round(time.Since(start)))
		}
	case runErr = <-exited:
		early = true
		cancel()
		<-checked
	}
	for _, n := range passed {
		e.View.Note(s, n)
	}
	if stopped != "" {
		e.View.Note(s, stopped)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var tail string
	var re *runner.Error
	if errors.As(runErr, &re) {
		tail = re.Tail
	}
	where := "127.0.0.1:" + strconv.Itoa(port)
	switch {
	case early:
		what := "exited"
		if runErr != nil {
			what = runErr.Error()
			if re != nil {
				what = re.Summary()
			}
		}
		msg := fmt.Sprintf("the new release's server (%s) stopped before its checks passed: %s", where, what)
		if portInUse(port) {
			msg += fmt.Sprintf("; port %d on 127.0.0.1 is in use by another process", port)
		}
		return &stepFailure{msg: msg, output: tail, err: runErr}
	case checkErr != nil:
		msg := fmt.Sprintf("the new release on %s: %v", where, checkErr)
		var he *health.Error
		if errors.As(checkErr, &he) {
			if tail == "" {
				tail = he.Output
			}
			// The step is described by its checks: name the check only
			// when there are several.
			which := "its check"
			if len(s.Checks) > 1 {
				which = he.Check
			}
			attempts := "1 attempt"
			if he.Attempts != 1 {
				attempts = strconv.Itoa(he.Attempts) + " attempts"
			}
			msg = fmt.Sprintf("the new release on %s failed %s after %s: %s", where, which, attempts, he.Last)
		}
		return &stepFailure{msg: msg, output: tail, err: checkErr}
	}
	return nil
}

// portInUse reports whether something listens on the loopback port: told
// apart from a server that failed on its own, a port taken in the race
// after freePort is the likely cause.
func portInUse(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	ln.Close()
	return false
}
