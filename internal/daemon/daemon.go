// Package daemon is `reconciler run`: it reconciles the host whenever the
// desired state changes (a file saved, a commit to a config repository), on
// the cron schedule, on a signed webhook and on SIGHUP — one reconcile at a
// time, triggers that arrive meanwhile coalesced into one follow-up run.
package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/notify"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/source"
)

// ApplyFunc performs one apply of d. The daemon's runs go through it, so
// tests can count and slow them.
type ApplyFunc func(ctx context.Context, d *desired.State, snap *source.Snapshot, trigger string, log *zap.Logger) (*apply.Result, error)

// Options configure a Daemon.
type Options struct {
	Source   source.Source
	Apply    ApplyFunc
	Log      *zap.Logger
	Schedule string        // overrides schedule: in desired.yaml when set
	Timeout  time.Duration // deadline of one run
	Grace    time.Duration // how long a running step may finish after shutdown starts
	// Backoff bounds the retry delay after a transient failure.
	BackoffMin, BackoffMax time.Duration
	Metrics                *Metrics
	// Now is the clock runs are timed with; time.Now when nil.
	Now func() time.Time
	// Notifier, when set, is handed the event of every apply for the
	// destinations of notify:. It must not block.
	Notifier Notifier
	// Hostname names the host in notifications; notify.Hostname() when "".
	Hostname string
}

// Notifier sends notifications in the background: *notify.Sender.
type Notifier interface {
	Send(targets []desired.Notify, ev notify.Event)
}

// Run is what the daemon knows of a reconcile.
type Run struct {
	ID           string    `json:"id"`
	Trigger      string    `json:"trigger"`
	Started      time.Time `json:"started"`
	Duration     float64   `json:"duration_s"`
	Result       string    `json:"result"`
	Error        string    `json:"error,omitempty"`
	ErrorKind    string    `json:"error_kind,omitempty"`
	ConfigCommit string    `json:"config_commit,omitempty"`
	Release      string    `json:"release,omitempty"` // the release the run aimed at
	// Linked is the release the link points at after the run, read from
	// the host: after a revert it is not Release.
	Linked string `json:"linked,omitempty"`
}

// Daemon reconciles until its context is done.
type Daemon struct {
	opts Options
	log  *zap.Logger

	wake    chan struct{} // capacity 1: a pending run
	mu      sync.Mutex
	reasons map[string]bool // triggers of the pending run
	last    *Run
	good    *desired.State // the last valid desired state
	// succeeded is set once a run has left the host at its target.
	succeeded bool
	// blocked says why the desired target is blocked — it failed and a
	// person must act — or is "" when it is not.
	blocked string
	// suspended: the last run found deploys suspended.
	suspended bool

	cron      *cron.Cron
	cronSpec  string
	cronEntry cron.EntryID
	backoff   time.Duration
	retry     *time.Timer

	// told remembers which destination heard of which failure, so a
	// blocked target is told once, not on every tick. In memory only: a
	// restarted daemon tells of a standing failure once more.
	told notify.Once
}

// New makes a daemon.
func New(opts Options) *Daemon {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Timeout == 0 {
		opts.Timeout = time.Hour
	}
	if opts.BackoffMin == 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax == 0 {
		opts.BackoffMax = 5 * time.Minute
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Hostname == "" {
		opts.Hostname = notify.Hostname()
	}
	return &Daemon{opts: opts, log: opts.Log, wake: make(chan struct{}, 1), reasons: map[string]bool{},
		cron: cron.New(cron.WithParser(desired.CronParser))}
}

// Trigger asks for a reconcile. It never blocks: a trigger that arrives
// while one is pending joins it.
func (d *Daemon) Trigger(why string) {
	d.mu.Lock()
	d.reasons[why] = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Last returns the last run, or nil.
func (d *Daemon) Last() *Run {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		return nil
	}
	r := *d.last
	return &r
}

// Desired returns the last valid desired state, or nil.
func (d *Daemon) Desired() *desired.State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.good
}

