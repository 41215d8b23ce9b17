package view

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/plan"
)

// beatStage drives an OperationHuman's heartbeat by hand: its clock is
// set by the test, and each tick is sent by the test on an unbuffered
// channel, so a tick's send returns only once the heartbeat has taken it
// and the one before is handled whole. Nothing waits on real time.
type beatStage struct {
	t     *testing.T
	v     *OperationHuman
	out   *lineBuffer
	ticks chan time.Time
	mu    sync.Mutex
	at    time.Time
	made  int // tickers made: one per heartbeat started
}

func newBeatStage(t *testing.T, every time.Duration) *beatStage {
	s := &beatStage{t: t, out: newLineBuffer(), ticks: make(chan time.Time), at: time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)}
	s.v = &OperationHuman{W: s.out, Cmd: "reconciler", Heartbeat: every,
		now: func() time.Time { s.mu.Lock(); defer s.mu.Unlock(); return s.at },
		tick: func() (<-chan time.Time, func()) {
			s.mu.Lock()
			s.made++
			s.mu.Unlock()
			return s.ticks, func() {}
		},
	}
	return s
}

// tickAt sets the clock to start+d and ticks once.
func (s *beatStage) tickAt(start time.Time, d time.Duration) {
	s.mu.Lock()
	s.at = start.Add(d)
	s.mu.Unlock()
	select {
	case s.ticks <- s.at:
	case <-time.After(time.Minute): // a hung heartbeat fails, not hangs
		s.t.Fatal("the heartbeat did not take a tick")
	}
}

func (s *beatStage) setClock(t time.Time) {
	s.mu.Lock()
	s.at = t
	s.mu.Unlock()
}

// lineBuffer is an io.Writer whose each write is announced, so a test
// waits for a line to be written rather than for time to pass.
type lineBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes chan struct{}
}

func newLineBuffer() *lineBuffer { return &lineBuffer{writes: make(chan struct{}, 1000)} }

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	l.writes <- struct{}{}
	return len(p), nil
}

func (l *lineBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the output holds want.
func (l *lineBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	for !strings.Contains(l.String(), want) {
		select {
		case <-l.writes:
		case <-time.After(time.Minute):
			t.Fatalf("no %q in:\n%s", want, l.String())
		}
	}
}

func TestHeartbeat(t *testing.T) {
	build := plan.Step{Action: plan.Build, Name: "deps", Release: "20261126T090000Z-3e8f8e17"}
	cases := []struct {
		name  string
		every time.Duration
		// run drives the step after it started at start, and returns the
		// line the last tick must have written.
		run  func(s *beatStage, start time.Time, w io.Writer) string
		want string // the whole output after the step's title
	}{
		{
			name: "silent for a minute on a terminal: a line every 10 s", every: 10 * time.Second,
			run: func(s *beatStage, start time.Time, _ io.Writer) string {
				for i := 1; i <= 6; i++ {
					s.tickAt(start, time.Duration(i)*10*time.Second)
					s.out.waitFor(s.t, fmt.Sprintf("still running (%s)\n", time.Duration(i)*10*time.Second))
				}
				return "still running (1m0s)"
			},
			want: "  still running (10s)\n  still running (20s)\n  still running (30s)\n  still running (40s)\n  still running (50s)\n  still running (1m0s)\n",
		},
		{
			name: "not a terminal: a minute between lines, ticks in between say nothing", every: time.Minute,
			run: func(s *beatStage, start time.Time, _ io.Writer) string {
				s.tickAt(start, 10*time.Second)
				s.tickAt(start, 59*time.Second)
				s.tickAt(start, 60*time.Second+400*time.Millisecond)
				s.out.waitFor(s.t, "still running (1m0s)\n")
				s.tickAt(start, 119*time.Second)
				s.tickAt(start, 121*time.Second)
				s.out.waitFor(s.t, "still running (2m1s)\n")
				return ""
			},
			want: "  still running (1m0s)\n  still running (2m1s)\n",
		},
		{
			name: "output is a sign of life: the silence counts from the last of it", every: 10 * time.Second,
			run: func(s *beatStage, start time.Time, w io.Writer) string {
				s.setClock(start.Add(5 * time.Second))
				fmt.Fprintf(w, "Collecting django\n")
				s.tickAt(start, 14*time.Second) // 9 s silent: nothing
				s.tickAt(start, 15*time.Second)
				s.out.waitFor(s.t, "still running (15s)\n")
				return ""
			},
			want: "  deps | Collecting django\n  still running (15s)\n",
		},
		{
			name: "a line the command left open is ended before the heartbeat", every: 10 * time.Second,
			run: func(s *beatStage, start time.Time, w io.Writer) string {
				fmt.Fprintf(w, "Downloading 40%%")
				s.tickAt(start, 10*time.Second)
				s.out.waitFor(s.t, "still running (10s)\n")
				return ""
			},
			want: "  deps | Downloading 40%\n  still running (10s)\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newBeatStage(t, tc.every)
			start := s.at
			s.v.StepStarted(build)
			w := s.v.Output(build)
			tc.run(s, start, w)
			s.v.StepDone(apply.StepResult{Step: build, Result: apply.StepOK, Duration: 121})
			got := s.out.String()
			title := "\n+ build deps\n"
			done := "  ok build deps (2m1s)\n"
			if !strings.HasPrefix(got, title) || !strings.HasSuffix(got, done) {
				t.Fatalf("output:\n%s", got)
			}
			if mid := strings.TrimSuffix(strings.TrimPrefix(got, title), done); mid != tc.want {
				t.Errorf("between the title and the result:\n%s\nwant:\n%s", mid, tc.want)
			}
		})
	}
}

// Only the steps that run the app's commands and checks have a heartbeat,
// and none at all without an interval; none outlives its step.
func TestHeartbeatSteps(t *testing.T) {
	for _, tc := range []struct {
		action plan.Action
		every  time.Duration
		want   int
	}{
		{plan.Build, 10 * time.Second, 1},
		{plan.Migrate, 10 * time.Second, 1},
		{plan.Preflight, 10 * time.Second, 1},
		{plan.Health, 10 * time.Second, 1},
		{plan.Fetch, 10 * time.Second, 0},
		{plan.Switch, 10 * time.Second, 0},
		{plan.Service, 10 * time.Second, 0},
		{plan.Build, 0, 0},
	} {
		t.Run(fmt.Sprintf("%s every %s", tc.action, tc.every), func(t *testing.T) {
			s := newBeatStage(t, tc.every)
			st := plan.Step{Action: tc.action, Name: "x"}
			s.v.StepStarted(st)
			s.v.StepDone(apply.StepResult{Step: st, Result: apply.StepOK})
			if s.made != tc.want {
				t.Errorf("heartbeats started: %d, want %d", s.made, tc.want)
			}
			if s.v.beat != nil {
				t.Error("a heartbeat outlived its step")
			}
		})
	}
}

// A real ticker, at a short interval: a silent step gets its line, and
// the result comes after it. The test waits on the line, not on time.
func TestHeartbeatRealTicker(t *testing.T) {
	out := newLineBuffer()
	v := &OperationHuman{W: out, Cmd: "reconciler", Heartbeat: time.Millisecond}
	st := plan.Step{Action: plan.Migrate, Name: "migrate"}
	v.StepStarted(st)
	out.waitFor(t, "  still running (")
	v.StepDone(apply.StepResult{Step: st, Result: apply.StepOK})
	got := out.String()
	lines := strings.Split(strings.TrimRight(got, "\n"), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "  ok ") {
		t.Errorf("the last line is not the step's result:\n%s", got)
	}
}
