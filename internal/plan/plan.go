package plan

import (
	"fmt"
	"strings"
	"time"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/services"
	"github.com/reconciler-dev/reconciler/internal/stepcache"
)

// Action is what a step does. Its value is the word shown before the
// step, as in terraform plan; Symbol is its mark.
type Action string

const (
	Fetch   Action = "fetch"   // update the git cache
	Create  Action = "create"  // make a new release directory
	Export  Action = "export"  // write the commit's tree into the release
	Shared  Action = "shared"  // link the shared paths into the release
	Build   Action = "build"   // run a build step in the release
	Migrate Action = "migrate" // run the migration
	// Preflight starts the new release on a loopback port and checks it,
	// before the switch.
	Preflight Action = "preflight"
	Switch    Action = "switch"  // point the link at the release
	Service   Action = "service" // restart or reload a service
	Health    Action = "health"  // verify the linked release serves
	Fail      Action = "fail"    // record a release failed after its switch
	Prune     Action = "prune"   // delete a release
	// Reverse unapplies migrations the target lacks, with the code of the
	// linked release, before the switch (migrate.on_rollback: reverse).
	Reverse Action = "reverse"
	// Schema records a switch that leaves the schema ahead of the target
	// (migrate.on_rollback: warn).
	Schema Action = "schema"
	// Record lists a release's migrations for the record, which lacks
	// them (see recordSteps): it changes nothing but the record.
	Record Action = "record"
)

// Symbol is the mark a step gets in the human rendering.
func (a Action) Symbol() string {
	switch a {
	case Fetch:
		return "<="
	case Switch, Service:
		return "~"
	case Prune, Reverse:
		return "-"
	case Health, Preflight:
		return "?"
	case Fail, Schema:
		return "!"
	}
	return "+"
}

// IsReleaseStep reports whether the action builds the release: its
// completion is recorded in the release, and the last one completes it.
func (a Action) IsReleaseStep() bool {
	switch a {
	case Export, Shared, Build, Migrate, Preflight:
		return true
	}
	return false
}

// NewRelease stands for the release a plan creates while the commit, and
// so the release's name, is not known yet: only in a plan that starts with
// a fetch, which the executor makes again after fetching.
const NewRelease = "(new)"

// SharedPaths are the shared paths a Shared step links.
type SharedPaths struct {
	Dirs  []string `json:"dirs,omitempty"`
	Files []string `json:"files,omitempty"`
}

// Step is one thing to do, why, and everything needed to do it: the
// executor never looks anything up in the desired state.
type Step struct {
	Action  Action `json:"action"`
	Release string `json:"release,omitempty"` // the release acted on
	Commit  string `json:"commit,omitempty"`  // that release's commit
	Name    string `json:"name,omitempty"`    // build step, service, link or check name
	Detail  string `json:"detail,omitempty"`  // e.g. the service action, the link target
	Reason  string `json:"reason"`

	// Run is the shell command of a build step, the migration, a service
	// action or the preflight's server, run with Timeout (the preflight's:
	// the whole of it, its checks included).
	Run     string        `json:"run,omitempty"`
	Timeout time.Duration `json:"timeout_ns,omitempty"`
	// RunAs is the user a build step, the migration or a health step's
	// command checks run as; "" for the reconciler's own user.
	RunAs string `json:"run_as,omitempty"`
	// Fingerprint is what a release step is recorded done under.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Before is the release transition performed before the step runs:
	// Rebuild for the first step of a retried build, Built or Relink for a
	// switch to a release whose steps are all recorded.
	Before record.Event `json:"before,omitempty"`
	// Completes: the release is complete once this release step is done.
	Completes bool `json:"completes,omitempty"`
	// After a switch, service action or health step: what the host
	// record says once it succeeded. Verified also records the release
	// healthy (the rollback target is derived from that).
	ServicesDone bool `json:"services_done,omitempty"`
	Verified     bool `json:"verified,omitempty"`

	Path   string       `json:"path,omitempty"`   // export: the subdirectory of the repository
	Shared *SharedPaths `json:"shared,omitempty"` // shared: what to link
	// Health: the services whose processes must run from the release, and
	// the checks that must pass, in order. Preflight: its checks. Service:
	// the service it acts on (Run is the same action through its manager's
	// command line).
	Services []desired.Service `json:"-"`
	Checks   []desired.Check   `json:"-"`
	// Fail: what is recorded.
	Failure *record.Failure `json:"failure,omitempty"`
	// Cache: a cached build step, and what the plan expects of it; on a
	// prune, the cache entry it deletes ("<step>/<key>").
	Cache      *CacheUse `json:"cache,omitempty"`
	CacheEntry string    `json:"cache_entry,omitempty"`

	// In is the release whose code a reverse step runs (the linked one,
	// which has the migrations), and InCommit its commit.
	In       string `json:"in,omitempty"`
	InCommit string `json:"in_commit,omitempty"`
	// Migrations: what a reverse step unapplies (newest first), what a
	// schema step records as staying applied, what a migrate run again
	// applies ("app.name").
	Migrations []string `json:"migrations,omitempty"`
	// Track: a migrate or reverse step reads the migrations afterwards
	// and records them.
	Track *Track `json:"track,omitempty"`
	// AfterMigrate: a preflight whose server starts once the migration
	// is done, not beside it (preflight.start: after_migrate).
	AfterMigrate bool `json:"after_migrate,omitempty"`
	// Rerun: a migrate step of a complete release, run again before its
	// switch because some of its migrations are no longer applied (a
	// reverse unapplied them). Its record changes only if it fails.
	Rerun bool `json:"rerun,omitempty"`
	// Replan: the plan is made again after this step (a record step of
	// the linked release, whose migrations the switch's check needs).
	Replan bool `json:"replan,omitempty"`
}

