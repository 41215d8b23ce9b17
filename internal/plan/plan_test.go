package plan

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/stepcache"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const (
	shaA = "aaaaaaaa11111111111111111111111111111111"
	shaB = "bbbbbbbb22222222222222222222222222222222"
	shaC = "cccccccc33333333333333333333333333333333"
)

func desiredState(t *testing.T, commit string, keep int) *desired.State {
	t.Helper()
	src := `app: shop
root: /srv/shop
keep: ` + itoa(keep) + `
source: {repo: /git/shop, commit: ` + commit + `}
shared: {dirs: [media]}
build:
  - {name: venv, run: python3 -m venv venv}
  - {name: static, run: venv/bin/python manage.py collectstatic --noinput}
migrate: {run: venv/bin/python manage.py migrate}
services:
  - {name: web, manager: command, action: reload, reload: kill -HUP 1}
  - {name: worker, manager: systemd, unit: shop-worker.service}
`
	d, err := desired.Parse(strings.NewReader(src), "/srv/desired.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func itoa(n int) string { return string(rune('0' + n)) }

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// rel makes an observed release built from d with the given state. A
// complete one served healthy at the time its name says it was made.
func rel(d *desired.State, name, commit, state string) actual.Release {
	r := &record.Release{Name: name, App: d.App, Commit: commit, Fingerprint: d.Fingerprint(), State: state, Created: t0}
	for _, st := range ReleaseSteps(d) {
		if state == record.Complete {
			r.Steps = append(r.Steps, record.Step{Name: st.Name, Fingerprint: st.Fingerprint, Finished: t0})
		}
	}
	if state == record.Complete {
		at, err := time.Parse("20060102T150405Z", name[:16])
		if err != nil {
			panic(err)
		}
		r.HealthyAt = &at
	}
	return actual.Release{Name: name, Record: r}
}

func linkedTo(name string) actual.Link {
	return actual.Link{Path: "/srv/shop/current", Exists: true, Target: "releases/" + name, Release: name}
}

func inCache(sha string) actual.Commit {
	return actual.Commit{Ref: sha[:8], SHA: sha, Kind: gitcache.KindCommit, InCache: true}
}

func TestMakeGolden(t *testing.T) {
	tests := []struct {
		name  string
		d     func(t *testing.T) *desired.State
		a     func(d *desired.State) *actual.State
		opts  Options
		steps []Action
	}{
		{
			name: "first_deploy",
			d:    func(t *testing.T) *desired.State { return desiredState(t, "main", 5) },
			a: func(d *desired.State) *actual.State {
				return &actual.State{Root: d.Root, Commit: actual.Commit{Ref: "main", Why: "main is not in the cache"}}
			},
			steps: []Action{Fetch, Create, Export, Shared, Build, Build, Migrate, Switch, Service, Service, Health},
		},
		{
			name: "converged",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaB[:8], 5) },
			a: func(d *desired.State) *actual.State {
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261120T100000Z-bbbbbbbb"),
					Host:     &record.Host{Linked: "20261120T100000Z-bbbbbbbb", ServicesDone: true, Verified: true},
					Releases: []actual.Release{rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete), rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Complete)},
					Commit:   inCache(shaB)}
			},
		},
		{
			name: "health_pending_after_interrupted_apply",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaB[:8], 5) },
			a: func(d *desired.State) *actual.State {
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261120T100000Z-bbbbbbbb"),
					Host:     &record.Host{Linked: "20261120T100000Z-bbbbbbbb", ServicesDone: true},
					Releases: []actual.Release{rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete), rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Complete)},
					Commit:   inCache(shaB)}
			},
			steps: []Action{Health},
		},
		{
			name: "upgrade_prunes_beyond_keep_and_failed",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaC[:8], 2) },
			a: func(d *desired.State) *actual.State {
				failed := rel(d, "20261118T100000Z-dddddddd", "dddddddd44444444444444444444444444444444", record.Failed)
				failed.Record.Failure = &record.Failure{Step: "venv", Error: "exit 1", At: t0}
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261120T100000Z-bbbbbbbb"),
					Host: &record.Host{Linked: "20261120T100000Z-bbbbbbbb", ServicesDone: true},
					Releases: []actual.Release{
						rel(d, "20261117T100000Z-eeeeeeee", "eeeeeeee55555555555555555555555555555555", record.Complete),
						failed,
						rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete),
						rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Complete),
						{Name: "20261121T100000Z-ffffffff", Problem: "no record"},
					},
					Commit: inCache(shaC)}
			},
			steps: []Action{Create, Export, Shared, Build, Build, Migrate, Switch, Service, Service, Health, Prune, Prune, Prune},
		},
		{
			name: "rollback_to_kept_release",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaA[:8], 5) },
			a: func(d *desired.State) *actual.State {
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261120T100000Z-bbbbbbbb"),
					Host:     &record.Host{Linked: "20261120T100000Z-bbbbbbbb", ServicesDone: true},
					Releases: []actual.Release{rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete), rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Complete)},
					// The cache is gone: a rollback needs no git at all.
					Commit: actual.Commit{Ref: shaA[:8], Why: "aaaaaaaa is not in the cache"}}
			},
			steps: []Action{Switch, Service, Service, Health},
		},
		{
			name: "resume_unfinished",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaB[:8], 5) },
			a: func(d *desired.State) *actual.State {
				b := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Building)
				for _, st := range ReleaseSteps(d)[:3] { // export, shared, venv
					b.Record.Steps = append(b.Record.Steps, record.Step{Name: st.Name, Fingerprint: st.Fingerprint})
				}
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261119T100000Z-aaaaaaaa"),
					Host:     &record.Host{Linked: "20261119T100000Z-aaaaaaaa", ServicesDone: true},
					Releases: []actual.Release{rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete), b},
					Commit:   inCache(shaB)}
			},
			steps: []Action{Build, Migrate, Switch, Service, Service, Health},
		},
		{
			name: "failed_target_blocked",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaB[:8], 5) },
			a: func(d *desired.State) *actual.State {
				b := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Failed)
				b.Record.Failure = &record.Failure{Step: "static", Error: "exited with status 1", Output: "Traceback (most recent call last):\nImportError: no module named shop", At: t0}
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261119T100000Z-aaaaaaaa"),
					Host:     &record.Host{Linked: "20261119T100000Z-aaaaaaaa", ServicesDone: true, Verified: true},
					Releases: []actual.Release{rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete), b},
					Commit:   inCache(shaB)}
			},
		},
		{
			// Drift while the target is blocked: someone pointed the link
			// at the failed release. It goes back to the last good one.
			name: "blocked_target_holds_last_good",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaB[:8], 5) },
			a: func(d *desired.State) *actual.State {
				b := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Failed)
				b.Record.Failure = &record.Failure{Step: "health", Error: "health check http http://127.0.0.1:8000/health failed after 30 attempts: status 500", At: t0}
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261120T100000Z-bbbbbbbb"),
					Host:     &record.Host{Linked: "20261119T100000Z-aaaaaaaa", ServicesDone: true, Verified: true},
					Releases: []actual.Release{rel(d, "20261118T100000Z-cccccccc", shaC, record.Complete), rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete), b},
					Commit:   inCache(shaB)}
			},
			steps: []Action{Switch, Service, Service, Health},
		},
		{
			// The last good release was deleted by hand: nothing to hold,
			// and the plan says so rather than building the failed target.
			name: "blocked_target_last_good_gone",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaB[:8], 5) },
			a: func(d *desired.State) *actual.State {
				b := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Failed)
				b.Record.Failure = &record.Failure{Step: "migrate", Error: "migrate: exited with status 1", At: t0}
				return &actual.State{Root: d.Root, RootExists: true,
					Link:     actual.Link{Exists: true, Dangling: true, Target: "releases/20261119T100000Z-aaaaaaaa"},
					Host:     &record.Host{Linked: "20261119T100000Z-aaaaaaaa", ServicesDone: true, Verified: true},
					Releases: []actual.Release{b},
					Commit:   inCache(shaB)}
			},
		},
		{
			name: "upgrade_with_preflight",
			d:    func(t *testing.T) *desired.State { return withPreflight(t, desiredState(t, shaB[:8], 5)) },
			a: func(d *desired.State) *actual.State {
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261119T100000Z-aaaaaaaa"),
					Host:     &record.Host{Linked: "20261119T100000Z-aaaaaaaa", ServicesDone: true, Verified: true},
					Releases: []actual.Release{rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete)},
					Commit:   inCache(shaB)}
			},
			steps: []Action{Create, Export, Shared, Build, Build, Migrate, Preflight, Switch, Service, Service, Health},
		},
		{
			name: "retry_failed_preflight",
			d:    func(t *testing.T) *desired.State { return withPreflight(t, desiredState(t, shaB[:8], 5)) },
			a: func(d *desired.State) *actual.State {
				b := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Failed)
				steps := ReleaseSteps(d)
				for _, st := range steps[:len(steps)-1] {
					b.Record.Steps = append(b.Record.Steps, record.Step{Name: st.Name, Fingerprint: st.Fingerprint})
				}
				b.Record.Failure = &record.Failure{Step: "preflight", Error: "health check http http://127.0.0.1:${RECONCILER_PREFLIGHT_PORT}/health failed after 3 attempts: status 500", At: t0}
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261119T100000Z-aaaaaaaa"),
					Host:     &record.Host{Linked: "20261119T100000Z-aaaaaaaa", ServicesDone: true, Verified: true},
					Releases: []actual.Release{rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete), b},
					Commit:   inCache(shaB)}
			},
			opts:  Options{Retry: true},
			steps: []Action{Preflight, Switch, Service, Service, Health},
		},
		{
			// The venv's key files are unchanged: its entry is linked, the
			// step does not run. The entry only the pruned release linked
			// goes with it, and so does an interrupted fill.
			name: "upgrade_with_cached_step_hit",
			d:    func(t *testing.T) *desired.State { return withCache(t, desiredState(t, shaC[:8], 1)) },
			a: func(d *desired.State) *actual.State {
				a := rel(d, "20261118T100000Z-aaaaaaaa", shaA, record.Complete)
				b := rel(d, "20261119T100000Z-bbbbbbbb", shaB, record.Complete)
				a.Record.Steps[2].Cache = "venv/" + keyOld
				b.Record.Steps[2].Cache = "venv/" + keyVenv
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo(b.Name),
					Host:     &record.Host{Linked: b.Name, ServicesDone: true, Verified: true},
					Releases: []actual.Release{a, b},
					Commit:   inCache(shaC),
					Cache: []actual.CacheEntry{
						{Step: "venv", Key: keyOld, Seal: &stepcache.Seal{Step: "venv", Key: keyOld, Release: a.Name}},
						{Step: "venv", Key: keyVenv, Seal: &stepcache.Seal{Step: "venv", Key: keyVenv, Release: a.Name}},
						{Step: "venv", Key: keyStray},
					},
					CacheKeys: map[string]actual.CacheKey{"venv": {Key: keyVenv}}}
			},
			steps: []Action{Create, Export, Shared, Build, Build, Migrate, Switch, Service, Service, Health, Prune, Prune, Prune},
		},
		{
			// Before the fetch the key files cannot be read: the plan says
			// so, and keeps the entries this build may use.
			name: "cached_step_key_after_fetch",
			d:    func(t *testing.T) *desired.State { return withCache(t, desiredState(t, "main", 5)) },
			a: func(d *desired.State) *actual.State {
				b := rel(d, "20261119T100000Z-bbbbbbbb", shaB, record.Complete)
				b.Record.Steps[2].Cache = "venv/" + keyVenv
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo(b.Name),
					Host:     &record.Host{Linked: b.Name, ServicesDone: true, Verified: true},
					Releases: []actual.Release{b},
					Commit:   actual.Commit{Ref: "main", Why: "branch main moved from bbbbbbbb to cccccccc"},
					Cache:    []actual.CacheEntry{{Step: "venv", Key: keyVenv, Seal: &stepcache.Seal{Step: "venv", Key: keyVenv, Release: b.Name}}}}
			},
			steps: []Action{Fetch, Create, Export, Shared, Build, Build, Migrate, Switch, Service, Service, Health},
		},
		{
			// The plan says what ships: the first 20 subjects, then a count.
			name: "upgrade_ships_commits",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaB[:8], 5) },
			a: func(d *desired.State) *actual.State {
				a := rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete)
				ships := &gitcache.Log{Direction: "forward", Total: 22}
				for i := 22; i > 2; i-- {
					ships.Commits = append(ships.Commits, gitcache.LogEntry{SHA: fmt.Sprintf("%02d%s", i, shaB[2:]), Subject: fmt.Sprintf("Change %d of the cart", i), Time: t0})
				}
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo(a.Name),
					Host:     &record.Host{Linked: a.Name, ServicesDone: true, Verified: true},
					Releases: []actual.Release{a}, Commit: inCache(shaB), Ships: ships, ShipsFrom: shaA}
			},
			steps: []Action{Create, Export, Shared, Build, Build, Migrate, Switch, Service, Service, Health},
		},
		{
			// Going back: the commits that go away, and the cache held
			// only part of the history.
			name: "rollback_commits_go_away",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaA[:8], 5) },
			a: func(d *desired.State) *actual.State {
				a := rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete)
				b := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Complete)
				goes := &gitcache.Log{Direction: "back", Total: 2, Partial: true, Commits: []gitcache.LogEntry{
					{SHA: shaB, Subject: "Drop the legacy checkout \x1b[31m(red)", Time: t0}, {SHA: shaC, Subject: "Add catalog.0024", Time: t0}}}
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo(b.Name),
					Host:     &record.Host{Linked: b.Name, ServicesDone: true, Verified: true},
					Releases: []actual.Release{a, b}, Commit: inCache(shaA), Ships: goes, ShipsFrom: shaB}
			},
			steps: []Action{Switch, Service, Service, Health},
		},
		// Rolling back over a migration: b applied shop.0002 and
		// catalog.0024, which a (linked before) does not have.
		{
			name: "rollback_schema_ahead_warn",
			d: func(t *testing.T) *desired.State {
				return withMigrations(desiredState(t, shaA[:8], 5), "django", "warn")
			},
			a:     schemaAhead,
			steps: []Action{Schema, Switch, Service, Service, Health},
		},
		{
			name: "rollback_schema_ahead_block",
			d: func(t *testing.T) *desired.State {
				return withMigrations(desiredState(t, shaA[:8], 5), "django", "block")
			},
			a: schemaAhead,
		},
		{
			name: "rollback_schema_ahead_reverse",
			d: func(t *testing.T) *desired.State {
				return withMigrations(desiredState(t, shaA[:8], 5), "django", "reverse")
			},
			a:     schemaAhead,
			steps: []Action{Reverse, Reverse, Switch, Service, Service, Health},
		},
		{
			name: "rollback_schema_ahead_reverse_other",
			d: func(t *testing.T) *desired.State {
				return withMigrations(desiredState(t, shaA[:8], 5), "other", "reverse")
			},
			a:     schemaAhead,
			steps: []Action{Reverse, Switch, Service, Service, Health},
		},
		{
			// After the reverse, forward again to b on disk: its
			// migrations are no longer applied, so it migrates again.
			name: "forward_after_reverse_migrates_again",
			d: func(t *testing.T) *desired.State {
				return withMigrations(desiredState(t, shaB[:8], 5), "django", "reverse")
			},
			a: func(d *desired.State) *actual.State {
				a := schemaAhead(d)
				a.Link, a.Host = linkedTo(a.Releases[0].Name), &record.Host{Linked: a.Releases[0].Name, ServicesDone: true, Verified: true}
				a.Commit = inCache(shaB)
				a.Migrations.Applied = a.Migrations.Releases[a.Releases[0].Name]
				return a
			},
			steps: []Action{Migrate, Switch, Service, Service, Health},
		},
		{
			// An apply killed after its switch, before the migrations
			// listing (in the background) was written: the next lists
			// them, and has nothing else to do.
			name: "record_lost_migrations",
			d: func(t *testing.T) *desired.State {
				return withMigrations(desiredState(t, shaB[:8], 5), "django", "block")
			},
			a: func(d *desired.State) *actual.State {
				a := schemaAhead(d)
				a.Commit = inCache(shaB)
				delete(a.Migrations.Releases, a.Link.Release)
				return a
			},
			steps: []Action{Record},
		},
		{
			// The same lost listing, and the commit set back: the
			// applied set is stale, so the linked release's migrations
			// are listed first and the plan made again.
			name: "rollback_lists_the_linked_release_first",
			d: func(t *testing.T) *desired.State {
				return withMigrations(desiredState(t, shaA[:8], 5), "django", "block")
			},
			a: func(d *desired.State) *actual.State {
				a := schemaAhead(d)
				delete(a.Migrations.Releases, a.Link.Release)
				a.Migrations.Applied = a.Migrations.Releases[a.Releases[0].Name]
				return a
			},
			steps: []Action{Record, Switch, Service, Service, Health},
		},
		{
			name: "services_pending_after_interrupted_switch",
			d:    func(t *testing.T) *desired.State { return desiredState(t, shaB[:8], 5) },
			a: func(d *desired.State) *actual.State {
				return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo("20261120T100000Z-bbbbbbbb"),
					Host:     &record.Host{Linked: "20261119T100000Z-aaaaaaaa", ServicesDone: true},
					Releases: []actual.Release{rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete), rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Complete)},
					Commit:   inCache(shaB)}
			},
			steps: []Action{Service, Service, Health},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.d(t)
			a := tt.a(d)
			tt.opts.Now = t0.Add(48 * time.Hour)
			p, err := Make(d, a, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			var got []Action
			for _, s := range p.Steps {
				got = append(got, s.Action)
			}
			if strings.Join(actions(got), " ") != strings.Join(actions(tt.steps), " ") {
				t.Errorf("steps: got %v, want %v", got, tt.steps)
			}
			// Pure: the same inputs give the same plan, byte for byte.
			p2, _ := Make(d, a, tt.opts)
			js, js2 := planJSON(t, p), planJSON(t, p2)
			if !bytes.Equal(js, js2) {
				t.Error("Make is not deterministic")
			}
			// The human rendering of these files is golden-tested in
			// internal/view, from these very files.
			golden(t, tt.name+".json", js)
		})
	}
}

