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
	"sync"
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

// preflightServer is a preflight's server running in its release.
type preflightServer struct {
	release string
	port    int
	dir     string
	env     []string
	logPath string
	log     *os.File
	out     *lateWriter
	exited  chan error
	stop    context.CancelFunc
	// stopped is closed when a server stopped in the background (after
	// its checks passed) has exited.
	stopped chan struct{}
	// withMigration: started as the migration started, on the schema
	// before it.
	withMigration bool
}

// startPreflight starts step s's server in its release on a free loopback
// port, named by RECONCILER_PREFLIGHT_PORT. Its output goes to the step's
// log, and to the view once the step has started (attach).
func (e *executor) startPreflight(ctx context.Context, p *plan.Plan, s plan.Step) (*preflightServer, error) {
	port, err := preflightPort()
	if err != nil {
		return nil, fmt.Errorf("pick a loopback port: %w", err)
	}
	srv := &preflightServer{release: s.Release, port: port, dir: e.l.ReleaseDir(s.Release),
		env:     append(e.env(p, s.Release, s.Commit), "RECONCILER_PREFLIGHT_PORT="+strconv.Itoa(port)),
		logPath: e.l.StepLog(s.Release, s.Name), exited: make(chan error, 1)}
	if err := os.MkdirAll(filepath.Dir(srv.logPath), 0o755); err != nil {
		return nil, err
	}
	// The server's output may hold secrets: the log is the reconciler's alone.
	srv.log, err = os.OpenFile(srv.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	srv.out = &lateWriter{log: srv.log}
	srvCtx, stop := context.WithCancel(ctx)
	srv.stop = stop
	go func() {
		srv.exited <- e.Runner.Run(srvCtx, runner.Command{Name: "preflight", Script: s.Run, Dir: srv.dir, Env: srv.env,
			Output: srv.out, Contain: true, User: s.RunAs})
	}()
	return srv, nil
}

// shutdown stops the server and waits for it: SIGTERM to its process
// group, SIGKILL after the runner's grace. It returns how the server
// ended.
func (srv *preflightServer) shutdown() error {
	srv.stop()
	err := <-srv.exited
	srv.log.Close()
	return err
}

// startPreflightEarly starts the server of the preflight that follows the
// migrate step s, if one does and none runs yet: with the migration
// (preflight.start: with_migrate) when withMigration, else once it ran,
// while the migrations are recorded. Either way the app's start (a second
// or so of Python) runs beside another one on the other core, and the
// checks run in the preflight step, after the migration.
func (e *executor) startPreflightEarly(ctx context.Context, p *plan.Plan, s plan.Step, withMigration bool) {
	if e.early != nil {
		return
	}
	for i, x := range p.Steps {
		if x.Action == s.Action && x.Name == s.Name && x.Release == s.Release && x.Rerun == s.Rerun {
			if i+1 < len(p.Steps) {
				next := p.Steps[i+1]
				if next.Action == plan.Preflight && next.Release == s.Release && (!withMigration || !next.AfterMigrate) {
					// A server that fails to start here is started again by
					// its step, which reports why.
					e.early, _ = e.startPreflight(ctx, p, next)
					if e.early != nil {
						e.early.withMigration = withMigration
					}
				}
			}
			return
		}
	}
}

// stopIdlePreflight starts stopping, in the background, the server whose
// checks passed.
func (e *executor) stopIdlePreflight() {
	srv := e.idle
	if srv == nil {
		return
	}
	e.idle = nil
	srv.stopped = make(chan struct{})
	e.stopping = srv
	go func() {
		srv.shutdown()
		close(srv.stopped)
	}()
}

// finishPreflight stops a server started early whose step did not run,
// and one whose checks passed, and waits for one stopping in the
// background: none outlives the apply.
func (e *executor) finishPreflight() {
	if e.early != nil {
		e.early.shutdown()
		e.early = nil
	}
	e.stopIdlePreflight()
	if e.stopping != nil {
		<-e.stopping.stopped
		e.stopping = nil
	}
}

// lateWriter writes to the log, and to the view once attached, replaying
// what the log holds so far: a server started before its step shows its
// whole output under the step.
type lateWriter struct {
	mu      sync.Mutex
	log     io.Writer
	early   []byte
	view    io.Writer
	dropped bool
}

// maxEarly bounds the output kept for the view before its step starts;
// the log has all of it.
const maxEarly = 64 << 10

func (w *lateWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.view != nil {
		w.view.Write(b)
	} else if len(w.early)+len(b) <= maxEarly {
		w.early = append(w.early, b...)
	} else {
		w.dropped = true
	}
	return w.log.Write(b)
}

func (w *lateWriter) attach(view io.Writer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if view == nil {
		view = io.Discard
	}
	if w.view != nil {
		w.view = view
		return
	}
	view.Write(w.early)
	if w.dropped {
		fmt.Fprintf(view, "[more output in the step's log]\n")
	}
	w.view, w.early = view, nil
}

// preflight runs the step's checks against its server — the one started
// with the migration or while the migrations were recorded, or a new one —
// then stops the server: in the background when the checks passed (it
// serves no one, and the apply waits for it before it returns), at once
// otherwise. A server that started with the migration and fails is
// started again, now that the migration is done, and that one decides:
// its start may have needed the new schema. The step's timeout bounds the
// starts and the checks. A server that exits before its checks pass, or a
// check that fails, fails the step with the server's last output.
func (e *executor) preflight(ctx context.Context, p *plan.Plan, s plan.Step) error {
	srv := e.early
	e.early = nil
	if srv != nil && srv.release != s.Release {
		srv.shutdown()
		srv = nil
	}
	deadline := time.Now().Add(s.Timeout)
	for {
		if srv == nil {
			var err error
			if srv, err = e.startPreflight(ctx, p, s); err != nil {
				return err
			}
		}
		err := e.checkPreflight(ctx, s, srv, deadline)
		if err == nil || !srv.withMigration || ctx.Err() != nil || !time.Now().Before(deadline) {
			return err
		}
		// Started on the schema before the migration: if the migration
		// may have changed it, the start may have needed the new one.
		if !e.schemaMayHaveChanged() {
			return err
		}
		e.View.Note(s, fmt.Sprintf("the server started with the migration failed (%v); starting it again on the migrated schema", err))
		srv = nil
	}
}

// checkPreflight runs the checks against srv and stops it.
func (e *executor) checkPreflight(ctx context.Context, s plan.Step, srv *preflightServer, deadline time.Time) error {
	srv.out.attach(e.View.Output(s))
	e.stepLog = srv.logPath
	dir, env, port, exited := srv.dir, srv.env, srv.port, srv.exited
	background := false
	defer func() {
		if !background {
			srv.stop()
			srv.log.Close()
		}
	}()

	checkCtx, cancel := context.WithDeadline(ctx, deadline)
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
	early := false
	select {
	case checkErr = <-checked:
		// A server that exited while the checks ran did not answer them:
		// whatever did holds the port.
		select {
		case runErr = <-exited:
			early = true
		default:
			if checkErr == nil && ctx.Err() == nil {
				// Passed: the server, idle, stops once the health check
				// is done (stopIdlePreflight): a stop is a second start's
				// worth of work (gunicorn waits for its workers, Python
				// tears down) that would slow the new workers' start.
				background = true
				srv.out.attach(io.Discard) // what it says while it stops is the log's
				e.idle = srv
			} else {
				srv.stop()
				runErr = <-exited
			}
		}
	case runErr = <-exited:
		early = true
		cancel()
		<-checked
	}
	for _, n := range passed {
		e.View.Note(s, n)
	}
	if background {
		e.View.Note(s, "the server stops after the health check")
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