// CacheUse is what a cached build step needs, and what the plan expects:
// the key is read from the commit's tree, and made again from the release
// when the step runs, which decides.
type CacheUse struct {
	Spec     stepcache.Spec `json:"-"`
	KeyFiles []string       `json:"key_files"`
	Paths    []string       `json:"paths"`
	Key      string         `json:"key,omitempty"` // "" when not known yet
	Why      string         `json:"why,omitempty"` // why Key is not known
	Hit      bool           `json:"hit"`           // a sealed entry of Key is on disk
	From     string         `json:"from,omitempty"`
}

// Symbol is the step's mark: a build step whose outputs are cached is
// "=", nothing is built.
func (s Step) Symbol() string {
	if s.Cache != nil && s.Cache.Hit {
		return "="
	}
	return s.Action.Symbol()
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
	// the one the plan creates, or NewRelease.
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
	// Reverting is set on the plan that returns the host to its rollback
	// target after the target failed once linked.
	Reverting *Reverting `json:"reverting,omitempty"`
	// Ships is what moving the link from the linked commit (ShipsFrom) to
	// Commit ships, or takes away.
	Ships     *gitcache.Log `json:"ships,omitempty"`
	ShipsFrom string        `json:"ships_from,omitempty"`
	// Changed are the fields of desired.yaml changed since the last
	// successful apply ("build[1].run", "env.SECRET_KEY": keys, never
	// values).
	Changed []string `json:"changed,omitempty"`
	// Schema is set when the target lacks migrations that are applied:
	// which, and what migrate.on_rollback does about it.
	Schema *SchemaAhead `json:"schema_ahead,omitempty"`
	// Rollback is set on the plan `reconciler rollback` makes: a failed
	// check does not revert it, the operator chose where to go.
	Rollback bool `json:"rollback,omitempty"`
	// Env is the environment desired.yaml gives every command. Its values
	// may be secrets: never rendered.
	Env []desired.EnvVar `json:"-"`
}

// Blocked says why a plan refuses to act.
type Blocked struct {
	Release string `json:"release"`
	Step    string `json:"step"`
	Error   string `json:"error"`
	Output  string `json:"output,omitempty"`
	At      string `json:"at"`
	// Policy is set when no release failed: the target lacks applied
	// migrations and migrate.on_rollback refuses the switch ("block").
	Policy string `json:"policy,omitempty"`
}

// Reverting says what a revert plan undoes.
type Reverting struct {
	From  string `json:"from"` // the release that failed
	Step  string `json:"step"` // where: "health", "service web"
	Error string `json:"error"`
}

// Changes reports whether the plan has anything to do.
func (p *Plan) Changes() bool { return len(p.Steps) > 0 }

// NeedsFetch reports whether the plan starts with a fetch, after which the
// executor re-observes and re-plans: only then is the commit known.
func (p *Plan) NeedsFetch() bool { return len(p.Steps) > 0 && p.Steps[0].Action == Fetch }

