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
	if next(2) == 1 {
		y += "migrate: {run: m}\n"
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
			r.Steps = append(r.Steps, record.Step{Name: st.Name, Fingerprint: st.Fingerprint()})
		}
		if state == record.Failed {
			r.Failure = &record.Failure{Step: "x"}
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
			if next(2) == 0 {
				a.Host.Previous = complete[next(len(complete))]
			}
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
	a.Commit = actual.Commit{Ref: d.Source.Commit, Why: "not in the cache"}
	if next(3) != 0 {
		a.Commit = actual.Commit{Ref: d.Source.Commit, SHA: d.Source.Commit, Kind: gitcache.KindCommit, InCache: true}
	}
	return d, a
}

// simulate performs p on the in-memory host a as the executor would,
// checking the safety properties at each step, and returns the host after.
func simulate(t tb, d *desired.State, a *actual.State, p *Plan) *actual.State {
	for round := 0; ; round++ {
		if p.NeedsFetch() {
			if round > 0 {
				t.Fatal("a fetch after a fetch")
			}
			a.Commit = actual.Commit{Ref: d.Source.Commit, SHA: d.Source.Commit, Kind: gitcache.KindCommit, InCache: true}
			var err error
			if p, err = Make(d, a, Options{}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		break
	}
	release := p.Target
	if p.Blocked != nil {
		if p.Holding == "" {
			if p.Changes() {
				t.Fatal("a blocked plan with steps and nothing to hold")
			}
			return a
		}
		release = p.Holding
	}
	protected := map[string]bool{a.Link.Release: true, p.Previous: true}
	linked := a.Link.Release
	steps := ReleaseSteps(d)
	services := 0
	for _, s := range p.Steps {
		if s.Action == Service {
			services++
		}
	}
	for _, s := range p.Steps {
		r := a.Release(release)
		switch s.Action {
		case Fetch:
			t.Fatal("fetch after the re-plan")
		case Create:
			release = "29991231T000000Z-" + p.Commit[:8]
			protected[release] = true
			a.Releases = append(a.Releases, actual.Release{Name: release, Record: &record.Release{Name: release, Commit: p.Commit,
				Fingerprint: d.Fingerprint(), State: record.Building, Created: time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)}})
		case Export, Shared, Build, Migrate:
			for _, st := range steps {
				if st.Name == s.Name {
					r.Record.Steps = append(r.Record.Steps, record.Step{Name: st.Name, Fingerprint: st.Fingerprint()})
				}
			}
			if r.Record.State == record.Failed {
				r.Record.State = record.Building
			}
			all := true
			for _, st := range steps {
				all = all && r.Record.Done(st.Name, st.Fingerprint())
			}
			if all {
				r.Record.State = record.Complete
			}
		case Switch:
			protected[release] = true
			if r != nil && r.Record.State == record.Building {
				all := true
				for _, st := range steps {
					all = all && r.Record.Done(st.Name, st.Fingerprint())
				}
				if all { // as the executor's switch does: the steps prove it
					r.Record.State = record.Complete
				}
			}
			if r == nil || !r.Complete() {
				t.Fatalf("switch to %s, which is not complete", release)
			}
			a.Host = &record.Host{Linked: release, Previous: linked, ServicesDone: services == 0, Verified: services == 0 && !NeedsHealth(d)}
			a.Link = actual.Link{Exists: true, Target: "releases/" + release, Release: release}
		case Service:
			services--
			if services == 0 {
				hostFor(a)
				a.Host.ServicesDone, a.Host.Verified = true, !NeedsHealth(d)
			}
		case Health:
			hostFor(a)
			a.Host.ServicesDone, a.Host.Verified = true, true
		case Prune:
			if protected[s.Release] || s.Release == a.Link.Release {
				t.Fatalf("pruned protected release %s (linked %s, previous %s, target %s)", s.Release, a.Link.Release, p.Previous, release)
			}
			for i, x := range a.Releases {
				if x.Name == s.Release {
					a.Releases = append(a.Releases[:i], a.Releases[i+1:]...)
					break
				}
			}
		}
	}
	return a
}

// hostFor mirrors the executor's updateHost: a host record that does not
// name the linked release (the link moved by hand) is replaced.
func hostFor(a *actual.State) {
	switch {
	case a.Host == nil:
		a.Host = &record.Host{Linked: a.Link.Release}
	case a.Host.Linked != a.Link.Release:
		a.Host = &record.Host{Linked: a.Link.Release, Previous: a.Host.Linked}
	}
}

// checkConverges: after applying the plan, a new plan has no steps.
func checkConverges(t tb, next draw) {
	d, a := randomWorld(t, next)
	p, err := Make(d, a, Options{})
	if err != nil {
		return // a refusal changes nothing
	}
	after := simulate(t, d, a, p)
	p2, err := Make(d, after, Options{})
	if err != nil {
		t.Fatalf("re-plan failed: %v", err)
	}
	if p2.Changes() {
		var b strings.Builder
		RenderText(&b, p)
		b.WriteString("\nthen:\n")
		RenderText(&b, p2)
		t.Fatalf("re-planning after the plan has steps:\n%s", b.String())
	}
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
