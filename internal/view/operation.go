package view

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// Operation is what an apply shows: the executor's events, rendered.
type Operation = apply.View

var (
	_ Operation = (*OperationHuman)(nil)
	_ Operation = (*OperationJSON)(nil)
)

// OperationHuman shows an apply to a person as it happens: the plan, each
// step with its live output and result, a revert as a plan of its own.
type OperationHuman struct {
	W   io.Writer
	Cmd Command
	// Heartbeat is how long a build, migrate, preflight or health step
	// may be silent before "still running (1m0s)" says it is alive, and
	// again after each such line; 0 for never. See HeartbeatFor.
	Heartbeat time.Duration

	mu       sync.Mutex
	out      *runner.PrefixWriter // the live output of the running step
	streamed bool                 // the running step's output was shown live
	lastSign time.Time            // the running step's last output or heartbeat
	beat     *heartbeat           // the running step's, nil when none

	// For tests: the clock, and the ticks the heartbeat looks at the
	// clock on; nil for the real ones.
	now  func() time.Time
	tick func() (<-chan time.Time, func())
}

// Heartbeat intervals: a person watching a terminal wants to know soon
// that a silent step is alive; a log file (CI, a pipe) does not want a
// line every ten seconds of a long build.
const (
	HeartbeatTerminal = 10 * time.Second
	HeartbeatOther    = time.Minute
)

// HeartbeatFor is the heartbeat for a view writing to w.
func HeartbeatFor(w io.Writer) time.Duration {
	if IsTerminal(w) {
		return HeartbeatTerminal
	}
	return HeartbeatOther
}

// silent are the steps that may run long without a word: those running
// the app's commands and checks.
var silent = map[plan.Action]bool{plan.Build: true, plan.Migrate: true, plan.Preflight: true, plan.Health: true}

type heartbeat struct {
	stop chan struct{}
	done chan struct{}
}

func (v *OperationHuman) clock() time.Time {
	if v.now != nil {
		return v.now()
	}
	return time.Now()
}

// startBeat watches the step that started at start: on each tick, a step
// silent for Heartbeat since its last output (or heartbeat) gets a line.
// Ticks come every second or Heartbeat, whichever is shorter, so a line
// is at most that late.
func (v *OperationHuman) startBeat(start time.Time) {
	var ticks <-chan time.Time
	var stopTicks func()
	if v.tick != nil {
		ticks, stopTicks = v.tick()
	} else {
		t := time.NewTicker(min(time.Second, v.Heartbeat))
		ticks, stopTicks = t.C, t.Stop
	}
	hb := &heartbeat{stop: make(chan struct{}), done: make(chan struct{})}
	v.beat = hb
	v.lastSign = start
	go func() {
		defer close(hb.done)
		defer stopTicks()
		for {
			select {
			case <-hb.stop:
				return
			case <-ticks:
				v.mu.Lock()
				if now := v.clock(); now.Sub(v.lastSign) >= v.Heartbeat {
					if v.out != nil {
						v.out.Flush() // a line the command left open is ended first
					}
					fmt.Fprintf(v.W, "  still running (%s)\n", now.Sub(start).Round(time.Second))
					v.lastSign = now
				}
				v.mu.Unlock()
			}
		}
	}()
}

// stopBeat stops the running step's heartbeat and waits for it: no
// heartbeat line comes after the step's result. Called without v.mu.
func (v *OperationHuman) stopBeat() {
	v.mu.Lock()
	hb := v.beat
	v.beat = nil
	v.mu.Unlock()
	if hb != nil {
		close(hb.stop)
		<-hb.done
	}
}

// activity is the live output of a step: it counts as a sign of life.
type activity struct{ v *OperationHuman }

func (a activity) Write(b []byte) (int, error) {
	a.v.mu.Lock()
	defer a.v.mu.Unlock()
	a.v.lastSign = a.v.clock()
	if a.v.out == nil {
		return len(b), nil // the step is over: a straggler is dropped
	}
	return a.v.out.Write(b)
}

func (v *OperationHuman) write(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Fprintf(v.W, format, args...)
}

func (v *OperationHuman) Plan(p *plan.Plan) { PlanHuman(v.W, p, v.Cmd) }

func (v *OperationHuman) Fetched(p *plan.Plan) { v.write("\n%s\n", fetched(p)) }

