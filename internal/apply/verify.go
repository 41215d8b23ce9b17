package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/health"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/procs"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/services"
)

// HealthError is a release that failed after the switch: a service did not
// restart or reload, or a health check did not pass.
type HealthError struct {
	Release    string // the release that failed
	Err        error  // the check that failed, with its last output
	RevertedTo string // the release the link returned to; "" when there was none
	// PreviousErr is set when the release returned to fails its checks too.
	PreviousErr error
}

func (e *HealthError) Error() string {
	msg := fmt.Sprintf("release %s failed after the switch: %v", e.Release, e.Err)
	switch {
	case e.RevertedTo == "":
		msg += "; there is no release that served healthy to return to, so the link stays on it"
	case e.PreviousErr != nil:
		msg += fmt.Sprintf("; returned to %s, which fails too: %v", e.RevertedTo, e.PreviousErr)
	default:
		msg += "; returned to " + e.RevertedTo + ", which serves"
	}
	return msg
}

func (e *HealthError) Unwrap() error { return e.Err }

// cwdTimeout is how long the old processes of a reloaded service have to
// go: after a graceful reload, old workers finish their requests first.
var cwdTimeout = 15 * time.Second

// verify checks that the step's release serves: the services' processes
// run from it, then the checks, in order.
//
// The step's budget is its longest check timeout (cwdTimeout when it has no
// checks): the wait for the services' processes and every check end within
// it, so a check with timeout: 15s is over in 15 s, not after another 15 s
// of waiting for old workers first.
func (e *executor) verify(ctx context.Context, p *plan.Plan, s plan.Step) error {
	budget := stepBudget(s.Checks)
	deadline := e.Now().Add(budget)
	proof := checksProve(s.Checks)
	var draining []oldProcess
	for _, svc := range s.Services {
		d, err := e.checkCwd(ctx, p, s, svc, deadline, proof)
		if err != nil {
			return err
		}
		draining = append(draining, d...)
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	k := &health.Checker{Runner: e.Runner, Dir: e.l.ReleaseDir(s.Release), Env: e.env(p, s.Release, s.Commit), User: s.RunAs}
	if len(draining) > 0 {
		k.Settling = func() bool {
			for _, o := range draining {
				if o.alive() {
					return true
				}
			}
			return false
		}
	}
	for _, c := range s.Checks {
		start := e.Now()
		if err := k.Run(ctx, c); err != nil {
			return err
		}
		e.View.Note(s, fmt.Sprintf("passed %s (%s)", c.Name(), round(e.Now().Sub(start))))
	}
	return nil
}

// stepBudget is how long a health step may take in all: its longest
// check timeout, or cwdTimeout when it has no checks.
func stepBudget(checks []desired.Check) time.Duration {
	if len(checks) == 0 {
		return cwdTimeout
	}
	var b time.Duration
	for _, c := range checks {
		b = max(b, c.Timeout)
	}
	return b
}

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}

