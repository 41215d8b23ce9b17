package apply

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/reconciler-dev/reconciler/internal/history"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

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
// bg is told the pid of a listing in the background.
func (e *executor) list(ctx context.Context, p *plan.Plan, s plan.Step, script, release, commit string, bg *listing) (string, error) {
	var started func(int)
	if bg != nil {
		started = bg.started
	}
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
		Started: started,
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
func (e *executor) readMigrations(ctx context.Context, p *plan.Plan, s plan.Step, release, commit string, bg *listing) (known, applied []string, err error) {
	tr := s.Track
	if tr.Kind == desired.MigrationsDjango {
		out, err := e.list(ctx, p, s, tr.Known, release, commit, bg)
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
		out, err := e.list(ctx, p, s, q.script, release, commit, bg)
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
// records them: those it has, and the applied set. For a record step (a
// release the record lacks) with django, whose listing shows only the
// migrations the code has, applied ones it does not know (a newer
// release's, after a rollback) stay in the applied set, and so does a
// warned switch's note of them.
func (e *executor) recordMigrations(ctx context.Context, p *plan.Plan, s plan.Step, release, commit string, bg *listing) error {
	known, applied, err := e.readMigrations(ctx, p, s, release, commit, bg)
	if err != nil {
		return err
	}
	if bg != nil {
		bg.applied = applied
	}
	e.migrationsMu.Lock()
	defer e.migrationsMu.Unlock()
	u := record.MigrationsUpdate{At: e.Now(), Release: release, Known: known, Applied: applied, By: release, Keep: e.releasesOnDisk()}
	if s.Action == plan.Record && s.Track.Kind == desired.MigrationsDjango {
		m, err := record.ReadMigrations(e.l.MigrationsFile())
		if err != nil {
			return err
		}
		if m != nil {
			u.Applied = append(u.Applied, record.Missing(record.Missing(m.Applied, known), applied)...)
			if m.Ahead != nil && m.Ahead.Release == release {
				ahead := *m.Ahead
				u.Ahead = &ahead
			}
		}
	}
	_, err = record.UpdateMigrations(e.l.MigrationsFile(), u)
	return err
}

// listingNice is the priority of a listing still running once the link
// moved: the app's new workers starting are what the user waits for
// then. Awaited, it runs at the usual priority again.
const listingNice = 19

// recordMigrationsLater reads and records the migrations after the
// migrate step s succeeded, while the apply goes on to the preflight
// (whose server starts on the other core at the same time), the switch
// and the health check: the listing is a start of the app (a second or so
// of Python) that none of them needs. Once the link moved, it runs at a
// lower priority (lowerListing). awaitListing waits for it before any
// step that reads or prunes the record, and before the apply returns.
// A revert does not wait for it: the broken release would serve users
// meanwhile.
func (e *executor) recordMigrationsLater(ctx context.Context, p *plan.Plan, s plan.Step) {
	e.awaitListing()
	l := &listing{step: s, done: make(chan struct{})}
	e.listing = l
	go func() {
		defer close(l.done)
		l.err = e.recordMigrations(ctx, p, s, s.Release, s.Commit, l)
	}()
}

// listing is a recording of the migrations running in the background.
type listing struct {
	step    plan.Step
	done    chan struct{}
	pgid    atomic.Int64 // of the running command, to raise its priority when awaited
	err     error        // read once done is closed
	applied []string     // the applied migrations it read, once done
}

func (l *listing) started(pid int) { l.pgid.Store(int64(pid)) }

// lowerListing lowers the priority of a listing still running.
func (e *executor) lowerListing() {
	if l := e.listing; l != nil {
		if pgid := l.pgid.Load(); pgid != 0 {
			_ = syscall.Setpriority(syscall.PRIO_PGRP, int(pgid), listingNice)
		}
	}
}

// awaitListing waits for the listing running in the background, if one
// is, and returns it (nil if none ran). One that failed leaves the
// release without a record of its migrations, as one built before
// migrate.kind was set: the migration itself succeeded, so the release
// is not failed for it. It is said in the log and the history.
func (e *executor) awaitListing() *listing {
	l := e.listing
	if l == nil {
		return nil
	}
	e.listing, e.listed = nil, l
	if pgid := l.pgid.Load(); pgid != 0 {
		// Waited for now: at the usual priority (root may raise it; for
		// another user this fails and the wait is longer).
		_ = syscall.Setpriority(syscall.PRIO_PGRP, int(pgid), 0)
	}
	<-l.done
	if l.err != nil {
		msg := fmt.Sprintf("the migrations of release %s are not recorded: %v", l.step.Release, l.err)
		e.log.Warn(msg)
		history.Append(e.l.HistoryFile(), history.Record{Time: e.Now().UTC(), Kind: history.KindStep, ApplyID: e.recID, Trigger: e.Trigger,
			Commit: l.step.Commit, Release: l.step.Release, Step: describe(l.step) + " (record the migrations)", Result: StepFailed, Error: msg})
	}
	return l
}

// schemaMayHaveChanged says whether the migrate step of this apply may
// have changed the schema: unknown (true) unless the migrations are
// tracked, and both the record before it and the listing after it read
// the applied set.
func (e *executor) schemaMayHaveChanged() bool {
	l := e.awaitListing()
	if l == nil {
		l = e.listed
	}
	if l == nil || l.err != nil || e.appliedBefore == nil {
		return true
	}
	return !slices.Equal(slices.Sorted(slices.Values(l.applied)), slices.Sorted(slices.Values(e.appliedBefore)))
}

// noteAppliedBefore reads, before the migrate step s runs, the applied
// migrations the record holds: schemaMayHaveChanged compares them with
// those the listing reads after it. Left nil when not known.
func (e *executor) noteAppliedBefore(s plan.Step) {
	e.appliedBefore = nil
	if s.Track == nil {
		return
	}
	if m, err := record.ReadMigrations(e.l.MigrationsFile()); err == nil && m != nil {
		e.appliedBefore = append([]string{}, m.Applied...)
	}
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
		err = e.recordMigrations(ctx, p, s, s.In, s.InCommit, nil)
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
	e.migrationsMu.Lock()
	defer e.migrationsMu.Unlock()
	_, err := record.UpdateMigrations(e.l.MigrationsFile(), record.MigrationsUpdate{At: e.Now(),
		Ahead: &record.Ahead{Release: s.Release, Migrations: s.Migrations}})
	if err == nil {
		e.log.Warn("switching to a release that lacks applied migrations (migrate.on_rollback: warn)")
	}
	return err
}