// RevertsOnFailure reports whether a failed service action or health check
// of this plan returns the host to its rollback target: only a plan that
// moves forward does; holding and reverting have nothing better to go to.
func (p *Plan) RevertsOnFailure() bool { return p.Blocked == nil && p.Reverting == nil && !p.Rollback }

// Options change how a plan is made.
type Options struct {
	// Retry builds a target again that failed before, resuming at the
	// step that failed. Without it a failed target blocks the plan, so a
	// daemon does not retry a broken release in a loop.
	Retry bool
	// Now names a release the plan creates. The plan reads no clock.
	Now time.Time
	// AsRoot: the reconciler runs as root, so commands without run_as
	// run as root too; the plan warns.
	AsRoot bool
	// LinkedUnlisted: listing the linked release's migrations failed in
	// this apply, so the plan does not ask for it again (see
	// recordLinked) and judges a switch on the record as it is.
	LinkedUnlisted bool
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
		Env:         d.Env,
	}
	if a.Link.Problem != "" {
		return nil, &Error{Msg: fmt.Sprintf("refusing to touch the link: %s; move it away, then run again", a.Link.Problem)}
	}
	if len(a.MissingShared) > 0 {
		return nil, &Error{Msg: fmt.Sprintf("shared files missing under %s/shared: %s; create them (they hold configuration and secrets the reconciler cannot guess)", d.Root, strings.Join(a.MissingShared, ", "))}
	}
	p.Warnings = warnings(a)
	p.Ships, p.ShipsFrom = a.Ships, a.ShipsFrom
	p.Changed = desired.Changed(a.Applied, d.Snapshot())
	if a.Suspended != nil {
		p.Warnings = append(p.Warnings, a.Suspended.Describe()+"; apply refuses until resumed (reconciler resume)")
	}
	if opts.AsRoot && d.RunAs == "" && (len(d.Build) > 0 || d.Migrate != nil) {
		p.Warnings = append(p.Warnings, "running as root with no run_as: build steps, the migration and command checks run as root; set run_as: to the app's user")
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
		return blocked(d, a, p, target), nil
	}

	name := NewRelease
	switch {
	case target != nil:
		name = target.Name
	case commit != "":
		name = newReleaseName(a, opts.Now, commit)
	}
	p.Target = name
	if !done {
		p.Steps = append(p.Steps, buildSteps(d, a, target, name, commit)...)
	}
	p.Previous = a.RollbackTarget(name)
	built := target != nil && (len(p.Steps) == 0 || !p.Steps[len(p.Steps)-1].Action.IsReleaseStep())
	var pre []Step
	if built {
		// A release on disk: its migrations are known, and the schema
		// may be ahead of them (a rollback) or behind (after a reverse).
		var schema *SchemaAhead
		var warns []string
		pre, schema, warns = migrationSteps(d, a, name, commit, opts.LinkedUnlisted)
		p.Warnings = append(p.Warnings, warns...)
		if schema != nil && len(pre) == 0 && schema.Policy != desired.OnRollbackWarn {
			return schemaBlocked(p, schema), nil
		}
		p.Schema = schema
	}
	settleSteps, switched := settle(d, a, name, commit, "verify the release serves; return to the previous one if not")
	rest := pre
	if len(rest) > 0 && rest[0].Replan {
		rest = rest[1:] // the linked release's: the transition is the target's
	}
	if first := firstOf(rest, settleSteps); built && !done && first != nil {
		// Every step is recorded, yet the release is not complete: a
		// record left "building" (an interrupted write, an older
		// writer), or --retry of a release that was built and failed
		// after its switch (or at a migrate run again, or a reverse),
		// which its steps will judge anew.
		first.Before = record.Built
		if target.Record.State == record.Failed {
			first.Before = record.Relink
		}
	}
	p.Steps = append(p.Steps, pre...)
	p.Steps = append(p.Steps, settleSteps...)
	p.Steps = append(p.Steps, recordSteps(d, a, name, commit, p.Steps)...)
	prunes := pruneSteps(d, a, name, p.Previous, switched)
	p.Steps = append(p.Steps, prunes...)
	p.Steps = append(p.Steps, cachePruneSteps(a, p.Steps, prunes)...)
	for _, e := range a.Cache {
		if e.Problem != "" {
			p.Warnings = append(p.Warnings, fmt.Sprintf("cache/%s: %s; left alone", e.Name(), e.Problem))
		}
	}
	return p, nil
}

