package plan

import (
	"fmt"
	"strings"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/services"
)

// Action is what a step does. Its value is the symbol shown before the
// step, as in terraform plan.
type Action string

const (
	Fetch   Action = "fetch"   // update the git cache
	Create  Action = "create"  // make a new release directory
	Export  Action = "export"  // write the commit's tree into the release
	Shared  Action = "shared"  // link the shared paths into the release
	Build   Action = "build"   // run a build step in the release
	Migrate Action = "migrate" // run the migration
	Switch  Action = "switch"  // point the link at the release
	Service Action = "service" // restart or reload a service
	Prune   Action = "prune"   // delete a release
	Health  Action = "health"  // verify the linked release serves; revert if not
)

// Symbol is the mark a step gets in the human rendering.
func (a Action) Symbol() string {
	switch a {
	case Fetch:
		return "<="
	case Switch, Service:
		return "~"
	case Prune:
		return "-"
	case Health:
		return "?"
	}
	return "+"
}

// NewRelease is the Release of steps that act on the release the plan
// creates: its name is given when it is made, by the executor.
const NewRelease = "(new)"

// Step is one thing to do, and why.
type Step struct {
	Action  Action `json:"action"`
	Release string `json:"release,omitempty"` // the release acted on; NewRelease for the one being created
	Name    string `json:"name,omitempty"`    // build step, service or shared path
	Detail  string `json:"detail,omitempty"`  // e.g. the service action, the link target
	Reason  string `json:"reason"`
}

// Plan is the ordered list of steps that takes the host to the desired
// state, with what it was computed from.
type Plan struct {
	App         string `json:"app"`
	Root        string `json:"root"`
	Link        string `json:"link"`
	Ref         string `json:"ref"`
	Commit      string `json:"commit,omitempty"` // full SHA; "" until a fetch resolves Ref
	Fingerprint string `json:"fingerprint"`
	// Target is the release the link will point at: an existing release,
	// or NewRelease.
	Target   string   `json:"target"`
	Linked   string   `json:"linked,omitempty"`   // the release the link points at now
	Previous string   `json:"previous,omitempty"` // the rollback target after this plan
	Steps    []Step   `json:"steps"`
	Warnings []string `json:"warnings,omitempty"`
	// Blocked, when set, is why the target will not be built or linked.
	Blocked *Blocked `json:"blocked,omitempty"`
	// Holding is the last good release a blocked plan keeps the host on:
	// its steps, if any, return the link to it and finish its services and
	// health check, so drift is repaired while the target is blocked.
	Holding string `json:"holding,omitempty"`
}

// Blocked says why a plan refuses to act.
type Blocked struct {
	Release string `json:"release"`
	Step    string `json:"step"`
	Error   string `json:"error"`
	At      string `json:"at"`
}

// Changes reports whether the plan has anything to do.
func (p *Plan) Changes() bool { return len(p.Steps) > 0 }

// Prunes reports whether the plan deletes a release.
func (p *Plan) Prunes() bool {
	for _, s := range p.Steps {
		if s.Action == Prune {
			return true
		}
	}
	return false
}

// NeedsFetch reports whether the plan starts with a fetch, after which the
// executor re-observes and re-plans: only then is the commit known.
func (p *Plan) NeedsFetch() bool { return len(p.Steps) > 0 && p.Steps[0].Action == Fetch }

// Options change how a plan is made.
type Options struct {
	// Retry builds a target again that failed before, resuming at the
	// step that failed. Without it a failed target blocks the plan, so a
	// daemon does not retry a broken release in a loop.
	Retry bool
}