func planJSON(t *testing.T, p *Plan) []byte {
	t.Helper()
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func actions(a []Action) []string {
	out := make([]string, len(a))
	for i, x := range a {
		out[i] = string(x)
	}
	return out
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestMakeRefuses(t *testing.T) {
	d := desiredState(t, shaA[:8], 5)
	d.Shared.Files = []string{".env"}
	_, err := Make(d, &actual.State{MissingShared: []string{".env"}, Commit: inCache(shaA)}, Options{})
	if err == nil || !strings.Contains(err.Error(), "shared files missing under /srv/shop/shared: .env") {
		t.Errorf("missing shared file: %v", err)
	}
	d.Shared.Files = nil
	_, err = Make(d, &actual.State{Link: actual.Link{Exists: true, Problem: "/srv/shop/current is a directory, not a symlink"}, Commit: inCache(shaA)}, Options{})
	if err == nil || !strings.Contains(err.Error(), "refusing to touch the link: /srv/shop/current is a directory") {
		t.Errorf("link is a directory: %v", err)
	}
}

func TestRetryResumesAtFailedStep(t *testing.T) {
	d := desiredState(t, shaB[:8], 5)
	b := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Failed)
	for _, st := range ReleaseSteps(d)[:3] {
		b.Record.Steps = append(b.Record.Steps, record.Step{Name: st.Name, Fingerprint: st.Fingerprint})
	}
	b.Record.Failure = &record.Failure{Step: "static"}
	a := &actual.State{Releases: []actual.Release{b}, Commit: inCache(shaB)}
	p, err := Make(d, a, Options{Retry: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Blocked != nil || len(p.Steps) == 0 || p.Steps[0].Action != Build || p.Steps[0].Name != "static" {
		t.Fatalf("retry should resume at static, got %+v", p.Steps)
	}
}

// TestPruneNeverRemovesProtected checks invariant 4 over every keep and
// every choice of linked and previous release among eight: the previous
// release is the one that served healthy last, after the linked one.
func TestPruneNeverRemovesProtected(t *testing.T) {
	shas := []string{}
	for i := 0; i < 8; i++ {
		shas = append(shas, strings.Repeat(string(rune('a'+i)), 40))
	}
	name := func(i int) string { return "2026112" + string(rune('0'+i)) + "T100000Z-" + shas[i][:8] }
	for keep := 1; keep <= 9; keep++ {
		for linked := 0; linked < 8; linked++ {
			for prev := 0; prev < 8; prev++ {
				if prev == linked {
					continue
				}
				for target := 0; target < 8; target++ {
					d := desiredState(t, shas[target][:8], 1)
					d.Keep = keep
					a := &actual.State{RootExists: true, Link: linkedTo(name(linked)), Commit: inCache(shas[target]),
						Host: &record.Host{Linked: name(linked), ServicesDone: true, Verified: true}}
					for i := 0; i < 8; i++ {
						r := rel(d, name(i), shas[i], record.Complete)
						at := t0.Add(time.Duration(i) * time.Hour)
						switch i {
						case prev:
							at = t0.Add(100 * time.Hour)
						case linked:
							at = t0.Add(200 * time.Hour)
						}
						r.Record.HealthyAt = &at
						a.Releases = append(a.Releases, r)
					}
					p, err := Make(d, a, Options{})
					if err != nil {
						t.Fatal(err)
					}
					pruned := map[string]bool{}
					for _, s := range p.Steps {
						if s.Action == Prune {
							pruned[s.Release] = true
						}
					}
					// The rollback target after the plan: the release linked
					// now when the link moves, else the one before it.
					wantPrev := name(prev)
					if linked != target {
						wantPrev = name(linked)
					}
					if p.Previous != wantPrev {
						t.Fatalf("linked %d prev %d target %d: previous %s, want %s", linked, prev, target, p.Previous, wantPrev)
					}
					for _, keepName := range []string{name(linked), wantPrev, name(target)} {
						if pruned[keepName] {
							t.Fatalf("keep %d linked %d prev %d target %d: pruned protected %s", keep, linked, prev, target, keepName)
						}
					}
					// After the plan, at most max(keep, protected) complete releases stay.
					left := 8 - len(pruned)
					protected := map[string]bool{name(linked): true, wantPrev: true, name(target): true}
					if want := max(keep, len(protected)); left != min(8, want) {
						t.Fatalf("keep %d linked %d prev %d target %d: %d releases left, want %d", keep, linked, prev, target, left, min(8, want))
					}
				}
			}
		}
	}
}

// The rollback target is never a failed release, nor one that never
// served healthy (item 1 of issue 8: status named the failed release).
func TestRollbackTargetIsNeverFailed(t *testing.T) {
	d := desiredState(t, shaC[:8], 5)
	good := rel(d, "20261118T100000Z-aaaaaaaa", shaA, record.Complete)
	failed := rel(d, "20261119T100000Z-bbbbbbbb", shaB, record.Failed)
	failed.Record.Failure = &record.Failure{Step: "health"}
	never := rel(d, "20261120T100000Z-cccccccc", shaC, record.Complete)
	never.Record.HealthyAt = nil
	a := &actual.State{Releases: []actual.Release{good, failed, never}, Link: linkedTo(never.Name)}
	if got := a.RollbackTarget(never.Name); got != good.Name {
		t.Errorf("rollback target %q, want %s", got, good.Name)
	}
	if got := a.RollbackTarget(good.Name); got != "" {
		t.Errorf("rollback target %q, want none: the others failed or never served", got)
	}
}

func TestNeverSwitchesToIncomplete(t *testing.T) {
	d := desiredState(t, shaB[:8], 5)
	a := &actual.State{Releases: []actual.Release{rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Building)}, Commit: inCache(shaB)}
	p, err := Make(d, a, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sawMigrate := false
	for _, s := range p.Steps {
		if s.Action == Migrate {
			sawMigrate = true
		}
		if s.Action == Switch && !sawMigrate {
			t.Fatal("switch planned before the release's last step")
		}
	}
}

// The revert is a plan like any other: switch back, record the failure
// once the link moved away, act on the services, verify.
func TestRevertGolden(t *testing.T) {
	d := desiredState(t, shaB[:8], 5)
	good := rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete)
	bad := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Complete)
	bad.Record.HealthyAt = nil
	f := record.Failure{Step: "health", Error: "health check http http://127.0.0.1:8000/health failed after 3 attempts: status 500"}
	tests := []struct {
		name  string
		a     *actual.State
		steps []Action
	}{
		{"revert_to_last_good", &actual.State{Root: d.Root, RootExists: true, Link: linkedTo(bad.Name),
			Host: &record.Host{Linked: bad.Name, ServicesDone: true}, Releases: []actual.Release{good, bad}},
			[]Action{Switch, Fail, Service, Service, Health}},
		{"revert_nothing_to_return_to", &actual.State{Root: d.Root, RootExists: true, Link: linkedTo(bad.Name),
			Host: &record.Host{Linked: bad.Name, ServicesDone: true}, Releases: []actual.Release{bad}},
			[]Action{Fail}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Revert(d, tt.a, bad.Name, f)
			var got []Action
			for _, s := range p.Steps {
				got = append(got, s.Action)
			}
			if strings.Join(actions(got), " ") != strings.Join(actions(tt.steps), " ") {
				t.Errorf("steps: got %v, want %v", got, tt.steps)
			}
			if p.RevertsOnFailure() {
				t.Error("a revert that fails must not revert again")
			}
			golden(t, tt.name+".json", planJSON(t, p))
		})
	}
}

