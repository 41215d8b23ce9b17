package notify

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/lock"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/scrub"
)

// Events, as notify.on names them.
const (
	Success = desired.NotifySuccess
	Failure = desired.NotifyFailure
	Blocked = desired.NotifyBlocked
	Revert  = desired.NotifyRevert
)

// Ref names a release and its commit.
type Ref struct {
	Release string `json:"release,omitempty"`
	Commit  string `json:"commit,omitempty"` // full SHA
}

// Event is the body of a notification: what an apply did, for machines,
// and Text, one line for people (Slack's incoming webhooks show it).
type Event struct {
	Event   string    `json:"event"` // Success, Failure, Blocked or Revert
	App     string    `json:"app"`
	Host    string    `json:"host"`   // the machine's host name
	Result  string    `json:"result"` // the apply's result, as history has it: ok, failed, blocked
	Time    time.Time `json:"time"`
	Trigger string    `json:"trigger,omitempty"` // what started the apply: cli, schedule, commit, ...
	Ref     string    `json:"ref,omitempty"`     // source.commit as written
	// From is the release linked when the apply started; To is its
	// target (for a revert, the release that failed and was left).
	From    Ref    `json:"from"`
	To      Ref    `json:"to"`
	Error   string `json:"error,omitempty"`
	ApplyID string `json:"apply_id,omitempty"`
	Text    string `json:"text"`
	// Key names the failure the event tells of, "" for none: the failed
	// release and when it failed, or the error of a failure that left no
	// record. The daemon tells each destination of one failure once.
	Key string `json:"-"`
}

// Input is what is known of an apply when it has ended.
type Input struct {
	Desired *desired.State
	Result  *apply.Result // nil when the apply did not take the lock
	Err     error         // what apply.Apply returned
	// Host is the host after the apply, read without git (actual.Observe
	// with a nil Git); it gives the commits of releases. nil when it
	// could not be read.
	Host     *actual.State
	Trigger  string
	Hostname string
	Time     time.Time
}

// Bounds of what an event carries.
const (
	maxError     = history.MaxError // as the history keeps it
	maxTextError = 300              // of the error in Text, which is one line
)

// New makes the event of an apply. ok is false when there is nothing to
// tell: the apply changed nothing, was stopped from outside (it resumes
// next time), or found the root locked by another apply (which tells its
// own outcome).
//
// The events, precisely:
//   - success: the apply ended ok and performed steps (a deploy, a
//     rollback or a repair of drift);
//   - blocked: the plan was blocked because its target failed before and
//     is not retried (apply.BlockedError);
//   - revert: the target was linked, its services or health checks
//     failed, and the host returned to a release that serves;
//   - failure: every other failed apply — a fetch, build, migration or
//     preflight failed (the link did not move), or a failure after the
//     switch left the host on a release that does not serve.
func New(in Input) (Event, bool) {
	res, err := in.Result, in.Err
	var held *lock.HeldError
	switch {
	case errors.Is(err, apply.ErrInterrupted), res != nil && res.Result == history.ResultInterrupted:
		return Event{}, false
	case errors.As(err, &held):
		return Event{}, false
	case err == nil && (res == nil || res.Result != history.ResultOK):
		return Event{}, false
	}
	d := in.Desired
	ev := Event{App: d.App, Host: in.Hostname, Time: in.Time.UTC(), Trigger: in.Trigger, Ref: d.Source.Commit, Result: history.ResultFailed}
	if res != nil {
		ev.Result, ev.ApplyID = res.Result, res.ApplyID
		ev.To = Ref{Release: res.Release, Commit: res.Commit}
		if res.Plan != nil {
			ev.From.Release = res.Plan.Linked
		}
	} else if in.Host != nil {
		ev.From.Release = in.Host.Link.Release
	}
	ev.From.Commit = commitOf(in.Host, ev.From.Release)
	if ev.To.Commit == "" {
		ev.To.Commit = commitOf(in.Host, ev.To.Release)
	}
	var be *apply.BlockedError
	var he *apply.HealthError
	switch {
	case err == nil:
		ev.Event = Success
	case errors.As(err, &be):
		ev.Event = Blocked
		ev.Error = fmt.Sprintf("release %s failed at step %s: %s", be.Release, be.Step, be.Msg)
		at := ""
		if res != nil && res.Plan != nil && res.Plan.Blocked != nil {
			at = res.Plan.Blocked.At
		}
		ev.Key = be.Release + "@" + at
	case errors.As(err, &he) && he.RevertedTo != "" && he.PreviousErr == nil:
		ev.Event = Revert
		ev.Error = err.Error()
		ev.Key = failureKey(in.Host, he.Release)
	default:
		ev.Event = Failure
		ev.Error = err.Error()
		ev.Key = failureKey(in.Host, ev.To.Release)
		if ev.Key == "" {
			ev.Key = "error:" + firstLine(ev.Error)
		}
	}
	ev.Error = scrub.Bound(scrub.Text(ev.Error), maxError)
	ev.Text = text(ev, in, he, be)
	return ev, true
}