// Ready reports whether the host is where the desired state wants it, as
// far as the daemon can vouch: a run has succeeded and the target is not
// blocked. When it is not, why says so in one line.
func (d *Daemon) Ready() (ok bool, why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.blocked != "":
		return false, d.blocked
	case !d.succeeded:
		return false, "no successful reconcile yet"
	}
	return true, ""
}

// Run reconciles at startup and on every trigger until ctx is done. Then it
// takes no more triggers, gives a running apply Grace to finish its step,
// cancels it, and returns when it has stopped. The next start resumes an
// unfinished release.
func (d *Daemon) Run(ctx context.Context) error {
	// Runs get their own context: shutdown cancels it only after Grace.
	runCtx, cancelRuns := context.WithCancel(context.Background())
	defer cancelRuns()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.opts.Source.Watch(ctx, d.Trigger); err != nil {
			d.log.Error("watch stopped", zap.Error(err))
		}
	}()
	d.cron.Start()
	defer func() { <-d.cron.Stop().Done() }()
	d.Trigger("startup")

	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
				if ctx.Err() != nil {
					return
				}
				d.reconcile(runCtx, d.takeReasons())
			}
		}
	}()
	<-ctx.Done()
	d.log.Info("shutting down", zap.Duration("grace", d.opts.Grace))
	d.stopRetry()
	select {
	case <-done:
	case <-time.After(d.opts.Grace):
		d.log.Warn("grace period over; cancelling the running apply")
		cancelRuns()
		<-done
	}
	cancelRuns()
	wg.Wait()
	return nil
}

func (d *Daemon) takeReasons() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var rs []string
	for r := range d.reasons {
		rs = append(rs, r)
	}
	d.reasons = map[string]bool{}
	sort.Strings(rs)
	return strings.Join(rs, ",")
}

func newRunID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Error kinds the daemon acts on.
const (
	KindBadDesired = "bad-desired" // waits for the desired state to change
	KindTransient  = "transient"   // retried with backoff
	KindTerminal   = "terminal"    // a person must act; not retried
)