// Running as root with no run_as says so, once, in the plan.
func TestRootWithoutRunAsWarns(t *testing.T) {
	d := desiredState(t, shaA[:8], 5)
	a := &actual.State{Commit: inCache(shaA)}
	has := func(p *Plan) bool {
		for _, w := range p.Warnings {
			if strings.HasPrefix(w, "running as root with no run_as") {
				return true
			}
		}
		return false
	}
	for _, tt := range []struct {
		asRoot bool
		runAs  string
		want   bool
	}{{true, "", true}, {true, "deploy", false}, {false, "", false}} {
		d.RunAs = tt.runAs
		p, err := Make(d, a, Options{AsRoot: tt.asRoot})
		if err != nil {
			t.Fatal(err)
		}
		if has(p) != tt.want {
			t.Errorf("as root %v, run_as %q: warning %v, want %v", tt.asRoot, tt.runAs, has(p), tt.want)
		}
	}
}

const (
	keyVenv  = "3f2a1b2c3d4e5f60718293a4b5c6d7e8"
	keyOld   = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
	keyStray = "5555555555555555aaaaaaaaaaaaaaaa"
)

// withCache caches d's venv step by requirements.txt.
func withCache(t *testing.T, d *desired.State) *desired.State {
	t.Helper()
	d.Build[0].Cache = &desired.StepCache{Key: []string{"requirements.txt"}, Paths: []string{"venv"}}
	return d
}

