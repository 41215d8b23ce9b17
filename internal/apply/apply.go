package apply

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/lock"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/services"
)

// Git is what an apply needs of the git cache.
type Git interface {
	actual.Git
	Fetch(ctx context.Context) error
	Export(ctx context.Context, sha, subpath, dest string) error
	// Repair clones the cache afresh after an export found it damaged.
	Repair(ctx context.Context, cause error) error
}

// Options configure one apply.
type Options struct {
	Desired      *desired.State
	Git          Git
	Runner       *runner.Runner
	Log          *zap.Logger
	Out          io.Writer // progress for people; nil for none
	Retry        bool
	LockTimeout  time.Duration
	Trigger      string           // what started the apply: "cli", "schedule", ...
	ConfigCommit string           // the config repository commit of the desired file, if any
	Env          []string         // base environment of commands, usually os.Environ()
	Now          func() time.Time // the clock; time.Now when nil
}

// StepResult is what happened to one step.
type StepResult struct {
	plan.Step
	Result   string  `json:"result"`
	Duration float64 `json:"duration_s"`
	Error    string  `json:"error,omitempty"`
}

// Result is what an apply did.
type Result struct {
	ApplyID string       `json:"apply_id"`
	Plan    *plan.Plan   `json:"plan"`
	Release string       `json:"release,omitempty"` // the target's name
	Steps   []StepResult `json:"steps"`
	Result  string       `json:"result"`
	Error   string       `json:"error,omitempty"`
}

type executor struct {
	Options
	l        layout.Layout
	id       string
	log      *zap.Logger
	out      io.Writer
	res      *Result
	release  string          // the release being built
	rec      *record.Release // its record
	commit   string
	linked   string // where the link pointed before this apply
	previous string // the rollback target: where a failed health check returns
	holding  bool   // the target is blocked; the steps keep the last good release
}

// Apply takes the root's lock and reconciles the host with opts.Desired.
// The returned Result is non-nil whenever the lock was taken.
func Apply(ctx context.Context, opts Options) (*Result, error) {
	d := opts.Desired
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	e := &executor{Options: opts, l: layout.New(d.Root, d.Link), id: newID(opts.Now())}
	e.log = opts.Log.With(zap.String("apply_id", e.id))
	e.out = opts.Out
	if e.out == nil {
		e.out = io.Discard
	}
	for _, dir := range []string{d.Root, e.l.StateDir(), e.l.ReleasesDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, classify("", fmt.Errorf("create %s: %w", dir, err))
		}
	}
	lk, err := lock.Acquire(ctx, e.l.LockFile(), opts.LockTimeout)
	if err != nil {
		return nil, classify("", err)
	}
	defer lk.Release()
	start := opts.Now()
	e.res = &Result{ApplyID: e.id, Steps: []StepResult{}}
	err = e.run(ctx)
	e.res.Result = history.ResultOK
	switch {
	case errors.As(err, new(*BlockedError)):
		e.res.Result = history.ResultBlocked
	case err != nil:
		e.res.Result = history.ResultFailed
	case e.res.Plan != nil && !e.res.Plan.Changes():
		e.res.Result = history.ResultNoop
	}
	if err != nil {
		e.res.Error = err.Error()
	}
	rec := history.Record{Time: opts.Now().UTC(), Kind: history.KindApply, ApplyID: e.id, Trigger: opts.Trigger, ConfigCommit: opts.ConfigCommit,
		Commit: e.commit, Release: e.res.Release, Result: e.res.Result, Duration: opts.Now().Sub(start).Seconds(), Error: e.res.Error}
	if herr := history.Append(e.l.HistoryFile(), rec); herr != nil && err == nil {
		err = herr
	}
	if err != nil {
		// Not logged here: the caller reports the error it is given.
		e.log.Info("apply done", zap.String("result", e.res.Result), zap.Duration("elapsed", opts.Now().Sub(start)))
		if errors.As(err, new(*BlockedError)) {
			return e.res, err
		}
		return e.res, classify("", err)
	}
	e.log.Info("apply done", zap.String("result", e.res.Result), zap.Duration("elapsed", opts.Now().Sub(start)))
	return e.res, nil
}