// firstOf is the first step of lists, in order; nil when all are empty.
func firstOf(lists ...[]Step) *Step {
	for _, l := range lists {
		if len(l) > 0 {
			return &l[0]
		}
	}
	return nil
}

func warnings(a *actual.State) []string {
	var out []string
	for _, r := range a.Releases {
		if r.Problem != "" {
			out = append(out, fmt.Sprintf("releases/%s: %s; left alone", r.Name, r.Problem))
		}
	}
	for _, s := range a.Strays {
		out = append(out, fmt.Sprintf("releases/%s is not a release; left alone", s))
	}
	if a.HostProblem != "" {
		out = append(out, "host record: "+a.HostProblem)
	}
	return out
}

// blocked is the plan for a target that failed before: nothing towards it.
// Invariant 10: the host stays on the last good release. A link moved or
// deleted by hand, or a revert interrupted before its services acted, is
// repaired towards it, never towards the target.
func blocked(d *desired.State, a *actual.State, p *Plan, target *actual.Release) *Plan {
	p.Blocked = &Blocked{Release: target.Name}
	if f := target.Record.Failure; f != nil {
		p.Blocked.Step, p.Blocked.Error, p.Blocked.Output, p.Blocked.At = f.Step, f.Error, f.Output, f.At.UTC().Format("2006-01-02T15:04:05Z")
	}
	p.Target = target.Name
	p.Steps = nil
	hold := a.RollbackTarget(target.Name)
	if hold == "" {
		if a.Link.Release == "" {
			p.Warnings = append(p.Warnings, "no release that served healthy is on disk, and the target is blocked: nothing to return the link to")
		}
		return p
	}
	r := a.Release(hold)
	p.Holding = hold
	p.Previous = a.RollbackTarget(hold)
	p.Steps, _ = settle(d, a, hold, r.Record.Commit, "verify the last good release serves")
	return p
}

// Revert plans the return to the rollback target after release failed at
// step once linked (a service action or health check): switch back, record
// the failure, act on the services and verify the release returned to.
// The failure is recorded after the link moved away, so the link points at
// a failed release only when there is nothing to return to.
func Revert(d *desired.State, a *actual.State, failed string, f record.Failure) *Plan {
	p := &Plan{App: d.App, Root: d.Root, Link: d.Link, Ref: d.Source.Commit, Fingerprint: d.Fingerprint(),
		Linked: a.Link.Release, Env: d.Env, Reverting: &Reverting{From: failed, Step: f.Step, Error: f.Error}}
	p.Warnings = warnings(a)
	if r := a.Release(failed); r != nil && r.Record != nil {
		p.Commit = r.Record.Commit
	}
	fail := Step{Action: Fail, Release: failed, Commit: p.Commit, Name: f.Step, Failure: &f,
		Reason: "its " + f.Step + " failed: it is not retried until asked (apply --retry) or the target changes"}
	back := a.RollbackTarget(failed)
	if back == "" {
		p.Target = failed
		fail.Reason = "there is no release that served healthy to return to: the link stays on it"
		p.Steps = []Step{fail}
		return p
	}
	p.Target = back
	p.Previous = a.RollbackTarget(back)
	steps, switched := settle(d, a, back, a.Release(back).Record.Commit, "verify the release returned to serves")
	if switched {
		p.Steps = append(p.Steps, steps[0], fail)
		p.Steps = append(p.Steps, steps[1:]...)
	} else {
		p.Steps = append([]Step{fail}, steps...)
	}
	return p
}