// Error is a host state the plan refuses to act on; it says what to do.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// Make computes the plan that takes host a to desired state d.
func Make(d *desired.State, a *actual.State, opts Options) (*Plan, error) {
	p := &Plan{
		App:         d.App,
		Root:        d.Root,
		Link:        d.Link,
		Ref:         d.Source.Commit,
		Commit:      a.Commit.SHA,
		Fingerprint: d.Fingerprint(),
		Linked:      a.Link.Release,
	}
	if a.Link.Problem != "" {
		return nil, &Error{Msg: fmt.Sprintf("refusing to touch the link: %s; move it away (it may hold something a person needs), then run again", a.Link.Problem)}
	}
	if len(a.MissingShared) > 0 {
		return nil, &Error{Msg: fmt.Sprintf("shared files missing under %s/shared: %s; create them (they hold configuration and secrets the reconciler cannot guess)", d.Root, strings.Join(a.MissingShared, ", "))}
	}
	for _, r := range a.Releases {
		if r.Problem != "" {
			p.Warnings = append(p.Warnings, fmt.Sprintf("releases/%s: %s; left alone", r.Name, r.Problem))
		}
	}
	for _, s := range a.Strays {
		p.Warnings = append(p.Warnings, fmt.Sprintf("releases/%s is not a release; left alone", s))
	}
	if a.HostProblem != "" {
		p.Warnings = append(p.Warnings, "host record: "+a.HostProblem)
	}

	commit := a.Commit.SHA
	if commit == "" && desired.IsHash(d.Source.Commit) {
		// A short SHA the cache can't resolve may still name a release on
		// disk: a rollback should need neither the cache nor the network.
		commit = uniqueCommitWithPrefix(a, d.Source.Commit)
		p.Commit = commit
	}

	// Find the target: a release of this commit and fingerprint.
	var target *actual.Release
	if commit != "" {
		target = findTarget(a, commit, p.Fingerprint)
	}
	done := target != nil && target.Complete()
	if !done && !a.Commit.InCache {
		why := a.Commit.Why
		if why == "" {
			why = fmt.Sprintf("%s is not in the cache", d.Source.Commit)
		}
		p.Steps = append(p.Steps, Step{Action: Fetch, Name: "repo", Reason: why})
	}

	if target != nil && target.Record.State == record.Failed && !opts.Retry {
		f := target.Record.Failure
		p.Blocked = &Blocked{Release: target.Name}
		if f != nil {
			p.Blocked.Step, p.Blocked.Error, p.Blocked.At = f.Step, f.Error, f.At.UTC().Format("2006-01-02T15:04:05Z")
		}
		p.Target = target.Name
		p.Steps = nil
		hold, why := lastGood(a, target.Name)
		if hold == "" {
			if why != "" {
				p.Warnings = append(p.Warnings, why)
			}
			return p, nil
		}
		// Invariant 10: the host stays on the last good release. A link
		// moved or deleted by hand, or a revert interrupted before its
		// services acted, is repaired towards it, never towards the target.
		p.Holding = hold
		p.Steps, p.Previous, _ = settle(d, a, hold, "verify the last good release serves")
		return p, nil
	}

	name := NewRelease
	if target != nil {
		name = target.Name
	}
	p.Target = name
	if !done {
		p.Steps = append(p.Steps, buildSteps(d, target, name, commit)...)
	}

	var switched bool
	var settleSteps []Step
	settleSteps, p.Previous, switched = settle(d, a, name, "verify the release serves; return to the previous one if not")
	p.Steps = append(p.Steps, settleSteps...)
	prune, warnings := pruneSteps(d, a, name, p.Previous, switched)
	p.Steps = append(p.Steps, prune...)
	p.Warnings = append(p.Warnings, warnings...)
	return p, nil
}

// lastGood is the release a host with a blocked target stays on: the one
// the host record links, when it is complete and on disk. Otherwise there
// is nothing to hold and, when the link is broken, why.
func lastGood(a *actual.State, failed string) (name, why string) {
	if a.Host == nil || a.Host.Linked == "" || a.Host.Linked == failed {
		return "", ""
	}
	r := a.Release(a.Host.Linked)
	if r == nil || !r.Complete() {
		if a.Link.Release == "" {
			return "", fmt.Sprintf("releases/%s, the last good release, is gone and the target is blocked: nothing to return the link to", a.Host.Linked)
		}
		return "", ""
	}
	return a.Host.Linked, ""
}