func withPreflight(t *testing.T, d *desired.State) *desired.State {
	t.Helper()
	src := `app: shop
root: /srv/shop
source: {repo: /git/shop, commit: main}
preflight:
  run: venv/bin/python -m gunicorn --bind 127.0.0.1:${RECONCILER_PREFLIGHT_PORT} shop.wsgi
  health:
    - http: http://127.0.0.1:${RECONCILER_PREFLIGHT_PORT}/health
  timeout: 30s
`
	pd, err := desired.Parse(strings.NewReader(src), "/srv/desired.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d.Preflight = pd.Preflight
	return d
}

// A preflight that passed is recorded: a resumed apply does not start the
// release again, and a preflight added or changed later does not rebuild
// a release (it is not part of the build's fingerprint).
func TestPassedPreflightIsNotRepeated(t *testing.T) {
	d := withPreflight(t, desiredState(t, shaB[:8], 5))
	b := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Building)
	for _, st := range ReleaseSteps(d) {
		b.Record.Steps = append(b.Record.Steps, record.Step{Name: st.Name, Fingerprint: st.Fingerprint})
	}
	a := &actual.State{Link: linkedTo("20261119T100000Z-aaaaaaaa"), Host: &record.Host{Linked: "20261119T100000Z-aaaaaaaa", ServicesDone: true, Verified: true},
		Releases: []actual.Release{rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete), b}, Commit: inCache(shaB)}
	p, err := Make(d, a, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) == 0 || p.Steps[0].Action != Switch || p.Steps[0].Before != record.Built {
		t.Fatalf("a release whose preflight passed is not preflighted again: %+v", p.Steps)
	}
	// Without the preflight step recorded, it is the one step left, and
	// it completes the release.
	b.Record.Steps = b.Record.Steps[:len(b.Record.Steps)-1]
	p, _ = Make(d, a, Options{})
	if len(p.Steps) == 0 || p.Steps[0].Action != Preflight || !p.Steps[0].Completes || p.Steps[0].Run != d.Preflight.Run || len(p.Steps[0].Checks) != 1 {
		t.Fatalf("want the preflight, carrying its run and checks, to complete the release: %+v", p.Steps)
	}
}

