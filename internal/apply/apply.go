package apply

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fleetgate"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/health"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/lock"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// Git is what an apply needs of the git cache.
type Git interface {
	actual.Git
	Fetch(ctx context.Context) error
	Export(ctx context.Context, sha, subpath, dest string) error
	// Repair clones the cache afresh after an export found it damaged.
	Repair(ctx context.Context, cause error) error
}

// View receives what an apply does, as it happens. The executor never
// prints: internal/view renders these events for people or as JSON.
type View interface {
	Plan(p *plan.Plan)    // the plan, before any step
	Fetched(p *plan.Plan) // the plan made again once the fetch resolved the commit
	// Replanned is the plan made again once the linked release's
	// migrations were recorded (a plan.Step with Replan).
	Replanned(p *plan.Plan)
	Reverting(p *plan.Plan) // the plan that returns the host after the target failed once linked
	StepStarted(s plan.Step)
	// Output is where the live output of the step's command goes; nil
	// for nowhere. It is called once per command step.
	Output(s plan.Step) io.Writer
	// Note is something a step found worth saying while it ran.
	Note(s plan.Step, msg string)
	StepDone(r StepResult)
	// Done is the end of the apply, with its error (nil on success).
	Done(r *Result, err error)
}

// Options configure one apply.
type Options struct {
	Desired      *desired.State
	Git          Git
	Runner       *runner.Runner
	Log          *zap.Logger
	View         View // nil for none
	Retry        bool
	LockTimeout  time.Duration
	Trigger      string           // what started the apply: "cli", "schedule", ...
	ConfigCommit string           // the config repository commit of the desired file, if any
	Env          []string         // base environment of commands, usually os.Environ()
	Now          func() time.Time // the clock; time.Now when nil

	// User and Host are recorded in the history with the apply; when
	// empty, the process's (see CurrentUser) and os.Hostname.
	User, Host string
	// Rollback, when set, makes this apply `reconciler rollback`: to a
	// release on disk, then suspended.
	Rollback *Rollback
	// Fleet, when set, is asked before the migration and the switch of a
	// plan moving the host to a new target (see gated); nil for a host on
	// its own.
	Fleet fleetgate.Gate
	// FleetWait bounds how long the apply waits for its turn in the fleet
	// (the migration of another host, a switch slot), all waits together;
	// past it the apply ends waiting, the host on its release. 0: as long
	// as ctx lasts.
	FleetWait time.Duration
}

// Rollback is what `reconciler rollback` asks for.
type Rollback struct {
	To string // a release name or a unique prefix; "" for the rollback target
	// Suspension is written before the link moves, under the lock, so
	// that no run of the daemon moves the host back.
	Suspension record.Suspension
}

// Step results.
const (
	StepOK          = "ok"
	StepFailed      = "failed"
	StepInterrupted = "interrupted"
)

// StepResult is what happened to one step.
type StepResult struct {
	plan.Step
	Result   string  `json:"result"`
	Duration float64 `json:"duration_s"`
	Error    string  `json:"error,omitempty"`
	// Output is the tail of what a failed command printed. It was shown
	// live; it is kept here and in the records, not repeated in Error.
	Output string `json:"output,omitempty"`
	// Log is the file that keeps the command's full output, when the step
	// ran one that keeps it (build steps, the migration, the preflight).
	Log string `json:"log,omitempty"`
}

// Result is what an apply did.
type Result struct {
	ApplyID string     `json:"apply_id"`
	Plan    *plan.Plan `json:"plan"`
	// Revert is the plan that returned the host after the target failed
	// once linked, when there was one.
	Revert  *plan.Plan   `json:"revert,omitempty"`
	Release string       `json:"release,omitempty"` // the target
	Commit  string       `json:"commit,omitempty"`  // the target's commit
	Linked  string       `json:"linked,omitempty"`  // the release the link points at when the apply ended
	Steps   []StepResult `json:"steps"`
	Result  string       `json:"result"`
	Error   string       `json:"error,omitempty"`
}