// settle plans what puts the link on release name and leaves it serving:
// the switch, the service actions and the health check, each only when
// not already done. It returns the previous release (the rollback target
// after the plan) and whether the link moves.
func settle(d *desired.State, a *actual.State, name, verify string) (steps []Step, previous string, switched bool) {
	switched = a.Link.Release != name
	if switched {
		reason := "the link does not exist yet"
		switch {
		case a.Link.Dangling:
			reason = fmt.Sprintf("the link is dangling (%s)", a.Link.Target)
		case a.Link.Release != "":
			reason = fmt.Sprintf("the link points at %s%s", a.Link.Release, commitOf(a, a.Link.Release))
		}
		steps = append(steps, Step{Action: Switch, Release: name, Name: d.Link, Detail: "releases/" + name, Reason: reason})
		previous = a.Link.Release
	} else if a.Host != nil && a.Host.Linked == a.Link.Release {
		previous = a.Host.Previous
	} else if a.Host != nil {
		// The link moved after the host record was written: a switch
		// that stopped before recording, or a hand edit. The release
		// recorded is where the link came from.
		previous = a.Host.Linked
	}

	// Services act when the link moves, or when it moved in an apply that
	// stopped before they acted.
	pending := ""
	if !switched && a.Link.Release != "" && len(d.Services) > 0 {
		switch {
		case a.Host == nil || a.Host.Linked != a.Link.Release:
			pending = fmt.Sprintf("the link moved to %s without the services acting", a.Link.Release)
		case !a.Host.ServicesDone:
			pending = fmt.Sprintf("an apply switched to %s and stopped before the services acted", a.Link.Release)
		}
	}
	if switched || pending != "" {
		for _, svc := range d.Services {
			reason := "the link moves"
			if pending != "" {
				reason = pending
			}
			steps = append(steps, Step{Action: Service, Name: svc.Name, Detail: svc.Action, Reason: reason})
		}
	}
	if NeedsHealth(d) {
		switch {
		case switched || pending != "":
			steps = append(steps, Step{Action: Health, Release: name, Name: "health", Detail: HealthDetail(d), Reason: verify})
		case a.Host != nil && a.Host.Linked == a.Link.Release && !a.Host.Verified:
			steps = append(steps, Step{Action: Health, Release: name, Name: "health", Detail: HealthDetail(d),
				Reason: fmt.Sprintf("an apply switched to %s and stopped before its health was checked", a.Link.Release)})
		}
	}
	return steps, previous, switched
}

// NeedsHealth reports whether d has anything to verify after a switch:
// health checks, or services whose processes the reconciler can find.
func NeedsHealth(d *desired.State) bool {
	if len(d.Health) > 0 {
		return true
	}
	for _, s := range d.Services {
		if len(s.Health) > 0 || services.HasPID(s) {
			return true
		}
	}
	return false
}

// HealthDetail says what a health step verifies.
func HealthDetail(d *desired.State) string {
	var parts []string
	for _, s := range d.Services {
		if services.HasPID(s) {
			parts = append(parts, s.Name+" runs from it")
		}
		for _, c := range s.Health {
			parts = append(parts, c.Name())
		}
	}
	for _, c := range d.Health {
		parts = append(parts, c.Name())
	}
	return strings.Join(parts, ", ")
}

func commitOf(a *actual.State, name string) string {
	if r := a.Release(name); r != nil && r.Record != nil {
		return " (commit " + short(r.Record.Commit) + ")"
	}
	return ""
}

func uniqueCommitWithPrefix(a *actual.State, prefix string) string {
	found := ""
	for _, r := range a.Releases {
		if r.Record == nil || !strings.HasPrefix(r.Record.Commit, prefix) {
			continue
		}
		if found != "" && found != r.Record.Commit {
			return "" // ambiguous: let the cache decide
		}
		found = r.Record.Commit
	}
	return found
}

// findTarget picks the release of commit built with fingerprint: a
// complete one first, then one being built, then a failed one; the newest
// of each.
func findTarget(a *actual.State, commit, fp string) *actual.Release {
	var best *actual.Release
	rank := func(r *actual.Release) int {
		switch r.Record.State {
		case record.Complete:
			return 3
		case record.Building:
			return 2
		}
		return 1
	}
	for i := range a.Releases {
		r := &a.Releases[i]
		if r.Record == nil || r.Record.Commit != commit || r.Record.Fingerprint != fp {
			continue
		}
		if best == nil || rank(r) >= rank(best) {
			best = r
		}
	}
	return best
}

// Names of the reconciler's own release steps, as recorded.
const (
	StepExport  = "export"
	StepShared  = "shared"
	StepMigrate = "migrate"
)

// ReleaseSteps lists the steps that build a release of d, in order, with
// the fingerprints they are recorded under.
func ReleaseSteps(d *desired.State) []desired.Step {
	steps := []desired.Step{{Name: StepExport, Run: "export " + d.Source.Path}}
	if len(d.Shared.Dirs)+len(d.Shared.Files) > 0 {
		steps = append(steps, desired.Step{Name: StepShared, Run: "link " + strings.Join(d.Shared.Dirs, ",") + ";" + strings.Join(d.Shared.Files, ",")})
	}
	steps = append(steps, d.Build...)
	if d.Migrate != nil {
		steps = append(steps, *d.Migrate)
	}
	return steps
}

