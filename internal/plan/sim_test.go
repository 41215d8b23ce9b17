package plan

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// tb is what the simulation needs of *testing.T and *rapid.T.
type tb interface {
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// draw returns a number in [0, n).
type draw func(n int) int

var simSHAs = []string{
	"1111111111111111111111111111111111111111",
	"2222222222222222222222222222222222222222",
	"3333333333333333333333333333333333333333",
}

// randomWorld makes a desired state and a host, from draws.
func randomWorld(t tb, next draw) (*desired.State, *actual.State) {
	y := "app: shop\nroot: /srv/shop\nkeep: " + fmt.Sprint(1+next(4)) + "\nsource: {repo: /git, commit: " + simSHAs[next(3)] + "}\n"
	if next(2) == 1 {
		y += "build:\n  - {name: one, run: x}\n  - {name: two, run: y}\n"
	}
	tracked := false
	if next(2) == 1 {
		if tracked = next(2) == 1; tracked {
			// Every release knows one migration: no schema is ever
			// ahead, and the record's lists come and go.
			y += "migrate: {run: m, kind: other, known: k, applied: ap}\n"
		} else {
			y += "migrate: {run: m}\n"
		}
	}
	if next(2) == 1 {
		y += "services:\n  - {name: web, manager: command, restart: r}\n"
	}
	if next(2) == 1 {
		y += "health:\n  - {tcp: \"127.0.0.1:1\"}\n"
	}
	d, err := desired.Parse(strings.NewReader(y), "/d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a := &actual.State{Root: d.Root, RootExists: true}
	other := *d
	other.Build = append([]desired.Step{}, d.Build...)
	other.Build = append(other.Build, desired.Step{Name: "other", Run: "z"})
	steps := ReleaseSteps(d)
	for i := 0; i < next(7); i++ {
		sha := simSHAs[next(3)]
		fp := d.Fingerprint()
		if next(4) == 0 {
			fp = other.Fingerprint()
		}
		state := []string{record.Complete, record.Complete, record.Building, record.Failed}[next(4)]
		r := &record.Release{Name: fmt.Sprintf("2026110%dT000000Z-%s", i, sha[:8]), Commit: sha, Fingerprint: fp, State: state,
			Created: time.Date(2026, 11, 1+i, 0, 0, 0, 0, time.UTC)}
		done := len(steps)
		if state != record.Complete {
			done = next(len(steps) + 1)
		}
		for _, st := range steps[:done] {
			r.Steps = append(r.Steps, record.Step{Name: st.Name, Fingerprint: st.Fingerprint})
		}
		if state == record.Failed {
			r.Failure = &record.Failure{Step: "x"}
		}
		if state == record.Complete && next(3) != 0 {
			at := time.Date(2026, 11, 1+next(9), 0, 0, 0, 0, time.UTC)
			r.HealthyAt = &at
		}
		a.Releases = append(a.Releases, actual.Release{Name: r.Name, Record: r})
	}
	if len(a.Releases) > 0 && next(4) != 0 {
		// The link points at a complete release: invariant 1 holds
		// before the plan as after it.
		var complete []string
		for _, r := range a.Releases {
			if r.Complete() {
				complete = append(complete, r.Name)
			}
		}
		if len(complete) > 0 {
			name := complete[next(len(complete))]
			a.Link = actual.Link{Exists: true, Target: "releases/" + name, Release: name}
			a.Host = &record.Host{Linked: name, ServicesDone: next(3) != 0, Verified: next(3) != 0}
			if next(5) == 0 {
				a.Host.Linked = complete[next(len(complete))] // moved by hand
			}
			switch next(8) {
			case 0: // the link deleted by hand
				a.Link = actual.Link{}
			case 1: // moved by hand to a release that is not complete
				r := a.Releases[next(len(a.Releases))]
				a.Link = actual.Link{Exists: true, Target: "releases/" + r.Name, Release: r.Name}
			}
		}
	}
	if tracked && next(3) != 0 {
		// A record, which may lack any release's list (a listing cut
		// short, a release built before kind was set).
		a.Migrations = &record.Migrations{Applied: simMigrations, Releases: map[string][]string{}}
		for _, r := range a.Releases {
			if next(2) == 1 {
				a.Migrations.Releases[r.Name] = simMigrations
			}
		}
	}
	a.Commit = actual.Commit{Ref: d.Source.Commit, Why: "not in the cache"}
	if next(3) != 0 {
		a.Commit = actual.Commit{Ref: d.Source.Commit, SHA: d.Source.Commit, Kind: gitcache.KindCommit, InCache: true}
	}
	return d, a
}

// simulate performs p on the in-memory host a as the executor would,
// checking the safety properties at each step, and returns the host after.
func simulate(t tb, d *desired.State, a *actual.State, p *Plan) *actual.State {
	if p.NeedsFetch() {
		a.Commit = actual.Commit{Ref: d.Source.Commit, SHA: d.Source.Commit, Kind: gitcache.KindCommit, InCache: true}
		var err error
		if p, err = Make(d, a, Options{Now: simNow}); err != nil {
			t.Fatal(err)
		}
		if p.NeedsFetch() {
			t.Fatal("a fetch after a fetch")
		}
	}
	if p.Blocked != nil && p.Holding == "" && p.Changes() {
		t.Fatal("a blocked plan with steps and nothing to hold")
	}
	protected := map[string]bool{p.Previous: true, p.Target: true}
	clock, moved := simNow, false
	for _, s := range p.Steps {
		clock = clock.Add(time.Second)
		if s.Release == NewRelease {
			t.Fatalf("step %s of a release not named", s.Action)
		}
		r := a.Release(s.Release)
		if s.Before != "" {
			if err := r.Record.Apply(record.Change{Event: s.Before, At: clock}); err != nil {
				t.Fatal(err)
			}
		}
		switch s.Action {
		case Fetch:
			t.Fatal("fetch after the re-plan")
		case Create:
			if r != nil {
				t.Fatalf("create %s, which exists", s.Release)
			}
			a.Releases = append(a.Releases, actual.Release{Name: s.Release, Record: &record.Release{Name: s.Release, Commit: s.Commit,
				Fingerprint: s.Fingerprint, State: record.Building, Created: clock}})
		case Export, Shared, Build, Migrate:
			err := r.Record.Apply(record.Change{Event: record.StepDone, At: clock, Completes: s.Completes,
				Step: &record.Step{Name: s.Name, Fingerprint: s.Fingerprint}})
			if err != nil {
				t.Fatal(err)
			}
			if s.Action == Migrate && s.Track != nil {
				recordSim(a, s.Release)
			}
		case Record:
			if r == nil {
				t.Fatalf("record the migrations of %s, which is not on disk", s.Release)
			}
			recordSim(a, s.Release)
		case Switch:
			if r == nil || !r.Complete() {
				t.Fatalf("switch to %s, which is not complete", s.Release)
			}
			a.Host = &record.Host{Linked: s.Release}
			a.Link = actual.Link{Exists: true, Target: "releases/" + s.Release, Release: s.Release}
		case Service, Health:
			hostFor(a)
		case Prune:
			if protected[s.Release] || s.Release == a.Link.Release {
				t.Fatalf("pruned protected release %s (linked %s, previous %s, target %s)", s.Release, a.Link.Release, p.Previous, p.Target)
			}
			for i, x := range a.Releases {
				if x.Name == s.Release {
					a.Releases = append(a.Releases[:i], a.Releases[i+1:]...)
					break
				}
			}
		}
		if s.Action == Switch || s.Action == Service || s.Action == Health {
			a.Host.ServicesDone = a.Host.ServicesDone || s.ServicesDone
			a.Host.Verified = a.Host.Verified || s.Verified
			if s.Verified {
				if err := a.Release(s.Release).Record.Apply(record.Change{Event: record.Healthy, At: clock}); err != nil {
					t.Fatal(err)
				}
			}
		}
		// The random host may start with a link moved by hand onto an
		// unfinished release; once the plan switched, never again.
		moved = moved || s.Action == Switch
		if l := a.Release(a.Link.Release); moved && (l == nil || l.Record.State == record.Building) {
			t.Fatalf("after %s the link points at %s, which is not a built release", s.Action, a.Link.Release)
		}
	}
	return a
}

var simNow = time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)

// simMigrations are what every release of the simulation knows.
var simMigrations = []string{"app.0001_initial"}

// recordSim is a listing's effect on the record: the release's list and
// the applied set.
func recordSim(a *actual.State, release string) {
	if a.Migrations == nil {
		a.Migrations = &record.Migrations{}
	}
	if a.Migrations.Releases == nil {
		a.Migrations.Releases = map[string][]string{}
	}
	a.Migrations.Applied = simMigrations
	a.Migrations.Releases[release] = simMigrations
}

// hostFor mirrors the executor: a host record that does not name the
// linked release (the link moved by hand) is replaced.
func hostFor(a *actual.State) {
	if a.Host == nil || a.Host.Linked != a.Link.Release {
		a.Host = &record.Host{Linked: a.Link.Release}
	}
}

// checkConverges: after applying the plan, a new plan has no steps.
func checkConverges(t tb, next draw) {
	d, a := randomWorld(t, next)
	p, err := Make(d, a, Options{Now: simNow})
	if err != nil {
		return // a refusal changes nothing
	}
	after := simulate(t, d, a, p)
	p2, err := Make(d, after, Options{Now: simNow})
	if err != nil {
		t.Fatalf("re-plan failed: %v", err)
	}
	if p2.Changes() {
		t.Fatalf("re-planning after the plan has steps:\n%s\nthen:\n%s", steps(p), steps(p2))
	}
	// The rollback target is never a failed release, nor the linked one.
	if prev := after.Release(p2.Previous); prev != nil && (!prev.Complete() || p2.Previous == after.Link.Release) {
		t.Fatalf("rollback target %s is %s (linked %s)", p2.Previous, prev.Record.State, after.Link.Release)
	}
}

func steps(p *Plan) string {
	var b strings.Builder
	for _, s := range p.Steps {
		fmt.Fprintf(&b, "  %s %s (%s)\n", s.Action, Describe(s), s.Reason)
	}
	return b.String()
}

func TestPlanPropertiesRapid(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		checkConverges(rt, func(n int) int { return rapid.IntRange(0, n-1).Draw(rt, "n") })
	})
}

func FuzzPlanConverges(f *testing.F) {
	for _, seed := range [][]byte{{}, {0, 1, 2, 3}, {3, 3, 3, 3, 3, 3, 3, 3}, {1, 0, 1, 0, 6, 2, 1, 1, 3, 0, 2, 2}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		i := 0
		checkConverges(t, func(n int) int {
			if i >= len(data) {
				return 0
			}
			i++
			return int(data[i-1]) % n
		})
	})
}