// Rollback goes to the previous healthy release, or the one named; never
// to a failed or unfinished one; it builds, fetches and prunes nothing,
// and a failed check does not revert it.
func TestRollback(t *testing.T) {
	d := desiredState(t, shaC[:8], 2)
	a1 := rel(d, "20261118T100000Z-aaaaaaaa", shaA, record.Complete)
	b := rel(d, "20261119T100000Z-bbbbbbbb", shaB, record.Complete)
	failed := rel(d, "20261120T100000Z-cccccccc", shaC, record.Failed)
	failed.Record.Failure = &record.Failure{Step: "health", Error: "status 500\nmore", At: t0}
	building := rel(d, "20261121T100000Z-cccccccc", shaC, record.Building)
	a := &actual.State{Root: d.Root, RootExists: true, Link: linkedTo(b.Name),
		Host:     &record.Host{Linked: b.Name, ServicesDone: true, Verified: true},
		Releases: []actual.Release{a1, b, failed, building}, Commit: inCache(shaC)}
	tests := []struct {
		to, want, err string
	}{
		{"", a1.Name, ""},
		{"20261118", a1.Name, ""},
		{"2026111", "", "names 2 releases"},
		{"1999", "", "no release 1999 on disk; there are: 20261118T100000Z-aaaaaaaa, "},
		{failed.Name, "", "failed at step health (status 500): refusing to roll back to it"},
		{building.Name, "", "is building, not complete"},
	}
	for _, tt := range tests {
		p, err := Rollback(d, a, tt.to, Options{})
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Rollback(%q): %v; want %q", tt.to, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Rollback(%q): %v", tt.to, err)
		}
		if p.Target != tt.want || p.Commit != shaA || !p.Rollback || p.RevertsOnFailure() {
			t.Errorf("Rollback(%q): target %s commit %s rollback %v", tt.to, p.Target, p.Commit, p.Rollback)
		}
		var got []Action
		for _, s := range p.Steps {
			got = append(got, s.Action)
		}
		if want := []Action{Switch, Service, Service, Health}; strings.Join(actions(got), " ") != strings.Join(actions(want), " ") {
			t.Errorf("Rollback(%q) steps %v; want %v", tt.to, got, want)
		}
	}
	// Nothing healthy besides the linked release: nothing to roll back to.
	only := &actual.State{Root: d.Root, RootExists: true, Link: linkedTo(b.Name), Releases: []actual.Release{b, failed}}
	if _, err := Rollback(d, only, "", Options{}); err == nil || !strings.Contains(err.Error(), "nothing to roll back to") {
		t.Errorf("Rollback with nothing healthy: %v", err)
	}
}

