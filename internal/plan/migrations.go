package plan

import (
	"fmt"
	"strings"
	"time"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// Track says how a migrate or reverse step reads the migrations once it
// ran, for the record: those the release's code has, and those applied.
type Track struct {
	Kind    string `json:"kind"`    // desired.MigrationsDjango or desired.MigrationsOther
	Known   string `json:"known"`   // lists the migrations the code has
	Applied string `json:"applied"` // lists the applied ones; the same command as Known for django
}

// TrackOf is how d's migrations are read; nil when they are not tracked.
func TrackOf(d *desired.State) *Track {
	if d.Migrate == nil || d.Migrate.Migrations == nil {
		return nil
	}
	m := d.Migrate.Migrations
	if m.Kind == desired.MigrationsDjango {
		// One listing says both: every migration the code has, [X] for
		// the applied ones.
		list := m.Manage + " showmigrations --plan"
		return &Track{Kind: m.Kind, Known: list, Applied: list}
	}
	return &Track{Kind: m.Kind, Known: m.Known, Applied: m.Applied}
}

// SchemaAhead says the target lacks migrations that are applied, and
// what the policy does about it.
type SchemaAhead struct {
	Release string     `json:"release"`          // the target, which lacks them
	Linked  string     `json:"linked,omitempty"` // the release linked now, whose code has them
	Policy  string     `json:"policy"`           // migrate.on_rollback
	Apps    []AppAhead `json:"apps"`
}

// AppAhead is one app's migrations the target lacks.
type AppAhead struct {
	App string `json:"app"`
	// Migrations are applied and unknown to the target, in the order
	// they were applied.
	Migrations []string `json:"migrations"`
	// To is the last migration of the app the target knows, or "zero":
	// where a reverse takes the app.
	To string `json:"to"`
}

// Ahead lists every migration the target lacks, in applied order.
func (s *SchemaAhead) Ahead() []string {
	var out []string
	for _, a := range s.Apps {
		out = append(out, a.Migrations...)
	}
	return out
}

// StepSchema names the step that records a warned switch, and
// StepReverse the steps that unapply migrations (django: one per app,
// "reverse-<app>").
const (
	StepSchema  = "schema"
	StepReverse = "reverse"
)

// migrationSteps plans what switching from the linked release to the
// built release name needs for the database: the steps that unapply the
// migrations name lacks (on_rollback: reverse) or record that they stay
// (warn), then its migrate again if some of its migrations are no longer
// applied. schema is set when name lacks applied migrations; with
// on_rollback: block the caller refuses. The plan decides from the
// records alone: it runs nothing.
func migrationSteps(d *desired.State, a *actual.State, name, commit string, linkedUnlisted bool) (steps []Step, schema *SchemaAhead, warns []string) {
	tr := TrackOf(d)
	if tr == nil || a.Link.Release == name {
		return nil, nil, nil
	}
	m, rec := d.Migrate.Migrations, a.Migrations
	if a.MigrationsProblem != "" {
		return nil, nil, []string{fmt.Sprintf("migrations record: %s; the plan cannot tell whether release %s lacks applied migrations", a.MigrationsProblem, name)}
	}
	if s := recordLinked(d, a, tr); s != nil {
		if !linkedUnlisted {
			return []Step{*s}, nil, []string{fmt.Sprintf("the record lacks the migrations of the linked release %s, so its applied set may be stale: they are listed first, and the plan is made again", a.Link.Release)}
		}
		warns = append(warns, fmt.Sprintf("the migrations of the linked release %s could not be listed: the switch is judged on the record as it is, whose applied set may lack them", a.Link.Release))
	}
	if rec == nil || rec.Applied == nil {
		return nil, nil, append(warns, fmt.Sprintf("no applied migrations are recorded yet (the next migrate records them): the plan cannot tell whether release %s lacks any", name))
	}
	known, ok := rec.Known(name)
	if !ok {
		return nil, nil, append(warns, fmt.Sprintf("release %s has no record of its migrations (built before migrate.kind was set): the plan cannot tell whether it lacks applied ones", name))
	}
	ahead := record.Missing(rec.Applied, known)
	if len(ahead) > 0 {
		schema = &SchemaAhead{Release: name, Linked: a.Link.Release, Policy: m.OnRollback}
		for _, app := range appsNewestFirst(ahead) {
			aa := AppAhead{App: app, To: "zero"}
			for _, mg := range ahead {
				if x, _ := record.SplitMigration(mg); x == app {
					aa.Migrations = append(aa.Migrations, mg)
				}
			}
			for _, k := range known {
				if x, n := record.SplitMigration(k); x == app {
					aa.To = n
				}
			}
			schema.Apps = append(schema.Apps, aa)
		}
		switch m.OnRollback {
		case desired.OnRollbackBlock:
			return nil, schema, warns
		case desired.OnRollbackWarn:
			steps = append(steps, Step{Action: Schema, Release: name, Commit: commit, Name: StepSchema, Migrations: ahead,
				Detail: fmt.Sprintf("%s stay%s applied, ahead of release %s", strings.Join(ahead, ", "), verbS(len(ahead)), name),
				Reason: "migrate.on_rollback: warn: switching anyway, and recording it"})
		case desired.OnRollbackReverse:
			if a.Link.Release == "" {
				return nil, schema, warns // no code to unapply them with: the caller refuses
			}
			steps = append(steps, reverseSteps(d, a, schema, name, commit, tr)...)
		}
	}
	applied := rec.Applied
	if schema != nil && m.OnRollback == desired.OnRollbackReverse {
		applied = record.Missing(applied, ahead)
	}
	if behind := record.Missing(known, applied); len(behind) > 0 {
		steps = append(steps, Step{Action: Migrate, Release: name, Commit: commit, Name: StepMigrate, Run: d.Migrate.Run,
			Timeout: d.Migrate.Timeout, RunAs: d.Migrate.RunAs, Fingerprint: d.Migrate.Fingerprint(), Rerun: true, Track: tr,
			Migrations: behind,
			Reason:     fmt.Sprintf("release %s has migrations that are not applied (%s): it migrates again", name, strings.Join(behind, ", "))})
	}
	return steps, schema, warns
}

// recordSteps lists the migrations of release name, the release the
// plan leaves linked, when migrations are tracked and the record lacks
// them: an apply stopped after its switch, before the listing that
// follows its migration (it runs in the background) was written; that
// listing failed; or the release was built before migrate.kind was set.
// Without them a later rollback cannot tell what this release lacks,
// and the applied set may miss its migrations. steps are the plan's so
// far: a migrate of name lists them itself. The step runs after the
// health check, which no one waits on it for.
func recordSteps(d *desired.State, a *actual.State, name, commit string, steps []Step) []Step {
	tr := TrackOf(d)
	if tr == nil || name == NewRelease || commit == "" || a.MigrationsProblem != "" {
		return nil
	}
	for _, s := range steps {
		if s.Action == Migrate && s.Release == name {
			return nil
		}
	}
	reason := "no applied migrations are recorded yet"
	if rec := a.Migrations; rec != nil && rec.Applied != nil {
		if _, ok := rec.Known(name); ok {
			return nil
		}
		reason = fmt.Sprintf("the record has no list of release %s's migrations (an apply stopped before writing it, its listing failed, or it was built before migrate.kind was set)", name)
	}
	return []Step{recordStep(d, tr, name, commit, d.Migrate.Timeout, reason)}
}

// recordStep lists release name's migrations as the migration runs (its
// user), within timeout.
func recordStep(d *desired.State, tr *Track, name, commit string, timeout time.Duration, reason string) Step {
	return Step{Action: Record, Release: name, Commit: commit, Name: "migrations", Track: tr, Timeout: timeout, RunAs: d.Migrate.RunAs, Reason: reason}
}

// LinkedListingTimeout bounds the listing a switch away waits for (a
// rollback in an incident, with a database that may hang): past it the
// switch is judged on the record as it is.
const LinkedListingTimeout = time.Minute

// recordLinked lists the linked release's migrations before a switch
// away from it, when the record lacks them: the applied set was last
// written before that release's migration was listed (an apply stopped
// after its switch, or its listing failed), so the check of what the
// target lacks cannot trust it. The executor makes the plan again after
// it (Replan). Nil when the record has them, when nothing is recorded
// yet, or when nothing is linked.
func recordLinked(d *desired.State, a *actual.State, tr *Track) *Step {
	l := a.Release(a.Link.Release)
	if l == nil || l.Record == nil || l.Record.Commit == "" {
		return nil
	}
	rec := a.Migrations
	if rec == nil || rec.Applied == nil {
		return nil // nothing recorded yet: no list of the target's either
	}
	if _, ok := rec.Known(l.Name); ok {
		return nil
	}
	timeout := d.Migrate.Timeout
	if timeout <= 0 || timeout > LinkedListingTimeout {
		timeout = LinkedListingTimeout
	}
	s := recordStep(d, tr, l.Name, l.Record.Commit, timeout,
		fmt.Sprintf("the record lacks the migrations of the linked release %s: what the target lacks is decided once they are listed", l.Name))
	s.Replan = true
	return &s
}

// appsNewestFirst are the apps of migrations (in applied order), the app
// applied last first: the order to unapply them in, so that an app is
// reversed before those it was migrated on top of.
func appsNewestFirst(migrations []string) []string {
	seen := map[string]bool{}
	var out []string
	for i := len(migrations) - 1; i >= 0; i-- {
		if a, _ := record.SplitMigration(migrations[i]); !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

func verbS(n int) string {
	if n == 1 {
		return "s"
	}
	return ""
}

// reverseSteps unapply what the target lacks with the code of the linked
// release, which has those migrations: Django's migrate <app> <to> for
// each app, or the reverse command once with the migrations newest first.
func reverseSteps(d *desired.State, a *actual.State, schema *SchemaAhead, name, commit string, tr *Track) []Step {
	m, linked := d.Migrate.Migrations, a.Link.Release
	inCommit := ""
	if r := a.Release(linked); r != nil && r.Record != nil {
		inCommit = r.Record.Commit
	}
	reason := fmt.Sprintf("migrate.on_rollback: reverse: release %s does not have them; the code of %s, linked, does", name, linked)
	base := Step{Action: Reverse, Release: name, Commit: commit, In: linked, InCommit: inCommit, Timeout: d.Migrate.Timeout,
		RunAs: d.Migrate.RunAs, Track: tr, Reason: reason}
	if m.Kind != desired.MigrationsDjango {
		s := base
		s.Name, s.Run, s.Migrations = StepReverse, m.Reverse, newestFirst(schema.Ahead())
		s.Detail = strings.Join(s.Migrations, ", ")
		return []Step{s}
	}
	var out []Step
	for _, app := range schema.Apps {
		s := base
		s.Name = StepReverse + "-" + app.App
		s.Run = m.Manage + " migrate " + shellWord(app.App) + " " + shellWord(app.To)
		s.Migrations = newestFirst(app.Migrations)
		s.Detail = app.App + " to " + app.To
		out = append(out, s)
	}
	return out
}

func newestFirst(ms []string) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[len(ms)-1-i] = m
	}
	return out
}

// shellWord quotes s for sh unless it is plainly safe. Migration names
// come from the framework's listing, checked when read; quoted anyway.
func shellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// schemaBlocked is the plan that refuses a switch under on_rollback:
// block, or reverse with nothing linked to reverse with: no step, the
// host stays.
func schemaBlocked(p *Plan, schema *SchemaAhead) *Plan {
	p.Schema = schema
	msg := fmt.Sprintf("release %s lacks migrations that are applied (%s) and migrate.on_rollback is %s", schema.Release, strings.Join(schema.Ahead(), ", "), schema.Policy)
	if schema.Policy == desired.OnRollbackReverse {
		msg = fmt.Sprintf("release %s lacks migrations that are applied (%s), and no release is linked whose code could unapply them", schema.Release, strings.Join(schema.Ahead(), ", "))
	}
	p.Blocked = &Blocked{Release: schema.Release, Step: StepSchema, Error: msg, Policy: schema.Policy}
	p.Steps = nil
	p.Holding = schema.Linked
	return p
}