// Rollback plans `reconciler rollback`: the link to release to — the
// rollback target when "" — then the services and the health check. It
// builds nothing, fetches nothing and prunes nothing: a release on disk is
// all it needs, and the host keeps every release it might go back to.
func Rollback(d *desired.State, a *actual.State, to string, opts Options) (*Plan, error) {
	if a.Link.Problem != "" {
		return nil, &Error{Msg: fmt.Sprintf("refusing to touch the link: %s; move it away, then run again", a.Link.Problem)}
	}
	if to == "" {
		if to = a.RollbackTarget(a.Link.Release); to == "" {
			return nil, &Error{Msg: "no release other than the linked one served healthy: there is nothing to roll back to (reconciler status lists the releases)"}
		}
	}
	r, err := findRelease(a, to)
	if err != nil {
		return nil, err
	}
	switch {
	case r.Record == nil:
		return nil, &Error{Msg: fmt.Sprintf("release %s has no readable record (%s): refusing to link it", r.Name, r.Problem)}
	case r.Record.State == record.Failed && r.Record.Failure != nil:
		return nil, &Error{Msg: fmt.Sprintf("release %s failed at step %s (%s): refusing to roll back to it", r.Name, r.Record.Failure.Step, firstLine(r.Record.Failure.Error))}
	case r.Record.State != record.Complete:
		return nil, &Error{Msg: fmt.Sprintf("release %s is %s, not complete: refusing to link it", r.Name, r.Record.State)}
	}
	p := &Plan{App: d.App, Root: d.Root, Link: d.Link, Ref: r.Record.Commit, Commit: r.Record.Commit, Fingerprint: r.Record.Fingerprint,
		Target: r.Name, Linked: a.Link.Release, Env: d.Env, Rollback: true}
	p.Warnings = warnings(a)
	p.Previous = a.RollbackTarget(r.Name)
	pre, schema, warns := migrationSteps(d, a, r.Name, r.Record.Commit, opts.LinkedUnlisted)
	p.Warnings = append(p.Warnings, warns...)
	if schema != nil && len(pre) == 0 && schema.Policy != desired.OnRollbackWarn {
		return schemaBlocked(p, schema), nil
	}
	p.Schema = schema
	p.Steps, _ = settle(d, a, r.Name, r.Record.Commit, "verify the release rolled back to serves")
	p.Steps = append(pre, p.Steps...)
	return p, nil
}

// findRelease finds a release by its name or a unique prefix of it.
func findRelease(a *actual.State, name string) (*actual.Release, error) {
	var found []*actual.Release
	for i := range a.Releases {
		r := &a.Releases[i]
		if r.Name == name {
			return r, nil
		}
		if strings.HasPrefix(r.Name, name) {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		var names []string
		for _, r := range a.Releases {
			names = append(names, r.Name)
		}
		return nil, &Error{Msg: fmt.Sprintf("no release %s on disk; there are: %s", name, strings.Join(names, ", "))}
	}
	return nil, &Error{Msg: fmt.Sprintf("%s names %d releases (%s, %s, …): give more of the name", name, len(found), found[0].Name, found[1].Name)}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// newReleaseName names the release the plan creates: made here from the
// clock the caller passed and the commit, never from input, and distinct
// from every entry under releases/.
func newReleaseName(a *actual.State, now time.Time, commit string) string {
	taken := map[string]bool{}
	for _, r := range a.Releases {
		taken[r.Name] = true
	}
	for _, s := range a.Strays {
		taken[s] = true
	}
	for n := 0; ; n++ {
		if name := layout.ReleaseName(now, commit, n); !taken[name] {
			return name
		}
	}
}

// settle plans what puts the link on release name and leaves it serving:
// the switch, the service actions and the health check, each only when
// not already done. It reports whether the link moves.
func settle(d *desired.State, a *actual.State, name, commit, verify string) (steps []Step, switched bool) {
	switched = a.Link.Release != name
	if switched {
		reason := "the link does not exist yet"
		switch {
		case a.Link.Dangling:
			reason = fmt.Sprintf("the link is dangling (%s)", a.Link.Target)
		case a.Link.Release != "":
			reason = fmt.Sprintf("the link points at %s%s", a.Link.Release, commitOf(a, a.Link.Release))
		}
		steps = append(steps, Step{Action: Switch, Release: name, Commit: commit, Name: d.Link, Detail: layout.LinkTarget(name), Reason: reason})
	}

	// Services act when the link moves, or when it moved in an apply that
	// stopped before they acted.
	pending := ""
	retrying := ""
	if r := a.Release(a.Link.Release); !switched && r != nil && r.Record != nil && r.Record.State == record.Failed && r.Record.Failure != nil {
		retrying = fmt.Sprintf("retrying: %s failed at step %s", r.Name, r.Record.Failure.Step)
	}
	if !switched && a.Link.Release != "" && len(d.Services) > 0 {
		switch {
		case retrying != "" && (a.Host == nil || !a.Host.ServicesDone):
			pending = retrying
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
			script, _ := services.Script(svc) // the manager was validated by desired
			steps = append(steps, Step{Action: Service, Release: name, Commit: commit, Name: svc.Name, Detail: svc.Action,
				Run: script, Timeout: svc.Timeout, Reason: reason, Services: []desired.Service{svc}})
		}
	}
	if NeedsHealth(d) {
		h := Step{Action: Health, Release: name, Commit: commit, Name: "health", Detail: HealthDetail(d), Reason: verify, RunAs: d.RunAs}
		for _, s := range d.Services {
			if services.HasPID(s) {
				h.Services = append(h.Services, s)
			}
			h.Checks = append(h.Checks, s.Health...)
		}
		h.Checks = append(h.Checks, d.Health...)
		switch {
		case switched || pending != "":
			steps = append(steps, h)
		case a.Host != nil && a.Host.Linked == a.Link.Release && !a.Host.Verified:
			h.Reason = fmt.Sprintf("an apply switched to %s and stopped before its health was checked", a.Link.Release)
			if retrying != "" {
				h.Reason = retrying
			}
			steps = append(steps, h)
		}
	}
	// What the host record says after each step: the services are done
	// after the last of them (or the switch when there are none); the
	// release is verified after the health check, or what comes last.
	if n := len(steps); n > 0 {
		steps[n-1].Verified = true
		for i := n - 1; i >= 0; i-- {
			if steps[i].Action == Service || steps[i].Action == Switch {
				steps[i].ServicesDone = true
				break
			}
		}
		if steps[0].Action == Health {
			steps[0].ServicesDone = true // they acted before: only the check was pending
		}
	}
	return steps, switched
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

func checkNames(cs []desired.Check) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, c.Name())
	}
	return strings.Join(parts, ", ")
}