// executor performs plans. It holds no notion of a current release: each
// step names the release and commit it acts on.
type executor struct {
	Options
	l   layout.Layout
	id  string
	log *zap.Logger
	res *Result
	// recID is the apply id the history records steps under: id, or the
	// revert's own while a revert runs.
	recID string
	// stepLog is the full log the running step's command writes, once
	// opened: StepResult.Log.
	stepLog string
	// early is the preflight's server, started with the migration or
	// while the migrations are recorded; stopping, one stopping after its
	// checks passed.
	early, stopping *preflightServer
	// idle is the server whose checks passed, until the health check is
	// done.
	idle *preflightServer
	// listing is the recording of the migrations after a migrate step,
	// running while the apply goes on; listed, the last one awaited.
	listing, listed *listing
	// migrationsMu orders the writes of the migrations record: the
	// listing's, in the background, and a schema step's.
	migrationsMu sync.Mutex
	// appliedBefore is what the record said was applied before the
	// migrate step ran; nil when not known.
	appliedBefore []string
	// preReload holds, by service, the processes a reload found running
	// (pid: start time): the old workers the health step lets finish.
	preReload map[string]map[int]uint64
	// slot is the fleet's switch slot while this apply holds it; doneBy
	// the host that migrated the target for this one.
	slot        fleetgate.Slot
	migrateTurn fleetgate.Turn
	doneBy      string
	// linkedUnlisted: the linked release's migrations could not be
	// listed before a switch away (plan.Options.LinkedUnlisted).
	linkedUnlisted bool
	reported       bool      // the fleet heard the target is built
	slotAsked      bool      // the fleet was asked for a switch slot
	waitUntil      time.Time // the end of FleetWait, from the first turn
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
	if opts.View == nil {
		opts.View = nopView{}
	}
	if opts.User == "" {
		opts.User = CurrentUser()
	}
	if opts.Host == "" {
		opts.Host, _ = os.Hostname()
	}
	e := &executor{Options: opts, l: layout.New(d.Root, d.Link), id: newID(opts.Now())}
	e.recID = e.id
	e.log = opts.Log.With(zap.String("apply_id", e.id))
	if err := e.checkDirs(); err != nil {
		return nil, classify("", err)
	}
	lk, err := lock.Acquire(ctx, e.l.LockFile(), opts.LockTimeout)
	if err != nil {
		return nil, classify("", err)
	}
	defer lk.Release()
	start := opts.Now()
	from := e.linked()
	e.res = &Result{ApplyID: e.id, Steps: []StepResult{}}
	err = e.run(ctx)
	if target, lerr := os.Readlink(e.l.LinkPath()); lerr == nil {
		e.res.Linked = filepath.Base(target)
	}
	if err != nil && !errors.As(err, new(*BlockedError)) && !errors.As(err, new(*SuspendedError)) {
		err = classify("", err)
	}
	e.res.Result = resultOf(e.res, err)
	if err == nil && (e.res.Result == history.ResultOK || e.res.Result == history.ResultNoop) && opts.Rollback == nil {
		e.keepApplied()
	}
	if err != nil {
		e.res.Error = err.Error()
	}
	rec := e.applyRecord(e.id, opts.Trigger, from, history.Ref{Release: e.res.Release, Commit: e.res.Commit})
	rec.Result, rec.Duration, rec.Error = e.res.Result, opts.Now().Sub(start).Seconds(), e.res.Error
	if herr := history.Append(e.l.HistoryFile(), rec); herr != nil && err == nil {
		err = classify("history", herr)
	}
	// Not logged as an error here: the caller reports the error it is given.
	e.log.Info("apply done", zap.String("result", e.res.Result), zap.Duration("elapsed", opts.Now().Sub(start)))
	e.View.Done(e.res, err)
	return e.res, err
}

