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
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
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
	Release      string    `json:"release,omitempty"`
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
	goodRev string
	running bool

	cron      *cron.Cron
	cronSpec  string
	cronEntry cron.EntryID
	backoff   time.Duration
	retry     *time.Timer
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

// Ready reports whether the daemon has a valid desired state and finished
// a run.
func (d *Daemon) Ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.good != nil && d.last != nil
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
	run := &Run{ID: newRunID(), Trigger: trigger, Started: time.Now().UTC()}
	log := d.log.With(zap.String("run_id", run.ID), zap.String("trigger", trigger))
	d.mu.Lock()
	d.running = true
	d.mu.Unlock()
	defer func() {
		run.Duration = time.Since(run.Started).Seconds()
		d.mu.Lock()
		d.last, d.running = run, false
		d.mu.Unlock()
		d.opts.Metrics.observe(run)
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
		log.Error("run failed", zap.String("error_kind", kind), zap.Error(err))
	}

	snap, err := d.opts.Source.Load(ctx)
	if err != nil {
		fail(KindTransient, err)
		return
	}
	run.ConfigCommit = snap.Commit
	state, err := desired.ParseAt(bytes.NewReader(snap.Data), snap.Name, snap.Dir)
	if err != nil {
		// A bad desired file never stops the daemon and never touches
		// the host: the last good state stays, for status and schedule.
		fail(KindBadDesired, err)
		return
	}
	d.mu.Lock()
	d.good, d.goodRev = state, snap.Rev
	d.mu.Unlock()
	d.setSchedule(state, log)
	log = log.With(zap.String("commit", state.Source.Commit))
	if snap.Commit != "" {
		log = log.With(zap.String("config_commit", snap.Commit))
	}
	log.Info("apply started")
	runCtx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	res, err := d.opts.Apply(runCtx, state, snap, trigger, log)
	if res != nil {
		run.Release = res.Release
		d.opts.Metrics.release(res)
	}
	if err != nil {
		var ae *apply.Error
		var be *apply.BlockedError
		switch {
		case errors.As(err, &be):
			fail(KindTerminal, err)
		case errors.As(err, &ae) && ae.Kind == apply.RetryLater:
			fail(KindTransient, err)
		case ctx.Err() != nil:
			fail(KindTransient, err) // shutdown: the next start resumes
		default:
			fail(KindTerminal, err)
		}
		return
	}
	run.Result = res.Result
	d.resetBackoff()
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