// checkCwd waits until the service's main process and its children run
// from the release, until budget or cwdTimeout, whichever comes first. A
// process still in another release is serving old code: the classic
// failure of a reload of an app server that resolved the link once, at
// start. A process outside every release is not judged.
func (e *executor) checkCwd(ctx context.Context, p *plan.Plan, s plan.Step, svc desired.Service, budget time.Time, proof string) ([]oldProcess, error) {
	deadline := e.Now().Add(cwdTimeout)
	if budget.Before(deadline) {
		deadline = budget
	}
	var last string
	pid := 0 // the main process, asked of the manager once and again only when it is gone
	for {
		var pl procs.Placement
		var err error
		if pid != 0 {
			if pl, err = procs.Place(pid, e.l.ReleasesDir()); err != nil {
				pid = 0
			}
		}
		if pid == 0 {
			if pl, err = e.where(ctx, p, s, svc); err == nil {
				pid = pl.PID
			}
		}
		if err != nil {
			last = fmt.Sprintf("service %s: no main process: %v", svc.Name, err)
		} else if stale := pl.InOtherReleases(s.Release); len(stale) == 0 {
			e.View.Note(s, fmt.Sprintf("passed %s runs from releases/%s (pid %d)", svc.Name, s.Release, pl.PID))
			return nil, nil
		} else if old := e.drainingOnly(svc, pl, s, stale, proof); old != nil {
			e.View.Note(s, fmt.Sprintf("passed %s runs from releases/%s (pid %d); %d old %s still stopping",
				svc.Name, s.Release, pl.PID, len(old), plural(len(old), "process", "processes")))
			return old, nil
		} else {
			var where []string
			for _, x := range stale {
				where = append(where, fmt.Sprintf("pid %d in releases/%s", x.PID, x.Release))
			}
			last = fmt.Sprintf("service %s still runs from the old release after %s (%s), not from releases/%s: it serves the old code. "+
				"Use action: restart, or a reload that re-executes from the link (gunicorn: start it with --chdir <root>/%s)",
				svc.Name, svc.Action, strings.Join(where, ", "), s.Release, p.Link)
		}
		if e.Now().After(deadline) {
			return nil, errors.New(last)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// oldProcess is a process of a service from before its reload: a pid and
// its start time, which tell it from a later process given the same pid.
type oldProcess struct {
	pid   int
	start uint64
}

func (o oldProcess) alive() bool { return procs.Alive(o.pid) && procs.StartTime(o.pid) == o.start }

// notePreReload records the processes of a supervisor program about to be
// reloaded (a millisecond over XML-RPC): the health step tells its old
// workers, still stopping, from processes started in the wrong release.
func (e *executor) notePreReload(ctx context.Context, p *plan.Plan, s plan.Step, svc desired.Service) {
	if svc.Action != desired.ActionReload {
		return
	}
	pl, err := e.where(ctx, p, s, svc)
	if err != nil {
		return
	}
	before := map[int]uint64{}
	for _, x := range pl.Procs {
		if t := procs.StartTime(x.PID); t != 0 {
			before[x.PID] = t
		}
	}
	if e.preReload == nil {
		e.preReload = map[string]map[int]uint64{}
	}
	e.preReload[svc.Name] = before
}

// drainingOnly returns the stale processes when each of them was already
// running before the reload (old workers, sent on their way and finishing
// their requests: gunicorn stops them right after it forks the new ones)
// and the main process and at least one process started since run from
// release; nil otherwise. A process started since the reload in another
// release — gunicorn without --chdir — is never excused.
func (e *executor) drainingOnly(svc desired.Service, pl procs.Placement, s plan.Step, stale []procs.Process, proof string) []oldProcess {
	release := s.Release
	before := e.preReload[svc.Name]
	if proof == "" || before == nil || len(pl.Procs) == 0 || pl.Procs[0].Release != release {
		return nil
	}
	fresh := false
	for _, x := range pl.Procs {
		if _, ok := before[x.PID]; !ok && x.Release == release {
			fresh = true
		}
	}
	if !fresh {
		return nil
	}
	var old []oldProcess
	for _, x := range stale {
		start, ok := before[x.PID]
		if !ok || procs.StartTime(x.PID) != start {
			return nil
		}
		if proof == proofCommit {
			// An old release of the same commit would answer the check
			// as the new one does.
			if rec, err := record.ReadRelease(e.l.RecordFile(x.Release)); err != nil || rec == nil || rec.Commit == s.Commit {
				return nil
			}
		}
		old = append(old, oldProcess{x.PID, start})
	}
	return old
}

// What the checks' answers prove about the code that gave them.
const (
	proofRelease = "release" // every expected body names the release
	proofCommit  = "commit"  // every expected body names the release or the commit
)

// checksProve says whether every check is an HTTP check whose expected
// body names the release or the commit: its answer then proves which code
// gave it, so old processes still stopping cannot pass it for the new
// release, and need not be waited for. "" when a check proves nothing.
func checksProve(checks []desired.Check) string {
	if len(checks) == 0 {
		return ""
	}
	proof := proofRelease
	for _, c := range checks {
		switch {
		case c.Kind != desired.CheckHTTP:
			return ""
		case strings.Contains(c.Body, "RECONCILER_RELEASE"):
		case strings.Contains(c.Body, "RECONCILER_COMMIT"):
			proof = proofCommit
		default:
			return ""
		}
	}
	return proof
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// where finds the service's main process and where it runs: a program of
// a supervisord the reconciler reaches over XML-RPC is asked that way (a
// millisecond), anything else as procs.Where asks (supervisorctl pid: a
// Python start-up, 0.3 s and more).
func (e *executor) where(ctx context.Context, p *plan.Plan, s plan.Step, svc desired.Service) (procs.Placement, error) {
	if sup := e.supervisord(svc); sup != nil && !strings.HasSuffix(svc.Program, ":*") && svc.PIDFile == "" {
		info, err := sup.ProcessInfo(ctx, svc.Program)
		switch {
		case err != nil:
			return procs.Placement{}, err
		case info.PID <= 0:
			return procs.Placement{}, &procs.NotRunningError{Why: "supervisor: " + info.State}
		}
		return procs.Place(info.PID, e.l.ReleasesDir())
	}
	return procs.Where(ctx, e.Runner, svc, p.Root, e.env(p, s.Release, s.Commit), e.l.ReleasesDir())
}

// supervisord is the service's supervisord over XML-RPC, or nil when the
// service is not supervisor's or its server is not known without
// supervisorctl's own search (then supervisorctl is run).
func (e *executor) supervisord(svc desired.Service) *services.Supervisord {
	if svc.Manager != desired.ManagerSupervisor {
		return nil
	}
	sup, why := services.SupervisorRPC(svc.Supervisor)
	if sup == nil {
		e.log.Debug("supervisorctl instead of xml-rpc", zap.String("service", svc.Name), zap.String("why", why))
	}
	return sup
}

// serviceAction performs a service step: over supervisord's XML-RPC
// interface when the step names a supervisor program whose server is
// known, the step's script otherwise (the same action, through
// supervisorctl: one Python start-up per call).
func (e *executor) serviceAction(ctx context.Context, p *plan.Plan, s plan.Step) error {
	if len(s.Services) == 1 {
		if sup := e.supervisord(s.Services[0]); sup != nil {
			e.notePreReload(ctx, p, s, s.Services[0])
			out := e.View.Output(s)
			if out == nil {
				out = io.Discard
			}
			if s.Timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, s.Timeout)
				defer cancel()
			}
			e.log.Info("service action", zap.String("service", s.Name), zap.String("action", s.Detail), zap.String("supervisord", sup.Server))
			return sup.Act(ctx, s.Services[0], out)
		}
	}
	return e.command(ctx, p, s, "", p.Root, false)
}

// revert follows a service action or health check that failed in a plan
// moving forward: the host is observed again and the revert planned from
// what is there — a plan like any other, shown, performed by the same
// loop and recorded in the history as an apply of its own.
func (e *executor) revert(ctx context.Context, failed plan.Step, cause error) error {
	herr := &HealthError{Release: failed.Release, Err: cause}
	var ae *Error
	if errors.As(cause, &ae) {
		herr.Err = ae.Err
	}
	f := record.Failure{Step: failedStepName(failed), Error: herr.Err.Error()}
	var sf *stepFailure
	if errors.As(cause, &sf) {
		f.Output = sf.output
	}
	a, err := actual.Observe(ctx, e.Desired, nil)
	if err != nil {
		return fmt.Errorf("%v; observing the host to revert: %w", herr, err)
	}
	rp := plan.Revert(e.Desired, a, failed.Release, f)
	e.res.Revert = rp
	e.View.Reverting(rp)
	// The revert is an apply of its own in the history, its steps
	// recorded under its id.
	id, from := history.RevertID(e.id), e.linked()
	e.recID = id
	defer func() { e.recID = e.id }()
	start := e.Now()
	rerr := e.perform(ctx, rp)
	if rp.Target != failed.Release {
		herr.RevertedTo = rp.Target
	}
	if rerr != nil {
		var re *Error
		herr.PreviousErr = rerr
		if errors.As(rerr, &re) {
			herr.PreviousErr = re.Err
		}
	}
	to := history.Ref{Release: rp.Target, Commit: rp.Commit}
	if r := a.Release(rp.Target); r != nil && r.Record != nil {
		to.Commit = r.Record.Commit
	}
	rec := e.applyRecord(id, "revert", from, to)
	rec.Result, rec.Duration = history.ResultOK, e.Now().Sub(start).Seconds()
	if rerr != nil {
		rec.Result, rec.Error = history.ResultFailed, rerr.Error()
	}
	if err := history.Append(e.l.HistoryFile(), rec); err != nil && rerr == nil {
		return fmt.Errorf("%v; %w", herr, err)
	}
	return herr
}

// failedStepName is how a failure after the switch is recorded: "health",
// or "service web".
func failedStepName(s plan.Step) string {
	if s.Action == plan.Service {
		return "service " + s.Name
	}
	return s.Name
}