// Replanned shows the plan again in full: what the target lacks (and so
// the steps, or a refusal) may have changed with the linked release's
// migrations listed; its warnings say if they could not be.
func (v *OperationHuman) Replanned(p *plan.Plan) {
	v.write("\nThe plan, made again after listing the linked release's migrations:\n\n")
	PlanHuman(v.W, p, v.Cmd)
}

func (v *OperationHuman) Reverting(p *plan.Plan) {
	var b strings.Builder
	b.WriteString("\n")
	writeReverting(&b, p)
	if len(p.Steps) > 0 {
		writeSteps(&b, p)
	}
	v.write("%s", b.String())
}

func title(s plan.Step) string { return fmt.Sprintf("%s %s", s.Action, plan.Describe(s)) }

func (v *OperationHuman) StepStarted(s plan.Step) {
	v.stopBeat() // a step that never said it was done
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Fprintf(v.W, "\n%s %s\n", s.Symbol(), title(s))
	if v.Heartbeat > 0 && silent[s.Action] {
		v.startBeat(v.clock())
	}
}

func (v *OperationHuman) Output(s plan.Step) io.Writer {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.out = &runner.PrefixWriter{W: v.W, Prefix: "  " + s.Name + " | "}
	v.streamed = true
	return activity{v}
}

func (v *OperationHuman) Note(s plan.Step, msg string) { v.write("  %s\n", msg) }

func (v *OperationHuman) StepDone(r apply.StepResult) {
	v.stopBeat()
	v.mu.Lock()
	if v.out != nil {
		v.out.Flush()
		v.out = nil
	}
	streamed := v.streamed
	v.streamed = false
	v.mu.Unlock()
	d := round(time.Duration(r.Duration * float64(time.Second)))
	switch r.Result {
	case apply.StepOK:
		v.write("  ok %s (%s)\n", title(r.Step), d)
	case apply.StepInterrupted:
		v.write("  interrupted %s after %s\n", title(r.Step), d)
	default:
		v.write("  FAILED %s after %s: %s\n", title(r.Step), d, indent(r.Error))
		if !streamed {
			// A health check's output is not shown live: show it here,
			// once. A command's was shown above.
			var b strings.Builder
			writeOutput(&b, r.Output)
			v.write("%s", b.String())
		}
		if r.Log != "" {
			// What was shown is the output's tail at best (a long build
			// scrolls away): say where all of it is, and how to read it
			// again as the reconciler's user.
			v.write("  full log: %s\n  show it: %s\n", r.Log, v.Cmd.With("logs "+r.Release+" "+r.Name))
		}
	}
}

func (v *OperationHuman) Done(r *apply.Result, err error) {
	v.stopBeat()
	if err == nil && r.Result == history.ResultOK {
		what := "Apply"
		if r.Plan.Rollback {
			what = "Rollback"
		}
		v.write("\n%s complete: %s -> releases/%s.\n", what, r.Plan.Link, r.Linked)
	}
}

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}

// OperationJSON prints one JSON document, the apply's result, on W when
// the apply ends; the progress goes to Progress for people.
type OperationJSON struct {
	W        io.Writer
	Progress *OperationHuman
}

func (v *OperationJSON) Plan(p *plan.Plan)            { v.Progress.Plan(p) }
func (v *OperationJSON) Fetched(p *plan.Plan)         { v.Progress.Fetched(p) }
func (v *OperationJSON) Replanned(p *plan.Plan)       { v.Progress.Replanned(p) }
func (v *OperationJSON) Reverting(p *plan.Plan)       { v.Progress.Reverting(p) }
func (v *OperationJSON) StepStarted(s plan.Step)      { v.Progress.StepStarted(s) }
func (v *OperationJSON) Output(s plan.Step) io.Writer { return v.Progress.Output(s) }
func (v *OperationJSON) Note(s plan.Step, msg string) { v.Progress.Note(s, msg) }
func (v *OperationJSON) StepDone(r apply.StepResult)  { v.Progress.StepDone(r) }
func (v *OperationJSON) Done(r *apply.Result, err error) {
	v.Progress.Done(r, err)
	enc := json.NewEncoder(v.W)
	enc.SetIndent("", "  ")
	enc.Encode(r)
}
