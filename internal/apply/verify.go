package apply

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/health"
	"github.com/reconciler-dev/reconciler/internal/layout"
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
		msg += "; there is no previous release to return to, so the link stays on it"
	case e.PreviousErr != nil:
		msg += fmt.Sprintf("; returned to %s, which fails its health check too: %v", e.RevertedTo, e.PreviousErr)
	default:
		msg += "; returned to " + e.RevertedTo + ", which passes its health check"
	}
	return msg
}

func (e *HealthError) Unwrap() error { return e.Err }

// cwdTimeout is how long the old processes of a reloaded service have to
// go: after a graceful reload, old workers finish their requests first.
var cwdTimeout = 15 * time.Second

// verify checks that release serves: the services' processes run from it,
// then the services' checks, then the global checks, in order.
func (e *executor) verify(ctx context.Context, release, commit string) error {
	for _, svc := range e.Desired.Services {
		if services.HasPID(svc) {
			if err := e.checkCwd(ctx, svc, release); err != nil {
				return err
			}
		}
	}
	k := &health.Checker{Runner: e.Runner, Dir: e.l.ReleaseDir(release), Env: e.envFor(release, commit)}
	var checks []desired.Check
	for _, svc := range e.Desired.Services {
		checks = append(checks, svc.Health...)
	}
	checks = append(checks, e.Desired.Health...)
	for _, c := range checks {
		start := time.Now()
		if err := k.Run(ctx, c); err != nil {
			return err
		}
		fmt.Fprintf(e.out, "  passed %s (%s)\n", c.Name(), round(time.Since(start)))
	}
	return nil
}

// checkCwd waits until the service's main process and its children run
// from release. A process still in another release is serving old code:
// the classic failure of a reload of an app server that resolved the link
// once, at start. A process outside every release is not judged.
func (e *executor) checkCwd(ctx context.Context, svc desired.Service, release string) error {
	releases := e.l.ReleasesDir()
	if real, err := filepath.EvalSymlinks(releases); err == nil {
		releases = real
	}
	want := filepath.Join(releases, release)
	deadline := time.Now().Add(cwdTimeout)
	var last string
	for {
		pid, err := procs.MainPID(ctx, e.Runner, svc, e.Desired.Root, e.env(e.release))
		if err != nil {
			last = fmt.Sprintf("service %s: no main process: %v", svc.Name, err)
		} else {
			var stale []string
			for _, p := range procs.Tree(pid) {
				cwd, err := procs.Cwd(p)
				if err != nil || !procs.Alive(p) {
					continue
				}
				cwd = strings.TrimSuffix(cwd, " (deleted)")
				if cwd == want || strings.HasPrefix(cwd, want+"/") || !strings.HasPrefix(cwd, releases+"/") {
					continue
				}
				rel, _ := filepath.Rel(releases, cwd)
				stale = append(stale, fmt.Sprintf("pid %d in releases/%s", p, strings.SplitN(rel, "/", 2)[0]))
			}
			if len(stale) == 0 {
				fmt.Fprintf(e.out, "  passed %s runs from releases/%s (pid %d)\n", svc.Name, release, pid)
				return nil
			}
			last = fmt.Sprintf("service %s still runs from the old release after %s (%s), not from releases/%s: it serves the old code. "+
				"Use action: restart, or a reload that re-executes from the link (gunicorn: start it with --chdir <root>/%s)",
				svc.Name, svc.Action, strings.Join(stale, ", "), release, e.Desired.Link)
		}
		if time.Now().After(deadline) {
			return errors.New(last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// revert returns the link to the previous release after the target failed
// step (a service action or the health check): switch back, act on the services again, check the
// previous release, and only then record the target failed — so the link
// never points at a release recorded failed.
func (e *executor) revert(ctx context.Context, step string, cause error) error {
	failed := e.release
	herr := &HealthError{Release: failed, Err: errors.Unwrap(cause)}
	if herr.Err == nil {
		herr.Err = cause
	}
	prev := e.previous
	markFailed := func() error {
		rec, err := record.ReadRelease(e.l.RecordFile(failed))
		if err != nil {
			return err
		}
		rec.State = record.Failed
		rec.Failure = &record.Failure{Step: step, Error: herr.Err.Error(), At: e.Now().UTC()}
		return record.WriteRelease(e.l.RecordFile(failed), rec)
	}
	if prev == "" || prev == failed {
		if err := markFailed(); err != nil {
			return err
		}
		return herr
	}
	prevRec, err := record.ReadRelease(e.l.RecordFile(prev))
	if err != nil || prevRec.State != record.Complete {
		return fmt.Errorf("%v; cannot return to %s: it is not a complete release (%v)", herr, prev, err)
	}
	e.log.Warn("health check failed; reverting", zap.String("to", prev))
	fmt.Fprintf(e.out, "\nHealth check failed: returning to releases/%s.\n", prev)
	e.release, e.commit = prev, prevRec.Commit
	defer func() { e.release = failed }()
	err = e.step(ctx, plan.Step{Action: plan.Switch, Release: prev, Name: e.Desired.Link, Detail: layout.LinkTarget(prev), Reason: "revert"}, func() error {
		if err := fsx.SwitchLink(e.l.LinkPath(), layout.LinkTarget(prev)); err != nil {
			return err
		}
		return record.WriteHost(e.l.HostFile(), &record.Host{Linked: prev, Previous: failed, SwitchedAt: e.Now().UTC(), ServicesDone: len(e.Desired.Services) == 0})
	})
	if err != nil {
		return fmt.Errorf("%v; returning to %s failed: %w", herr, prev, err)
	}
	herr.RevertedTo = prev
	if err := markFailed(); err != nil {
		return err
	}
	for _, svc := range e.Desired.Services {
		s := plan.Step{Action: plan.Service, Release: prev, Name: svc.Name, Detail: svc.Action, Reason: "revert"}
		if err := e.step(ctx, s, func() error { return e.service(ctx, svc.Name, prev, prevRec.Commit) }); err != nil {
			herr.PreviousErr = err
			return herr
		}
	}
	if err := e.updateHost(func(h *record.Host) { h.ServicesDone = true }); err != nil {
		return err
	}
	s := plan.Step{Action: plan.Health, Release: prev, Name: "health", Detail: plan.HealthDetail(e.Desired), Reason: "revert"}
	if err := e.step(ctx, s, func() error { return e.verify(ctx, prev, prevRec.Commit) }); err != nil {
		herr.PreviousErr = errors.Unwrap(err)
		return herr
	}
	if err := e.updateHost(func(h *record.Host) { h.Verified = true }); err != nil {
		return err
	}
	return herr
}
