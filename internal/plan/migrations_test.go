package plan

import (
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/actual"
)

// `reconciler rollback` follows migrate.on_rollback like a commit set
// back in desired.yaml.
func TestRollbackFollowsMigrationPolicy(t *testing.T) {
	tests := []struct {
		policy  string
		steps   []Action
		blocked bool
	}{
		{"warn", []Action{Schema, Switch, Service, Service, Health}, false},
		{"block", nil, true},
		{"reverse", []Action{Reverse, Reverse, Switch, Service, Service, Health}, false},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			d := withMigrations(desiredState(t, shaB[:8], 5), "django", tt.policy)
			p, err := Rollback(d, schemaAhead(d), "", Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got []Action
			for _, s := range p.Steps {
				got = append(got, s.Action)
			}
			if strings.Join(actions(got), " ") != strings.Join(actions(tt.steps), " ") {
				t.Errorf("steps %v, want %v", got, tt.steps)
			}
			if (p.Blocked != nil) != tt.blocked || p.Schema == nil || p.Schema.Policy != tt.policy || len(p.Schema.Apps) != 2 {
				t.Errorf("blocked %+v, schema %+v", p.Blocked, p.Schema)
			}
			if tt.blocked && (p.Blocked.Policy != "block" || p.Holding != p.Linked) {
				t.Errorf("blocked %+v, holding %s", p.Blocked, p.Holding)
			}
		})
	}
}

// Where the records cannot tell, the plan says so and switches as before.
func TestMigrationPolicyWithoutRecords(t *testing.T) {
	tests := []struct {
		name   string
		change func(a *actual.State)
		want   string
	}{
		{"no record yet", func(a *actual.State) { a.Migrations = nil }, "no applied migrations are recorded yet"},
		{"release built before kind", func(a *actual.State) { delete(a.Migrations.Releases, a.Releases[0].Name) }, "has no record of its migrations (built before migrate.kind was set)"},
		{"unreadable record", func(a *actual.State) { a.Migrations, a.MigrationsProblem = nil, "read x: unexpected end of JSON input" }, "migrations record: read x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := withMigrations(desiredState(t, shaA[:8], 5), "django", "block")
			a := schemaAhead(d)
			tt.change(a)
			p, err := Make(d, a, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Blocked != nil || p.Schema != nil || len(p.Steps) == 0 || p.Steps[0].Action != Switch {
				t.Errorf("plan: blocked %+v schema %+v steps %d", p.Blocked, p.Schema, len(p.Steps))
			}
			if !strings.Contains(strings.Join(p.Warnings, "\n"), tt.want) {
				t.Errorf("warnings %q; want %q", p.Warnings, tt.want)
			}
		})
	}
}

// Untracked migrations plan as before: no schema check at all.
func TestUntrackedMigrationsPlanAsBefore(t *testing.T) {
	d := desiredState(t, shaA[:8], 5)
	a := schemaAhead(d)
	p, err := Make(d, a, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Schema != nil || p.Blocked != nil || p.Steps[0].Action != Switch {
		t.Errorf("untracked: %+v", p)
	}
	if d.Migrate.Migrations != nil {
		t.Fatal("desiredState tracks migrations")
	}
}

// The release the plan leaves linked gets its migrations listed when
// the record lacks them: after the health check, and only then.
func TestRecordStepWhenTheRecordLacksTheRelease(t *testing.T) {
	tests := []struct {
		name    string
		commit  string
		tracked bool
		change  func(a *actual.State)
		steps   string // the plan's actions
		reason  string // the record step's
	}{
		{name: "recorded", commit: shaB, tracked: true, change: func(*actual.State) {}},
		{name: "linked release's list lost", commit: shaB, tracked: true,
			change: func(a *actual.State) { delete(a.Migrations.Releases, a.Link.Release) },
			steps:  "record", reason: "the record has no list of release 20261120T100000Z-bbbbbbbb's migrations"},
		{name: "no record yet", commit: shaB, tracked: true, change: func(a *actual.State) { a.Migrations = nil },
			steps: "record", reason: "no applied migrations are recorded yet"},
		{name: "unreadable record", commit: shaB, tracked: true,
			change: func(a *actual.State) { a.Migrations, a.MigrationsProblem = nil, "read x: unexpected end of JSON input" }},
		{name: "untracked", commit: shaB, change: func(a *actual.State) { a.Migrations = nil }},
		{name: "rollback to a release without a list", commit: shaA, tracked: true,
			change: func(a *actual.State) { delete(a.Migrations.Releases, a.Releases[0].Name) },
			steps:  "switch service service health record", reason: "20261119T100000Z-aaaaaaaa's migrations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := desiredState(t, tt.commit[:8], 5)
			if tt.tracked {
				d = withMigrations(d, "django", "warn")
			}
			a := schemaAhead(d)
			a.Commit = inCache(tt.commit)
			tt.change(a)
			p, err := Make(d, a, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got []Action
			for _, s := range p.Steps {
				got = append(got, s.Action)
			}
			if g := strings.Join(actions(got), " "); g != tt.steps {
				t.Fatalf("steps %q, want %q", g, tt.steps)
			}
			if tt.steps == "" {
				return
			}
			s := p.Steps[len(p.Steps)-1]
			if s.Release != p.Target || s.Track == nil || s.Track.Known != "venv/bin/python manage.py showmigrations --plan" || !strings.Contains(s.Reason, tt.reason) {
				t.Errorf("record step %+v; want %s's listing, reason %q", s, p.Target, tt.reason)
			}
		})
	}
}