func commitOf(a *actual.State, name string) string {
	if r := a.Release(name); r != nil && r.Record != nil {
		return " (commit " + layout.Short(r.Record.Commit) + ")"
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
	StepExport    = "export"
	StepShared    = "shared"
	StepMigrate   = "migrate"
	StepPreflight = "preflight"
)

// ReleaseSteps lists the steps that build a release of d, in order, as
// plan steps carrying what they run and the fingerprint they are recorded
// under.
func ReleaseSteps(d *desired.State) []Step {
	var out []Step
	// The export and shared steps are the reconciler's own: their Run is
	// only what their fingerprint is made of, nothing to run.
	add := func(a Action, st desired.Step) {
		s := Step{Action: a, Name: st.Name, Timeout: st.Timeout, Fingerprint: st.Fingerprint()}
		if a == Build || a == Migrate {
			s.Run, s.RunAs = st.Run, st.RunAs
		}
		out = append(out, s)
	}
	cacheOf := map[string]*CacheUse{}
	for i, st := range d.Build {
		if st.Cache != nil {
			cacheOf[st.Name] = &CacheUse{Spec: stepcache.SpecOf(d, i), KeyFiles: st.Cache.Key, Paths: st.Cache.Paths}
		}
	}
	add(Export, desired.Step{Name: StepExport, Run: "export " + d.Source.Path})
	if len(d.Shared.Dirs)+len(d.Shared.Files) > 0 {
		add(Shared, desired.Step{Name: StepShared, Run: "link " + strings.Join(d.Shared.Dirs, ",") + ";" + strings.Join(d.Shared.Files, ",")})
	}
	for _, st := range d.Build {
		add(Build, st)
		out[len(out)-1].Cache = cacheOf[st.Name]
	}
	if d.Migrate != nil {
		add(Migrate, *d.Migrate)
		out[len(out)-1].Track = TrackOf(d)
	}
	if pf := d.Preflight; pf != nil {
		// Last: the release is checked as it will be linked, migrated.
		// Recorded like a build step, so a resumed apply does not start
		// it again once it passed.
		out = append(out, Step{Action: Preflight, Name: StepPreflight, Run: pf.Run, Timeout: pf.Timeout, RunAs: pf.RunAs,
			Fingerprint: pf.Fingerprint(), Checks: pf.Health, Detail: checkNames(pf.Health),
			AfterMigrate: pf.Start == desired.PreflightAfterMigrate})
	}
	return out
}

func buildSteps(d *desired.State, a *actual.State, target *actual.Release, name, commit string) []Step {
	var out []Step
	if target == nil {
		reason := "no release of this commit and build is on disk"
		if commit != "" {
			reason = fmt.Sprintf("no release of %s with build %s is on disk", layout.Short(commit), d.Fingerprint())
		}
		out = append(out, Step{Action: Create, Release: name, Commit: commit, Fingerprint: d.Fingerprint(), Reason: reason})
	}
	resumed := false
	for _, s := range ReleaseSteps(d) {
		if target != nil && target.Record.Done(s.Name, s.Fingerprint) {
			continue
		}
		s.Release, s.Commit, s.Reason = name, commit, "new release"
		if target != nil {
			s.Reason = "not completed in " + target.Name
			if !resumed {
				s.Reason = "resuming: first step not completed"
				if target.Record.State == record.Failed {
					s.Reason, s.Before = "failed before; retrying", record.Rebuild
				}
			}
			resumed = true
		}
		switch s.Action {
		case Export:
			s.Detail, s.Path = exportDetail(d, commit), d.Source.Path
		case Shared:
			s.Detail = strings.Join(append(append([]string{}, d.Shared.Dirs...), d.Shared.Files...), ", ")
			s.Shared = &SharedPaths{Dirs: d.Shared.Dirs, Files: d.Shared.Files}
		case Build:
			if c := s.Cache; c != nil {
				k := a.CacheKeys[s.Name]
				c.Key, c.Why = k.Key, k.Why
				if c.Key == "" && c.Why == "" {
					c.Why = "known after the fetch"
				}
				if e := a.Sealed(s.Name, c.Key); c.Key != "" && e != nil {
					c.Hit, c.From = true, e.Seal.Release
				}
			}
		}
		out = append(out, s)
	}
	if n := len(out); n > 0 && out[n-1].Action.IsReleaseStep() {
		out[n-1].Completes = true
	}
	return out
}

func exportDetail(d *desired.State, commit string) string {
	c := d.Source.Commit
	if commit != "" {
		c = layout.Short(commit)
	}
	if d.Source.Path != "" {
		return c + ":" + d.Source.Path
	}
	return c
}

// pruneSteps deletes what a converged host no longer needs. It never
// deletes the target (linked after this plan) or the previous release
// (the rollback target); the release linked before a switch is kept only
// when it is the rollback target: one that never served healthy is not
// worth returning to. Whether a process still runs from a release is
// asked when the prune runs, not here: the plan reads no /proc.
func pruneSteps(d *desired.State, a *actual.State, target, previous string, switched bool) (out []Step) {
	protected := map[string]bool{target: true, previous: true}
	if !switched {
		protected[a.Link.Release] = true
	}
	var complete []actual.Release
	for _, r := range a.Releases {
		switch {
		case protected[r.Name] || r.Record == nil:
			// Releases without a readable record are left to a person.
		case r.Record.State == record.Complete:
			complete = append(complete, r)
		case switched:
			// Unfinished and failed releases of other targets go after a
			// switch: the host has moved on from them.
			reason := "unfinished release of " + layout.Short(r.Record.Commit)
			if r.Record.State == record.Failed {
				reason = "failed release of " + layout.Short(r.Record.Commit)
				if f := r.Record.Failure; f != nil {
					reason += " (step " + f.Step + ")"
				}
			}
			out = append(out, Step{Action: Prune, Release: r.Name, Commit: r.Record.Commit, Reason: reason})
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
		old = append(old, Step{Action: Prune, Release: complete[i].Name, Commit: complete[i].Record.Commit, Reason: fmt.Sprintf("beyond keep: %d", d.Keep)})
	}
	for i := len(old) - 1; i >= 0; i-- {
		out = append(out, old[i])
	}
	return out
}

// cachePruneSteps deletes the cache entries no release kept after this
// plan links (invariant 13: a release that links an entry keeps it), and
// interrupted fills, but for what the plan's own cached steps will use.
// The executor asks the records again before each deletion.
func cachePruneSteps(a *actual.State, steps, prunes []Step) []Step {
	gone := map[string]bool{}
	for _, s := range prunes {
		gone[s.Release] = true
	}
	used := map[string]bool{}
	for _, r := range a.Releases {
		if r.Record == nil || gone[r.Name] {
			continue
		}
		for _, e := range r.Record.CacheEntries() {
			used[e] = true
		}
	}
	for _, s := range steps {
		if s.Cache != nil && s.Cache.Key != "" {
			used[stepcache.EntryName(s.Name, s.Cache.Key)] = true
		}
	}
	var out []Step
	for _, e := range a.Cache {
		name := e.Name()
		if used[name] || e.Problem != "" {
			continue
		}
		reason := "no kept release links it"
		if e.Seal == nil {
			reason = "an interrupted fill: never sealed"
		}
		out = append(out, Step{Action: Prune, CacheEntry: name, Reason: reason})
	}
	return out
}