// withMigrations tracks d's migrations with kind and policy.
func withMigrations(d *desired.State, kind, policy string) *desired.State {
	m := &desired.Migrations{Kind: kind, OnRollback: policy}
	if kind == desired.MigrationsDjango {
		m.Manage = "venv/bin/python manage.py"
	} else {
		m.Applied, m.Known, m.Reverse = "bin/migrations applied", "bin/migrations known", "bin/migrations reverse"
	}
	d.Migrate.Migrations = m
	return d
}

// schemaAhead is a host linked to b, which applied shop.0002 and
// catalog.0023 and .0024 that a, a release on disk, does not have.
func schemaAhead(d *desired.State) *actual.State {
	a := rel(d, "20261119T100000Z-aaaaaaaa", shaA, record.Complete)
	b := rel(d, "20261120T100000Z-bbbbbbbb", shaB, record.Complete)
	knownA := []string{"catalog.0001_initial", "catalog.0022_price", "shop.0001_initial"}
	knownB := []string{"catalog.0001_initial", "catalog.0022_price", "shop.0001_initial", "shop.0002_nullable_note", "catalog.0023_sku", "catalog.0024_auto_20261120_1000"}
	return &actual.State{Root: d.Root, RootExists: true, Link: linkedTo(b.Name),
		Host:     &record.Host{Linked: b.Name, ServicesDone: true, Verified: true},
		Releases: []actual.Release{a, b}, Commit: inCache(shaA),
		Migrations: &record.Migrations{Applied: knownB, AppliedAt: t0, AppliedBy: b.Name,
			Releases: map[string][]string{a.Name: knownA, b.Name: knownB}}}
}