func (d *Daemon) reconcile(ctx context.Context, trigger string) {
	run := &Run{ID: newRunID(), Trigger: trigger, Started: d.opts.Now().UTC()}
	log := d.log.With(zap.String("run_id", run.ID), zap.String("trigger", trigger))
	// What the run leaves for readiness: blocked is set by a terminal
	// failure, succeeded (which clears blocked) by a successful run;
	// any other outcome leaves both as they were.
	var blocked string
	var succeeded, inSync, suspended bool
	defer func() {
		run.Duration = d.opts.Now().Sub(run.Started).Seconds()
		// Metrics first: whoever sees the run in Last sees it counted.
		m := d.opts.Metrics
		m.observe(run)
		d.mu.Lock()
		if succeeded {
			d.succeeded, d.blocked = true, ""
		} else if blocked != "" {
			d.blocked = blocked
		}
		d.suspended = suspended
		m.state(d.blocked != "", inSync, suspended)
		d.last = run
		d.mu.Unlock()
		log.Info("run done", zap.String("result", run.Result), zap.Float64("duration_s", run.Duration), zap.String("error_kind", run.ErrorKind))
	}()
	fail := func(kind string, err error) {
		run.Result, run.Error, run.ErrorKind = "failed", err.Error(), kind
		switch kind {
		case KindTransient:
			d.scheduleRetry(log)
		default:
			d.resetBackoff()
		}
		fields := []zap.Field{zap.String("error_kind", kind), zap.Error(err)}
		var pe *panicError
		if errors.As(err, &pe) {
			fields = append(fields, zap.ByteString("stack", pe.stack))
		}
		log.Error("run failed", fields...)
	}

	snap, err := d.opts.Source.Load(ctx)
	var se *gitcache.SignatureError
	switch {
	case errors.As(err, &se):
		// A config commit no trusted key signed: trying it again can't
		// help, a person must sign it or commit a signed one. The host
		// is not touched.
		run.ConfigCommit = se.Commit
		blocked = fmt.Sprintf("config commit %s refused: %s", se.Commit, se.Reason)
		fail(KindTerminal, err)
		return
	case err != nil:
		fail(KindTransient, err)
		return
	}
	run.ConfigCommit = snap.Commit
	var state *desired.State
	err = safely("parse "+snap.Name, func() (err error) {
		state, err = desired.ParseAt(bytes.NewReader(snap.Data), snap.Name, snap.Dir)
		return err
	})
	var pe *panicError
	switch {
	case errors.As(err, &pe):
		blocked = "the desired state could not be read: " + oneLine(err)
		fail(KindTerminal, err)
		return
	case err != nil:
		// A bad desired file never stops the daemon and never touches
		// the host: the last good state stays, for status and schedule.
		fail(KindBadDesired, err)
		return
	}
	d.mu.Lock()
	d.good = state
	d.mu.Unlock()
	d.setSchedule(state, log)
	log = log.With(zap.String("commit", state.Source.Commit))
	if snap.Commit != "" {
		log = log.With(zap.String("config_commit", snap.Commit))
	}
	if sus, _ := record.ReadSuspension(layout.New(state.Root, state.Link).SuspendFile()); sus != nil {
		// A person suspended deploys (reconciler suspend, or rollback):
		// the daemon reports and touches nothing, every trigger alike.
		run.Result, run.Error = history.ResultSuspended, "deploys are "+sus.Describe()
		suspended = true
		log.Info("deploys suspended; not applying", zap.String("suspension", sus.Describe()))
		return
	}
	log.Info("apply started")
	runCtx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	var res *apply.Result
	err = safely("apply", func() (err error) {
		res, err = d.opts.Apply(runCtx, state, snap, trigger, log)
		return err
	})
	if res != nil {
		run.Release = res.Release
	}
	host := d.observe(ctx, state, log)
	if host != nil {
		run.Linked = host.Link.Release
	}
	d.notify(state, res, err, host, trigger)
	if err != nil {
		var ae *apply.Error
		var be *apply.BlockedError
		var se *apply.SuspendedError
		switch {
		case errors.As(err, &se):
			// Suspended between the check above and the lock.
			run.Result, run.Error, suspended = history.ResultSuspended, err.Error(), true
		case errors.As(err, &pe):
			blocked = "the last run panicked: " + oneLine(err)
			fail(KindTerminal, err)
		case errors.As(err, &be):
			blocked = fmt.Sprintf("target release %s failed at step %s; blocked", be.Release, be.Step)
			fail(KindTerminal, err)
		case errors.As(err, &ae) && ae.Kind == apply.RetryLater:
			fail(KindTransient, err)
		case ctx.Err() != nil:
			fail(KindTransient, err) // shutdown: the next start resumes
		default: // apply.NeedsPerson, or an error no one classified
			blocked = blockedReason(err, res, host)
			fail(KindTerminal, err)
		}
		return
	}
	if res != nil {
		run.Result = res.Result
	}
	succeeded = true
	inSync = run.Result == history.ResultOK || run.Result == history.ResultNoop
	d.resetBackoff()
}

// notify hands the apply's event to the notifier, for the destinations
// that have not heard of its failure yet. A run that ended well ends the
// incident: the next failure is news, even of the same target.
func (d *Daemon) notify(state *desired.State, res *apply.Result, err error, host *actual.State, trigger string) {
	if d.opts.Notifier == nil {
		return
	}
	if err == nil {
		d.told.Clear()
	}
	if len(state.Notify) == 0 {
		return
	}
	ev, ok := notify.New(notify.Input{Desired: state, Result: res, Err: err, Host: host, Trigger: trigger, Hostname: d.opts.Hostname, Time: d.opts.Now()})
	if !ok {
		return
	}
	if targets := d.told.Filter(state.Notify, ev); len(targets) > 0 {
		d.opts.Notifier.Send(targets, ev)
	}
}