func newID(t time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Plan observes the host and plans. Which releases live processes run
// from is asked of /proc only when the plan prunes: the scan reads every
// process, milliseconds on a busy host, and a converged apply prunes
// nothing.
func Plan(ctx context.Context, d *desired.State, git actual.Git, opts plan.Options) (*plan.Plan, *actual.State, error) {
	a, err := actual.Observe(ctx, d, git)
	if err != nil {
		return nil, nil, err
	}
	p, err := plan.Make(d, a, opts)
	if err != nil || !p.Prunes() {
		return p, a, err
	}
	a.InUse = actual.ObserveInUse(d)
	p, err = plan.Make(d, a, opts)
	return p, a, err
}

func (e *executor) observeAndPlan(ctx context.Context) (*plan.Plan, error) {
	p, a, err := Plan(ctx, e.Desired, e.Git, plan.Options{Retry: e.Retry})
	if a != nil {
		e.linked = a.Link.Release
	}
	return p, err
}

func (e *executor) run(ctx context.Context) error {
	e.cleanTemp()
	p, err := e.observeAndPlan(ctx)
	if err != nil {
		return err
	}
	e.res.Plan = p
	if err := plan.RenderText(e.out, p); err != nil {
		return err
	}
	if p.NeedsFetch() {
		if err := e.step(ctx, p.Steps[0], func() error { return e.Git.Fetch(ctx) }); err != nil {
			return err
		}
		p, err = e.observeAndPlan(ctx)
		if err != nil {
			return err
		}
		if p.NeedsFetch() {
			return fmt.Errorf("commit %q is not in %s, even after a fetch", e.Desired.Source.Commit, e.Desired.Source.Repo)
		}
		e.res.Plan = p
		fmt.Fprintf(e.out, "\nFetched: %s is %s. %s\n", p.Ref, p.Commit, remaining(p))
	}
	e.commit = p.Commit
	e.res.Release = p.Target
	if p.Blocked != nil {
		blocked := &BlockedError{Release: p.Blocked.Release, Step: p.Blocked.Step, Msg: p.Blocked.Error}
		if !p.Changes() {
			return blocked
		}
		if err := e.hold(ctx, p); err != nil {
			return err
		}
		return blocked
	}
	if p.Target != plan.NewRelease {
		e.release = p.Target
	}
	return e.perform(ctx, p)
}

// hold performs a blocked plan's steps, which keep the host on its last
// good release. They never revert: there is nothing better to return to.
func (e *executor) hold(ctx context.Context, p *plan.Plan) error {
	rec, err := record.ReadRelease(e.l.RecordFile(p.Holding))
	if err != nil {
		return fmt.Errorf("release %s: %w", p.Holding, err)
	}
	fmt.Fprintf(e.out, "\nThe target is blocked: keeping the host on releases/%s, the last good release.\n", p.Holding)
	target := e.commit
	e.release, e.commit, e.holding = p.Holding, rec.Commit, true
	defer func() { e.commit = target }()
	return e.perform(ctx, p)
}

// perform runs the plan's steps after the fetch, in order.
func (e *executor) perform(ctx context.Context, p *plan.Plan) error {
	servicesLeft, healthPlanned := 0, false
	for _, s := range p.Steps {
		switch s.Action {
		case plan.Service:
			servicesLeft++
		case plan.Health:
			healthPlanned = true
		}
	}
	e.previous = p.Previous
	for _, s := range p.Steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		switch s.Action {
		case plan.Fetch:
			continue // done above
		case plan.Create:
			err = e.step(ctx, s, e.create)
			e.res.Release = e.release
		case plan.Export:
			err = e.releaseStep(ctx, s, func() error { return e.export(ctx) })
		case plan.Shared:
			err = e.releaseStep(ctx, s, e.linkShared)
		case plan.Build, plan.Migrate:
			err = e.releaseStep(ctx, s, func() error { return e.command(ctx, s) })
		case plan.Switch:
			err = e.step(ctx, s, func() error { return e.switchLink(servicesLeft == 0, !healthPlanned) })
		case plan.Service:
			err = e.step(ctx, s, func() error { return e.service(ctx, s.Name, e.release, e.commit) })
			servicesLeft--
			if err != nil && ctx.Err() == nil && !e.holding {
				// A service that would not restart or reload is not
				// serving the release: return to the previous one.
				err = e.revert(ctx, "service "+s.Name, err)
			} else if err == nil && servicesLeft == 0 {
				err = e.updateHost(func(h *record.Host) { h.ServicesDone, h.Verified = true, !healthPlanned })
			}
		case plan.Health:
			err = e.step(ctx, s, func() error { return e.verify(ctx, e.release, e.commit) })
			if err == nil {
				// The services acted before the check (a failed action
				// reverts), so both are done.
				err = e.updateHost(func(h *record.Host) { h.ServicesDone, h.Verified = true, true })
			} else if ctx.Err() == nil && !e.holding {
				err = e.revert(ctx, "health", err)
			}
		case plan.Prune:
			err = e.step(ctx, s, func() error { return e.prune(s.Release) })
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func remaining(p *plan.Plan) string {
	if !p.Changes() {
		return "No more changes."
	}
	return "Remaining " + strings.ToLower(plan.Summary(p)[:1]) + plan.Summary(p)[1:]
}

// cleanTemp removes what an interrupted apply left in its scratch places:
// temporary links beside the link and staged releases. Neither is ever
// seen by services: the link is only ever the result of a rename.
func (e *executor) cleanTemp() {
	if matches, _ := filepath.Glob(filepath.Join(e.Desired.Root, "."+e.Desired.Link+".tmp-*")); len(matches) > 0 {
		for _, m := range matches {
			os.Remove(m)
		}
	}
	os.RemoveAll(e.l.TmpDir())
}

// step runs one plan step, prints and records it.
func (e *executor) step(ctx context.Context, s plan.Step, fn func() error) error {
	if s.Release == plan.NewRelease && e.release != "" {
		s.Release = e.release // named when it was created
		if s.Action == plan.Switch {
			s.Detail = layout.LinkTarget(e.release)
		}
	}
	title := fmt.Sprintf("%s %s", s.Action, plan.Describe(s))
	fmt.Fprintf(e.out, "\n%s %s\n", s.Action.Symbol(), title)
	log := e.log.With(zap.String("step", string(s.Action)), zap.String("name", s.Name))
	start := e.Now()
	err := fn()
	dur := e.Now().Sub(start)
	sr := StepResult{Step: s, Result: history.ResultOK, Duration: dur.Seconds()}
	if err != nil {
		sr.Result, sr.Error = history.ResultFailed, err.Error()
		fmt.Fprintf(e.out, "  FAILED %s after %s\n  %s\n", title, round(dur), strings.ReplaceAll(err.Error(), "\n", "\n  "))
		log.Info("step failed", zap.Duration("elapsed", dur)) // the error goes up, not to the log
	} else {
		fmt.Fprintf(e.out, "  ok %s (%s)\n", title, round(dur))
		log.Info("step done", zap.Duration("elapsed", dur))
	}
	e.res.Steps = append(e.res.Steps, sr)
	hr := history.Record{Time: e.Now().UTC(), Kind: history.KindStep, ApplyID: e.id, Trigger: e.Trigger, Commit: e.commit,
		Release: e.release, Step: title, Result: sr.Result, Duration: sr.Duration, Error: sr.Error}
	if herr := history.Append(e.l.HistoryFile(), hr); herr != nil && err == nil {
		err = herr
	}
	if err != nil {
		return classify(title, err)
	}
	return nil
}

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}

// releaseStep runs a step that builds the release and records it done, or
// records the release failed. When the last build step is done the release
// is recorded complete: only then may the link point at it.
func (e *executor) releaseStep(ctx context.Context, s plan.Step, fn func() error) error {
	if e.rec == nil {
		rec, err := record.ReadRelease(e.l.RecordFile(e.release))
		if err != nil {
			return classify(string(s.Action), fmt.Errorf("release %s: %w", e.release, err))
		}
		e.rec = rec
	}
	if e.rec.State == record.Failed {
		// --retry: the release builds again from the step that failed.
		e.rec.State, e.rec.Failure = record.Building, nil
		if err := e.writeRecord(); err != nil {
			return err
		}
	}
	def := e.stepDef(s.Name)
	start := e.Now()
	err := e.step(ctx, s, fn)
	if err != nil {
		if ctx.Err() != nil {
			// Stopped from outside (SIGTERM, a deadline): not the
			// release's fault, so it stays resumable, not failed.
			return err
		}
		e.rec.State = record.Failed
		e.rec.Failure = &record.Failure{Step: s.Name, Error: errors.Unwrap(err).Error(), At: e.Now().UTC()}
		if werr := e.writeRecord(); werr != nil {
			// The release stays "building": the next apply resumes it.
			return fmt.Errorf("%w; recording the failure failed too: %v", err, werr)
		}
		return err
	}
	e.rec.Steps = append(e.rec.Steps, record.Step{Name: def.Name, Fingerprint: def.Fingerprint(), Finished: e.Now().UTC(), Duration: e.Now().Sub(start)})
	if e.allStepsDone(e.rec) {
		now := e.Now().UTC()
		e.rec.State, e.rec.Completed = record.Complete, &now
	}
	return e.writeRecord()
}

func (e *executor) allStepsDone(rec *record.Release) bool {
	for _, st := range plan.ReleaseSteps(e.Desired) {
		if !rec.Done(st.Name, st.Fingerprint()) {
			return false
		}
	}
	return true
}

func (e *executor) stepDef(name string) desired.Step {
	for _, st := range plan.ReleaseSteps(e.Desired) {
		if st.Name == name {
			return st
		}
	}
	panic("plan step " + name + " is not a release step") // plan and ReleaseSteps share one list
}

func (e *executor) writeRecord() error {
	if err := record.WriteRelease(e.l.RecordFile(e.release), e.rec); err != nil {
		return classify("record", err)
	}
	return nil
}

// create makes the new release directory with its record already inside:
// it is staged under .reconciler/tmp and renamed into releases/, so no
// release directory ever exists without a record.
func (e *executor) create() error {
	now := e.Now()
	var name string
	for n := 0; ; n++ {
		name = layout.ReleaseName(now, e.commit, n)
		if _, err := os.Lstat(e.l.ReleaseDir(name)); errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	stage := filepath.Join(e.l.TmpDir(), name)
	if err := os.MkdirAll(filepath.Join(stage, layout.RecordDirName, "logs"), 0o755); err != nil {
		return err
	}
	rec := &record.Release{Name: name, App: e.Desired.App, Commit: e.commit, Fingerprint: e.Desired.Fingerprint(),
		State: record.Building, Created: now.UTC(), Steps: []record.Step{}}
	if err := record.WriteRelease(filepath.Join(stage, layout.RecordDirName, "release.json"), rec); err != nil {
		return err
	}
	if err := os.Rename(stage, e.l.ReleaseDir(name)); err != nil {
		return err
	}
	if err := fsx.SyncDir(e.l.ReleasesDir()); err != nil {
		return err
	}
	e.release, e.rec = name, rec
	e.log = e.log.With(zap.String("release", name))
	return nil
}

// export writes the commit into the release. An export interrupted before
// it was recorded is redone from an empty directory.
func (e *executor) export(ctx context.Context) error {
	dir := e.l.ReleaseDir(e.release)
	if err := e.clearRelease(dir); err != nil {
		return err
	}
	err := e.Git.Export(ctx, e.commit, e.Desired.Source.Path, dir)
	if errors.Is(err, gitcache.ErrDamaged) {
		// The cache lost objects: a fetch clones it afresh; then the
		// export starts again from an empty release.
		e.log.Warn("git cache damaged; re-cloning", zap.Error(err))
		fmt.Fprintf(e.out, "  the git cache is damaged (%v); cloning it afresh\n", err)
		if rerr := e.Git.Repair(ctx, err); rerr != nil {
			return fmt.Errorf("%v; repairing the cache: %w", err, rerr)
		}
		if err := e.clearRelease(dir); err != nil {
			return err
		}
		err = e.Git.Export(ctx, e.commit, e.Desired.Source.Path, dir)
	}
	if err != nil {
		// A partial export is redone from scratch on the next try; remove
		// it now, so that a full disk has room for the failure record.
		e.clearRelease(dir)
	}
	return err
}

// clearRelease empties a release directory but for its record.
func (e *executor) clearRelease(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, en := range entries {
		if en.Name() == layout.RecordDirName {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, en.Name())); err != nil {
			return err
		}
	}
	return nil
}

// linkShared links each shared path into the release, replacing what the
// export put there (a placeholder such as media/.gitkeep).
func (e *executor) linkShared() error {
	rel := e.l.ReleaseDir(e.release)
	link := func(p string, dir bool) error {
		src := filepath.Join(e.l.SharedDir(), p)
		if dir {
			if err := os.MkdirAll(src, 0o755); err != nil {
				return err
			}
		}
		dst := filepath.Join(rel, p)
		if err := insideDir(rel, dst); err != nil {
			return err
		}
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		target, err := filepath.Rel(filepath.Dir(dst), src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	for _, d := range e.Desired.Shared.Dirs {
		if err := link(d, true); err != nil {
			return fmt.Errorf("shared dir %s: %w", d, err)
		}
	}
	for _, f := range e.Desired.Shared.Files {
		if err := link(f, false); err != nil {
			return fmt.Errorf("shared file %s: %w", f, err)
		}
	}
	return nil
}

// insideDir refuses a path whose parent, inside the exported tree, is a
// symlink: the repository's content must not steer a write outside the
// release.
func insideDir(root, p string) error {
	parent := filepath.Dir(p)
	resolved, err := filepath.EvalSymlinks(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // created fresh below
	}
	if err != nil {
		return err
	}
	rootResolved, err := filepath.EvalSymlinks(root)
	if err != nil {
		return err
	}
	if resolved != rootResolved && !strings.HasPrefix(resolved, rootResolved+"/") {
		return fmt.Errorf("%s resolves outside the release (to %s)", p, resolved)
	}
	return nil
}

// Env is the environment of every step and service command.
func (e *executor) env(release string) []string { return e.envFor(release, e.commit) }

func (e *executor) envFor(release, commit string) []string {
	d := e.Desired
	env := append([]string{}, e.Env...)
	for _, v := range d.Env {
		env = append(env, v.Name+"="+v.Value)
	}
	return append(env,
		"RECONCILER_APP="+d.App,
		"RECONCILER_COMMIT="+commit,
		"RECONCILER_RELEASE="+e.l.ReleaseDir(release),
		"RECONCILER_ROOT="+d.Root,
		"RECONCILER_SHARED="+e.l.SharedDir(),
	)
}

func (e *executor) command(ctx context.Context, s plan.Step) error {
	def := e.stepDef(s.Name)
	logPath := e.l.StepLog(e.release, s.Name)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	// A retried step starts a fresh log; the failed attempt's output is
	// in the history's error tail.
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	pw := &runner.PrefixWriter{W: e.out, Prefix: "  " + s.Name + " | "}
	defer pw.Flush()
	return e.Runner.Run(ctx, runner.Command{
		Name:    string(s.Action) + " " + s.Name,
		Script:  def.Run,
		Dir:     e.l.ReleaseDir(e.release),
		Env:     e.env(e.release),
		Timeout: def.Timeout,
		Output:  io.MultiWriter(f, pw),
		Contain: true,
	})
}

// switchLink points the link at the target, which must be recorded
// complete: this check is the last guard of invariant 1.
func (e *executor) switchLink(servicesDone, verified bool) error {
	rec, err := record.ReadRelease(e.l.RecordFile(e.release))
	if err != nil {
		return fmt.Errorf("release %s: %w", e.release, err)
	}
	if e.allStepsDone(rec) && (rec.State == record.Building || (rec.State == record.Failed && e.Retry)) {
		// Every step is recorded done, so the release is complete: a
		// record left "building" (by an older writer, or by hand), or
		// --retry of a release that was built but failed after the
		// switch, which the checks will judge anew.
		rec.State, rec.Failure = record.Complete, nil
		if err := record.WriteRelease(e.l.RecordFile(e.release), rec); err != nil {
			return err
		}
	}
	if rec.State != record.Complete {
		return fmt.Errorf("release %s is %s, not complete; refusing to link it", e.release, rec.State)
	}
	if err := fsx.SwitchLink(e.l.LinkPath(), layout.LinkTarget(e.release)); err != nil {
		return err
	}
	h := &record.Host{Linked: e.release, Previous: e.linked, SwitchedAt: e.Now().UTC(), ServicesDone: servicesDone, Verified: servicesDone && verified}
	return record.WriteHost(e.l.HostFile(), h)
}

func (e *executor) service(ctx context.Context, name, release, commit string) error {
	svc, err := e.serviceNamed(name)
	if err != nil {
		return err
	}
	script, err := services.Script(svc)
	if err != nil {
		return err
	}
	pw := &runner.PrefixWriter{W: e.out, Prefix: "  " + svc.Name + " | "}
	defer pw.Flush()
	return e.Runner.Run(ctx, runner.Command{
		Name:    svc.Action + " " + svc.Name,
		Script:  script,
		Dir:     e.Desired.Root,
		Env:     e.envFor(release, commit),
		Timeout: svc.Timeout,
		Output:  pw,
	})
}

func (e *executor) serviceNamed(name string) (desired.Service, error) {
	for _, x := range e.Desired.Services {
		if x.Name == name {
			return x, nil
		}
	}
	return desired.Service{}, fmt.Errorf("no service %q in desired.yaml", name)
}

// updateHost changes the host record. A record that does not name the
// linked release is replaced: the link moved without a switch of ours (by
// hand, or a switch that stopped before recording).
func (e *executor) updateHost(change func(*record.Host)) error {
	h, err := record.ReadHost(e.l.HostFile())
	if err != nil {
		return err
	}
	switch {
	case h == nil:
		h = &record.Host{Linked: e.release, SwitchedAt: e.Now().UTC()}
	case h.Linked != e.release:
		h = &record.Host{Linked: e.release, Previous: h.Linked, SwitchedAt: e.Now().UTC()}
	}
	change(h)
	return record.WriteHost(e.l.HostFile(), h)
}

// prune deletes a release: it is first renamed out of releases/ so that a
// half-deleted release is never seen as a release.
func (e *executor) prune(name string) error {
	if target, err := os.Readlink(e.l.LinkPath()); err == nil && filepath.Base(target) == name {
		return fmt.Errorf("refusing to prune %s: the link points at it", name)
	}
	// The plan skipped releases in use when it was made; a process may
	// have started in this one since.
	if pids := actual.ObserveInUse(e.Desired)[name]; len(pids) > 0 {
		fmt.Fprintf(e.out, "  skipped: pid %d runs from it\n", pids[0])
		return nil
	}
	if err := os.MkdirAll(e.l.TmpDir(), 0o755); err != nil {
		return err
	}
	trash := filepath.Join(e.l.TmpDir(), "prune-"+name)
	if err := os.Rename(e.l.ReleaseDir(name), trash); err != nil {
		return err
	}
	if err := fsx.SyncDir(e.l.ReleasesDir()); err != nil {
		return err
	}
	return os.RemoveAll(trash)
}
