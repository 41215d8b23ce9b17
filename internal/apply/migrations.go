package apply

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/lazyre"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// migrationRE is a migration as the record keeps it: app.name, with
// nothing a shell would read as more than a word.
var migrationRE = lazyre.New(`^[A-Za-z0-9_][A-Za-z0-9_-]*\.[A-Za-z0-9_][A-Za-z0-9_.:@+-]*$`)

// djangoLine is a line of `manage.py showmigrations --plan`: "[X]  app.name".
var djangoLine = lazyre.New(`^\[([X ])\]\s+(\S+)`)

// ParseShowmigrations reads `manage.py showmigrations --plan`: every
// migration the code has, in plan order, and the applied ones ([X]).
// Other lines (warnings a settings module prints) are not migrations.
func ParseShowmigrations(out string) (known, applied []string, err error) {
	known, applied = []string{}, []string{}
	for i, line := range strings.Split(out, "\n") {
		m := djangoLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		if !migrationRE.MatchString(m[2]) {
			return nil, nil, fmt.Errorf("line %d: %q is not app.name", i+1, m[2])
		}
		known = append(known, m[2])
		if m[1] == "X" {
			applied = append(applied, m[2])
		}
	}
	return known, applied, nil
}

// ParseMigrationList reads the output of an applied or known command: one
// migration a line, "app.name" or "app name"; blank lines are skipped.
func ParseMigrationList(out string) ([]string, error) {
	list := []string{}
	for i, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		var m string
		switch len(f) {
		case 0:
			continue
		case 1:
			m = f[0]
		case 2:
			m = f[0] + "." + f[1]
		default:
			return nil, fmt.Errorf("line %d: %q is not one migration (app.name or app name)", i+1, strings.TrimSpace(line))
		}
		if !migrationRE.MatchString(m) {
			return nil, fmt.Errorf("line %d: %q is not one migration (app.name or app name)", i+1, strings.TrimSpace(line))
		}
		list = append(list, m)
	}
	return list, nil
}

// list runs a command that lists migrations in release's directory, as
// the migration runs (its user, timeout and environment), and returns
// what it printed on stdout. The runner interleaves stdout and stderr:
// the script prints stdout after a marker of its own, once the command
// ended, so that a warning on stderr is never read as a migration.
func (e *executor) list(ctx context.Context, p *plan.Plan, s plan.Step, script, release, commit string) (string, error) {
	var nonce [8]byte
	rand.Read(nonce[:])
	marker := "--- reconciler migrations " + hex.EncodeToString(nonce[:]) + " ---"
	wrapped := "reconciler_list=$(\n" + script + "\n)\nreconciler_status=$?\nprintf '%s\\n' '" + marker + "'\nprintf '%s\\n' \"$reconciler_list\"\nexit $reconciler_status\n"
	var out bytes.Buffer
	err := e.Runner.Run(ctx, runner.Command{
		Name:    "list migrations",
		Script:  wrapped,
		Dir:     e.l.ReleaseDir(release),
		Env:     e.env(p, release, commit),
		Timeout: s.Timeout,
		Output:  &out,
		Contain: true,
		User:    s.RunAs,
	})
	if err != nil {
		return "", fmt.Errorf("list migrations (%s): %w", script, err)
	}
	_, after, ok := strings.Cut(out.String(), marker+"\n")
	if !ok {
		return "", fmt.Errorf("list migrations (%s): no output", script)
	}
	return after, nil
}

// readMigrations lists, with the code of release, the migrations it has
// and those applied.
func (e *executor) readMigrations(ctx context.Context, p *plan.Plan, s plan.Step, release, commit string) (known, applied []string, err error) {
	tr := s.Track
	if tr.Kind == desired.MigrationsDjango {
		out, err := e.list(ctx, p, s, tr.Known, release, commit)
		if err != nil {
			return nil, nil, err
		}
		known, applied, err = ParseShowmigrations(out)
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", tr.Known, err)
		}
		return known, applied, nil
	}
	for _, q := range []struct {
		script string
		into   *[]string
	}{{tr.Known, &known}, {tr.Applied, &applied}} {
		out, err := e.list(ctx, p, s, q.script, release, commit)
		if err != nil {
			return nil, nil, err
		}
		if *q.into, err = ParseMigrationList(out); err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", q.script, err)
		}
	}
	return known, applied, nil
}

// recordMigrations reads the migrations with the code of release and
// records them: those it has, and the applied set.
func (e *executor) recordMigrations(ctx context.Context, p *plan.Plan, s plan.Step, release, commit string) error {
	known, applied, err := e.readMigrations(ctx, p, s, release, commit)
	if err != nil {
		return err
	}
	_, err = record.UpdateMigrations(e.l.MigrationsFile(), record.MigrationsUpdate{At: e.Now(), Release: release, Known: known,
		Applied: applied, By: release, Keep: e.releasesOnDisk()})
	return err
}

// releasesOnDisk names the releases under releases/: the migrations
// record forgets the others. Nil when they cannot be listed.
func (e *executor) releasesOnDisk() []string {
	entries, err := os.ReadDir(e.l.ReleasesDir())
	if err != nil {
		return nil
	}
	out := []string{}
	for _, en := range entries {
		if en.IsDir() && layout.IsReleaseName(en.Name()) {
			out = append(out, en.Name())
		}
	}
	return out
}

// reverse unapplies migrations the target lacks with the code of the
// linked release (s.In), then records the applied set as that code reads
// it. A failure is the target's: recorded failed at this step, so it is
// not tried again in a loop, and the host stays where it is.
func (e *executor) reverse(ctx context.Context, p *plan.Plan, s plan.Step) error {
	env := append(e.env(p, s.In, s.InCommit), "RECONCILER_MIGRATIONS_TO_REVERSE="+strings.Join(s.Migrations, " "))
	err := splitOutput(e.commandEnv(ctx, s, e.l.StepLog(s.Release, s.Name), e.l.ReleaseDir(s.In), true, env))
	if err == nil && s.Track != nil {
		err = e.recordMigrations(ctx, p, s, s.In, s.InCommit)
	}
	if err != nil {
		return e.failed(ctx, s, record.MigrateFailed, err)
	}
	return nil
}

// failed records the release failed at step s with event (BuildFailed,
// or MigrateFailed for a reverse or a migrate run again before its
// switch), unless the step was stopped from outside: that is not the
// release's fault, so it stays resumable. When the record cannot be
// written the release keeps its state and the next apply resumes it.
func (e *executor) failed(ctx context.Context, s plan.Step, event record.Event, err error) error {
	if ctx.Err() != nil {
		return err
	}
	f := &record.Failure{Step: s.Name, Error: err.Error()}
	var sf *stepFailure
	if errors.As(err, &sf) {
		f.Output = sf.output
	}
	if werr := e.transition(s.Release, record.Change{Event: event, Failure: f}); werr != nil {
		return fmt.Errorf("%w; recording the failure failed too: %v", err, werr)
	}
	return err
}

// recordAhead records a switch that leaves the schema ahead of the
// target (on_rollback: warn).
func (e *executor) recordAhead(s plan.Step) error {
	_, err := record.UpdateMigrations(e.l.MigrationsFile(), record.MigrationsUpdate{At: e.Now(),
		Ahead: &record.Ahead{Release: s.Release, Migrations: s.Migrations}})
	if err == nil {
		e.log.Warn("switching to a release that lacks applied migrations (migrate.on_rollback: warn)")
	}
	return err
}