// Hostname is the machine's name for Event.Host; "" when it has none.
func Hostname() string {
	h, _ := os.Hostname()
	return h
}

// commitOf is the commit release was built from, from its record.
func commitOf(host *actual.State, release string) string {
	if host == nil || release == "" {
		return ""
	}
	if r := host.Release(release); r != nil && r.Record != nil {
		return r.Record.Commit
	}
	return ""
}

// older reports whether release a was made before release b.
func older(host *actual.State, a, b string) bool {
	if host == nil {
		return false
	}
	ra, rb := host.Release(a), host.Release(b)
	return ra != nil && rb != nil && ra.Record != nil && rb.Record != nil && ra.Record.Created.Before(rb.Record.Created)
}

// failureKey names release's recorded failure as a blocked plan names it
// (plan.Blocked's release and At), so the failure and the blocked plans
// that follow it are one incident; "" when release is not recorded failed.
func failureKey(host *actual.State, release string) string {
	if host == nil || release == "" {
		return ""
	}
	r := host.Release(release)
	if r == nil || r.Record == nil || r.Record.State != record.Failed || r.Record.Failure == nil {
		return ""
	}
	return release + "@" + r.Record.Failure.At.UTC().Format("2006-01-02T15:04:05Z")
}

// text is the event in one line, as Slack shows it.
func text(ev Event, in Input, he *apply.HealthError, be *apply.BlockedError) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %s: ", ev.App, ev.Host)
	linked := ""
	if in.Result != nil {
		linked = in.Result.Linked
	}
	switch ev.Event {
	case Success:
		switch ev.From.Release {
		case "":
			fmt.Fprintf(&b, "deployed %s", ref(ev.To))
		case ev.To.Release:
			fmt.Fprintf(&b, "reconciled %s; it serves", ref(ev.To))
		default:
			if older(in.Host, ev.To.Release, ev.From.Release) {
				fmt.Fprintf(&b, "rolled back to %s, was %s", ref(ev.To), ref(ev.From))
				break
			}
			fmt.Fprintf(&b, "deployed %s, was %s", ref(ev.To), ref(ev.From))
		}
	case Blocked:
		fmt.Fprintf(&b, "%s is blocked: it failed at step %s (%s); the host stays on %s. "+
			"Retry it with `reconciler apply --retry` or change source.commit",
			ref(ev.To), be.Step, clip(be.Msg), orNone(linked))
	case Revert:
		fmt.Fprintf(&b, "%s failed after the switch and was reverted: the host is back on %s, which serves. %s",
			ref(ev.To), ref(Ref{Release: he.RevertedTo, Commit: commitOf(in.Host, he.RevertedTo)}), clip(he.Err.Error()))
	default:
		if ev.To.Release != "" {
			fmt.Fprintf(&b, "deploy of %s failed: %s; the host is on %s", ref(ev.To), clip(ev.Error), orNone(linked))
		} else {
			fmt.Fprintf(&b, "apply of %s failed: %s", ev.Ref, clip(ev.Error))
		}
	}
	return slackEscape(b.String())
}

func ref(r Ref) string {
	if r.Commit == "" {
		return r.Release
	}
	return fmt.Sprintf("%s (commit %s)", r.Release, short(r.Commit))
}

func short(sha string) string {
	if len(sha) > 8 {
		return sha[:8]
	}
	return sha
}

func orNone(release string) string {
	if release == "" {
		return "no release"
	}
	return release
}

// clip is an error's first line, bounded: the text is one line.
func clip(s string) string {
	s = firstLine(scrub.Text(s))
	if r := []rune(s); len(r) > maxTextError {
		s = string(r[:maxTextError]) + "…"
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

// slackEscape escapes what Slack reads as markup: & < and >.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