// observe reads the host after a run, without git, and publishes the
// release the link points at: after a revert that is the last good
// release, not the target apply aimed at. It returns nil when the host
// can't be read; the metric then keeps its last value.
func (d *Daemon) observe(ctx context.Context, state *desired.State, log *zap.Logger) *actual.State {
	var host *actual.State
	err := safely("observe", func() (err error) {
		host, err = actual.Observe(ctx, state, nil)
		return err
	})
	if err != nil {
		log.Warn("host not observed after the run", zap.Error(err))
		return nil
	}
	commit := ""
	if r := host.Release(host.Link.Release); r != nil && r.Record != nil {
		commit = r.Record.Commit
	}
	d.opts.Metrics.release(host.Link.Release, commit)
	return host
}

// blockedReason says in one line why a failed target blocks: from the
// target's record when the run left it recorded failed.
func blockedReason(err error, res *apply.Result, host *actual.State) string {
	if res != nil && host != nil {
		if r := host.Release(res.Release); r != nil && r.Record != nil && r.Record.State == record.Failed && r.Record.Failure != nil {
			return fmt.Sprintf("target release %s failed at step %s; blocked", r.Name, r.Record.Failure.Step)
		}
	}
	var ae *apply.Error
	if errors.As(err, &ae) && ae.Step != "" && res != nil && res.Release != "" {
		return fmt.Sprintf("target release %s failed at step %s; blocked", res.Release, ae.Step)
	}
	return "target blocked: " + oneLine(err)
}

func oneLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// panicError is a panic in something a run called, caught so that it
// fails the run instead of stopping the daemon.
type panicError struct {
	what  string
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("panic in %s: %v", e.what, e.value) }

// safely calls f and turns a panic in it into a *panicError: a parser or
// an apply that panics fails its run; the daemon keeps serving.
func safely(what string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{what: what, value: v, stack: debug.Stack()}
		}
	}()
	return f()
}

// setSchedule arms the cron schedule: --schedule, else schedule: in the
// desired file; re-armed when it changes.
func (d *Daemon) setSchedule(s *desired.State, log *zap.Logger) {
	spec := d.opts.Schedule
	if spec == "" {
		spec = s.Schedule
	}
	if spec == d.cronSpec {
		return
	}
	if d.cronEntry != 0 {
		d.cron.Remove(d.cronEntry)
		d.cronEntry = 0
	}
	d.cronSpec = spec
	if spec == "" {
		return
	}
	// A panic inside the cron parser must not stop the daemon: the spec
	// was validated, but the parser is not ours.
	id, err := func() (id cron.EntryID, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("cron parser panicked on %q: %v", spec, r)
			}
		}()
		return d.cron.AddFunc(spec, func() { d.Trigger("schedule") })
	}()
	if err != nil {
		// Validated at parse time; --schedule is validated at start.
		log.Error("schedule rejected", zap.String("schedule", spec), zap.Error(err))
		return
	}
	d.cronEntry = id
	log.Info("schedule set", zap.String("schedule", spec))
}

func (d *Daemon) scheduleRetry(log *zap.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.backoff == 0 {
		d.backoff = d.opts.BackoffMin
	} else {
		d.backoff = min(2*d.backoff, d.opts.BackoffMax)
	}
	if d.retry != nil {
		d.retry.Stop()
	}
	log.Info("retry scheduled", zap.Duration("in", d.backoff))
	d.retry = time.AfterFunc(d.backoff, func() { d.Trigger("retry") })
}

func (d *Daemon) resetBackoff() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.backoff = 0
	if d.retry != nil {
		d.retry.Stop()
		d.retry = nil
	}
}

func (d *Daemon) stopRetry() { d.resetBackoff() }