// keepApplied keeps the snapshot of the desired state just reconciled, for
// the next plan to say what changed since. Written only when it changed: a
// converged apply writes nothing it need not.
func (e *executor) keepApplied() {
	// The plan compared with the kept snapshot: an empty, non-nil Changed
	// says it exists and nothing changed.
	if p := e.res.Plan; p != nil && p.Changed != nil && len(p.Changed) == 0 {
		return
	}
	if err := record.WriteApplied(e.l.AppliedFile(), e.Desired.Snapshot()); err != nil {
		e.log.Warn("keep the applied desired state", zap.Error(err))
	}
}

// checkDirs makes the directories an apply writes in and checks each, and
// those it may write in later, without following a symlink: a real
// directory, owned by the running user or root, writable by no one else
// (see fsx.CheckDir). The state directory holds records and history: 0700.
func (e *executor) checkDirs() error {
	for _, dir := range []struct {
		path string
		perm os.FileMode
	}{{e.l.Root, 0o755}, {e.l.StateDir(), 0o700}, {e.l.ReleasesDir(), 0o755}} {
		if err := fsx.EnsureDir(dir.path, dir.perm); err != nil {
			return fmt.Errorf("create %s: %w", dir.path, err)
		}
	}
	for _, dir := range []string{e.l.TmpDir(), e.l.RepoDir(), e.l.SharedDir()} {
		if fi, err := os.Lstat(dir); err == nil && fi.Mode().IsRegular() && dir == e.l.RepoDir() {
			continue // damage the git cache repairs: it clones afresh
		}
		if err := fsx.CheckDirIfExists(dir); err != nil {
			return err
		}
	}
	return nil
}

func resultOf(res *Result, err error) string {
	var ae *Error
	switch {
	case errors.As(err, new(*BlockedError)):
		return history.ResultBlocked
	case errors.As(err, new(*SuspendedError)):
		return history.ResultSuspended
	case errors.As(err, new(*fleetgate.WaitingError)):
		return ResultWaiting
	case errors.As(err, &ae) && errors.Is(ae.Err, ErrInterrupted):
		return history.ResultInterrupted
	case err != nil:
		return history.ResultFailed
	case res.Plan != nil && !res.Plan.Changes():
		return history.ResultNoop
	}
	return history.ResultOK
}