func buildSteps(d *desired.State, target *actual.Release, name, commit string) []Step {
	var out []Step
	if target == nil {
		reason := "no release of this commit and build is on disk"
		if commit != "" {
			reason = fmt.Sprintf("no release of %s with build %s is on disk", short(commit), d.Fingerprint())
		}
		out = append(out, Step{Action: Create, Release: name, Reason: reason})
	}
	resumed := false
	for _, st := range ReleaseSteps(d) {
		if target != nil && target.Record.Done(st.Name, st.Fingerprint()) {
			continue
		}
		reason := "new release"
		if target != nil {
			reason = "not completed in " + target.Name
			if target.Record.State == record.Failed && !resumed {
				reason = "failed before; retrying"
			} else if !resumed {
				reason = "resuming: first step not completed"
			}
			resumed = true
		}
		s := Step{Release: name, Name: st.Name, Reason: reason}
		switch st.Name {
		case StepExport:
			s.Action = Export
			s.Detail = exportDetail(d, commit)
		case StepShared:
			s.Action = Shared
			s.Detail = strings.Join(append(append([]string{}, d.Shared.Dirs...), d.Shared.Files...), ", ")
		case StepMigrate:
			s.Action = Migrate
		default:
			s.Action = Build
		}
		out = append(out, s)
	}
	return out
}

func exportDetail(d *desired.State, commit string) string {
	c := d.Source.Commit
	if commit != "" {
		c = short(commit)
	}
	if d.Source.Path != "" {
		return c + ":" + d.Source.Path
	}
	return c
}

// pruneSteps deletes what a converged host no longer needs. It never
// deletes the target, the release linked now or after this plan, or the
// previous release (the rollback target).
func pruneSteps(d *desired.State, a *actual.State, target, previous string, switched bool) (out []Step, warnings []string) {
	protected := map[string]bool{target: true, a.Link.Release: true, previous: true}
	var complete []actual.Release
	for _, r := range a.Releases {
		if pids := a.InUse[r.Name]; len(pids) > 0 && !protected[r.Name] && r.Record != nil {
			// A process still runs from it: deleting it would pull the
			// files from under a live server. Count it as kept.
			warnings = append(warnings, fmt.Sprintf("releases/%s is in use by pid %s; not pruned", r.Name, pidList(pids)))
			protected[r.Name] = true
		}
	}
	for _, r := range a.Releases {
		switch {
		case protected[r.Name] || r.Record == nil:
			// Releases without a readable record are left to a person.
		case r.Record.State == record.Complete:
			complete = append(complete, r)
		case switched:
			// Unfinished and failed releases of other targets go after a
			// switch: the host has moved on from them.
			reason := "unfinished release of " + short(r.Record.Commit)
			if r.Record.State == record.Failed {
				reason = "failed release of " + short(r.Record.Commit)
				if f := r.Record.Failure; f != nil {
					reason += " (step " + f.Step + ")"
				}
			}
			out = append(out, Step{Action: Prune, Release: r.Name, Reason: reason})
		}
	}
	kept := 0
	for name := range protected {
		if name == "" {
			continue
		}
		// The target counts as complete: the plan completes it before
		// anything is pruned.
		if name == target {
			kept++
		} else if r := a.Release(name); r != nil && r.Complete() {
			kept++
		}
	}
	// a.Releases is oldest first: keep the newest, prune the oldest.
	var old []Step
	for i := len(complete) - 1; i >= 0; i-- {
		if kept < d.Keep {
			kept++
			continue
		}
		old = append(old, Step{Action: Prune, Release: complete[i].Name, Reason: fmt.Sprintf("beyond keep: %d", d.Keep)})
	}
	for i := len(old) - 1; i >= 0; i-- {
		out = append(out, old[i])
	}
	return out, warnings
}

func pidList(pids []int) string {
	var s []string
	for i, p := range pids {
		if i == 3 {
			s = append(s, fmt.Sprintf("and %d more", len(pids)-3))
			break
		}
		s = append(s, fmt.Sprint(p))
	}
	return strings.Join(s, ", ")
}

func short(sha string) string {
	if len(sha) > 8 {
		return sha[:8]
	}
	return sha
}