func newID(t time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Plan observes the host and plans, at the time now (which names a release
// the plan creates).
func Plan(ctx context.Context, d *desired.State, git actual.Git, opts plan.Options) (*plan.Plan, error) {
	a, err := actual.Observe(ctx, d, git)
	if err != nil {
		return nil, err
	}
	return plan.Make(d, a, opts)
}

func (e *executor) plan(ctx context.Context) (*plan.Plan, error) {
	p, err := Plan(ctx, e.Desired, e.Git, plan.Options{Retry: e.Retry, Now: e.Now(), AsRoot: os.Geteuid() == 0, LinkedUnlisted: e.linkedUnlisted})
	if err != nil {
		return nil, classify("", err)
	}
	return p, nil
}

// rollbackPlan observes the host and plans `reconciler rollback`.
func (e *executor) rollbackPlan(ctx context.Context) (*plan.Plan, error) {
	a, err := actual.Observe(ctx, e.Desired, nil)
	if err != nil {
		return nil, classify("", err)
	}
	p, err := plan.Rollback(e.Desired, a, e.Rollback.To, plan.Options{LinkedUnlisted: e.linkedUnlisted})
	if err != nil {
		return nil, classify("", err)
	}
	return p, nil
}

func (e *executor) run(ctx context.Context) error {
	if e.Rollback != nil {
		return e.rollback(ctx)
	}
	if s, err := record.ReadSuspension(e.l.SuspendFile()); err != nil || s != nil {
		if err != nil {
			return err
		}
		return &SuspendedError{Suspension: s}
	}
	e.cleanTemp()
	p, err := e.plan(ctx)
	if err != nil {
		return err
	}
	e.res.Plan = p
	e.View.Plan(p)
	if p.NeedsFetch() {
		if err := e.step(ctx, p, p.Steps[0]); err != nil {
			return err
		}
		if p, err = e.plan(ctx); err != nil {
			return err
		}
		if p.NeedsFetch() {
			return classify("", fmt.Errorf("commit %q is not in %s, even after a fetch", e.Desired.Source.Commit, gitcache.Redact(e.Desired.Source.Repo)))
		}
		e.res.Plan = p
		e.View.Fetched(p)
	}
	if p, err = e.recordFirst(ctx, p, e.plan); err != nil {
		return err
	}
	e.res.Release, e.res.Commit = p.Target, p.Commit
	if err := e.perform(ctx, p); err != nil {
		return err
	}
	if b := p.Blocked; b != nil {
		return &BlockedError{Release: b.Release, Step: b.Step, Msg: b.Error, Policy: b.Policy}
	}
	return nil
}

// rollback suspends deploys, then links the release asked for and acts on
// the services and checks it: no fetch, no build, no prune.
func (e *executor) rollback(ctx context.Context) error {
	e.cleanTemp()
	p, err := e.rollbackPlan(ctx)
	if err != nil {
		return err
	}
	e.res.Plan = p
	e.View.Plan(p)
	if p, err = e.recordFirst(ctx, p, e.rollbackPlan); err != nil {
		return err
	}
	e.res.Release, e.res.Commit = p.Target, p.Commit
	if b := p.Blocked; b != nil {
		// migrate.on_rollback refused: nothing moves, nothing is suspended.
		return &BlockedError{Release: b.Release, Step: b.Step, Msg: b.Error, Policy: b.Policy}
	}
	s := e.Rollback.Suspension
	s.Release = p.Target
	if err := record.WriteSuspension(e.l.SuspendFile(), &s); err != nil {
		return classify("suspend", err)
	}
	return e.perform(ctx, p)
}

// recordFirst performs a plan's first step when it lists the linked
// release's migrations before the plan decides on its switch (Replan),
// and returns the plan made again by replan. A listing that fails does
// not stop the apply, a rollback least of all: the plan is made again
// without asking for it (LinkedUnlisted), judging the switch on the
// record as it is, as the plan said it would be.
func (e *executor) recordFirst(ctx context.Context, p *plan.Plan, replan func(context.Context) (*plan.Plan, error)) (*plan.Plan, error) {
	if len(p.Steps) == 0 || !p.Steps[0].Replan {
		return p, nil
	}
	if err := e.step(ctx, p, p.Steps[0]); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		e.log.Warn("the linked release's migrations could not be listed: the switch is judged on the record as it is", zap.Error(err))
		e.linkedUnlisted = true
	}
	q, err := replan(ctx)
	if err != nil {
		return nil, err
	}
	e.res.Plan = q
	e.View.Replanned(q)
	return q, nil
}

// perform runs a plan's steps in order. A service action or health check
// that fails in a plan moving forward is followed by the revert plan.
// In a fleet, a plan moving to a new target asks the Gate before its
// migration and its switch, and holds a switch slot until its last check.
func (e *executor) perform(ctx context.Context, p *plan.Plan) error {
	defer e.finishPreflight()
	defer e.awaitListing()
	gated := e.gated(p)
	if gated {
		defer e.dropSlot()
		e.holdOwnRelease(p)
	}
	for _, s := range p.Steps {
		if s.Action == plan.Fetch {
			continue // done before the plan was made again
		}
		if ctx.Err() != nil {
			return classify(describe(s), ErrInterrupted)
		}
		if gated {
			// A turn may be a long wait: no idle server meanwhile.
			e.stopIdlePreflight()
			if err := e.turn(ctx, p, s); err != nil {
				return err
			}
		}
		switch s.Action {
		case plan.Switch:
			e.lowerListing()
		case plan.Preflight, plan.Service, plan.Health, plan.Schema:
			// A schema step (a revert's) writes the record under
			// migrationsMu, as the listing does.
		default:
			e.awaitListing()
		}
		err := e.step(ctx, p, s)
		if s.Action == plan.Health || err != nil {
			e.stopIdlePreflight()
		}
		if err == nil {
			if gated && s.Verified && e.slot != nil {
				e.releaseSlot(ctx, true, nil)
			}
			continue
		}
		if ctx.Err() == nil && p.RevertsOnFailure() && (s.Action == plan.Service || s.Action == plan.Health) {
			rerr := e.revert(ctx, s, err)
			if gated && e.slot != nil {
				e.releaseSlot(ctx, false, err)
			}
			return rerr
		}
		return err
	}
	return nil
}

// cleanTemp removes what an interrupted apply left in its scratch places:
// temporary links beside the link, staged releases, and the temporary
// files of cache seals cut short. None is ever seen by services: the link
// is only ever the result of a rename.
func (e *executor) cleanTemp() {
	matches, _ := filepath.Glob(fsx.TempLinkGlob(e.l.LinkPath()))
	// A seal's atomic write cut by a kill leaves its temporary file
	// beside the entries; nothing reads it, but it need not stay.
	seals, _ := filepath.Glob(filepath.Join(e.l.CacheDir(), "*", ".*.json.tmp-*"))
	for _, m := range append(matches, seals...) {
		os.Remove(m)
	}
	os.RemoveAll(e.l.TmpDir())
}

func describe(s plan.Step) string { return string(s.Action) + " " + plan.Describe(s) }

// step runs one plan step, tells the view and records it in the history.
func (e *executor) step(ctx context.Context, p *plan.Plan, s plan.Step) error {
	if s.Release == plan.NewRelease {
		// Only a plan made before the fetch names no release, and it is
		// made again after the fetch.
		return classify(describe(s), errors.New("the release is not named: the plan was made before the commit was known"))
	}
	e.View.StepStarted(s)
	log := e.log.With(zap.String("step", string(s.Action)), zap.String("name", s.Name), zap.String("release", s.Release))
	start := e.Now()
	e.stepLog = ""
	err := e.do(ctx, p, s)
	dur := e.Now().Sub(start)
	sr := StepResult{Step: s, Result: StepOK, Duration: dur.Seconds(), Log: e.stepLog}
	if err != nil {
		sr.Result, sr.Error, sr.Output = StepFailed, err.Error(), ""
		var f *stepFailure
		if errors.As(err, &f) {
			sr.Output = f.output
		}
		if ctx.Err() != nil {
			// Stopped from outside (Ctrl-C, SIGTERM, a deadline): not
			// the step's fault. The next apply resumes here.
			sr.Result, sr.Error, err = StepInterrupted, ErrInterrupted.Error(), ErrInterrupted
		}
		log.Info("step "+sr.Result, zap.Duration("elapsed", dur)) // the error goes up, not to the log
	} else {
		log.Info("step done", zap.Duration("elapsed", dur))
	}
	e.res.Steps = append(e.res.Steps, sr)
	e.View.StepDone(sr)
	hr := history.Record{Time: e.Now().UTC(), Kind: history.KindStep, ApplyID: e.recID, Trigger: e.Trigger, Commit: s.Commit,
		Release: s.Release, Step: describe(s), Result: sr.Result, Duration: sr.Duration, Error: sr.Error, Output: sr.Output}
	if s.Action == plan.Migrate && e.doneBy != "" {
		hr.Step += " (done by " + e.doneBy + ")"
	}
	if herr := history.Append(e.l.HistoryFile(), hr); herr != nil && err == nil {
		err = herr
	}
	if err != nil {
		return classify(describe(s), err)
	}
	return nil
}

// stepFailure is a command's failure with its output split off: the
// output was shown live and is kept in the records; the message says
// what happened, once.
type stepFailure struct {
	msg, output string
	err         error
}

func (f *stepFailure) Error() string { return f.msg }
func (f *stepFailure) Unwrap() error { return f.err }

// splitOutput separates a command failure's output from its message.
func splitOutput(err error) error {
	var re *runner.Error
	var he *health.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &he) && he.Output != "":
		return &stepFailure{msg: err.Error(), output: he.Output, err: err}
	case errors.As(err, &re) && re.Tail != "":
		return &stepFailure{msg: re.Summary(), output: re.Tail, err: err}
	}
	return err
}
