package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
)

func TestParseShowmigrations(t *testing.T) {
	tests := []struct {
		name, out      string
		known, applied []string
		err            string
	}{
		{"plan", "[X]  shop.0001_initial\n[X]  catalog.0001_initial\n[ ]  shop.0002_note\n",
			[]string{"shop.0001_initial", "catalog.0001_initial", "shop.0002_note"}, []string{"shop.0001_initial", "catalog.0001_initial"}, ""},
		{"warnings are not migrations", "System check identified some issues:\nWARNINGS:\n?: (urls.W005) x\n[X]  shop.0001_initial\n",
			[]string{"shop.0001_initial"}, []string{"shop.0001_initial"}, ""},
		{"none", "", []string{}, []string{}, ""},
		{"not app.name", "[X]  shop.0001;rm\n", nil, nil, `line 1: "shop.0001;rm" is not app.name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			known, applied, err := ParseShowmigrations(tt.out)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(known, tt.known) || !reflect.DeepEqual(applied, tt.applied) {
				t.Errorf("got %v %v %v; want %v %v", known, applied, err, tt.known, tt.applied)
			}
		})
	}
}

func TestParseMigrationList(t *testing.T) {
	tests := []struct {
		name, out string
		want      []string
		err       string
	}{
		{"dotted", "shop.0001_initial\ncatalog.20240101_add\n", []string{"shop.0001_initial", "catalog.20240101_add"}, ""},
		{"app and name", "shop 0001_initial\n\n  catalog  0002_x  \n", []string{"shop.0001_initial", "catalog.0002_x"}, ""},
		{"empty", "\n", []string{}, ""},
		{"three words", "shop 0001 extra\n", nil, `line 1: "shop 0001 extra" is not one migration (app.name or app name)`},
		{"no app", "0001_initial\n", nil, `line 1: "0001_initial" is not one migration (app.name or app name)`},
		{"shell", "shop $(id)\n", nil, `line 1: "shop $(id)" is not one migration (app.name or app name)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMigrationList(tt.out)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v %v; want %v", got, err, tt.want)
			}
		})
	}
}

// A fake framework of kind other: the database is a file in the shared
// dir, the code's migrations are its MIGRATIONS file.
const (
	fakeMigrate = `touch "$RECONCILER_SHARED/db"; while read m; do grep -qx "$m" "$RECONCILER_SHARED/db" || echo "$m" >> "$RECONCILER_SHARED/db"; done < MIGRATIONS`
	fakeReverse = `for m in $RECONCILER_MIGRATIONS_TO_REVERSE; do grep -qx "$m" MIGRATIONS || exit 7; grep -vx "$m" "$RECONCILER_SHARED/db" > "$RECONCILER_SHARED/db.new"; mv "$RECONCILER_SHARED/db.new" "$RECONCILER_SHARED/db"; done`
)

func (h *host) tracked(commit, policy string) *desired.State {
	d := h.desired(commit)
	d.Migrate.Run = fakeMigrate
	d.Migrate.Migrations = &desired.Migrations{Kind: desired.MigrationsOther, OnRollback: policy,
		Known: "cat MIGRATIONS", Applied: `cat "$RECONCILER_SHARED/db"`, Reverse: fakeReverse}
	return d
}

func (h *host) migrationsRecord() *record.Migrations {
	h.t.Helper()
	m, err := record.ReadMigrations(h.l.MigrationsFile())
	if err != nil || m == nil {
		h.t.Fatalf("migrations record: %v %v", m, err)
	}
	return m
}

// Rolling back over a migration under each policy: where the link ends,
// what the database has applied, what the record says.
func TestRollbackOverMigration(t *testing.T) {
	v1m := []string{"shop.0001_initial"}
	v2m := []string{"shop.0001_initial", "shop.0002_note"}
	tests := []struct {
		policy     string
		toV1       bool     // the link moves back to v1
		applied    []string // the database after the rollback
		blocked    bool
		ahead      bool // the record keeps the warned switch
		steps      string
		remigrates bool // going forward to v2 again runs its migrate
	}{
		{policy: "warn", toV1: true, applied: v2m, ahead: true, steps: "schema switch service"},
		{policy: "block", applied: v2m, blocked: true, steps: ""},
		{policy: "reverse", toV1: true, applied: v1m, steps: "reverse switch service", remigrates: true},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			h := newHost(t)
			h.repo.Write("MIGRATIONS", strings.Join(v1m, "\n")+"\n")
			v1 := h.commit("v1")
			h.mustApply(h.tracked(v1, tt.policy))
			first := h.linked()
			h.repo.Write("MIGRATIONS", strings.Join(v2m, "\n")+"\n")
			v2 := h.repo.Commit("v2")
			h.mustApply(h.tracked(v2, tt.policy))
			second := h.linked()
			if m := h.migrationsRecord(); !reflect.DeepEqual(m.Applied, v2m) || !reflect.DeepEqual(m.Releases[first], v1m) || !reflect.DeepEqual(m.Releases[second], v2m) {
				t.Fatalf("record after v2: %+v", m)
			}

			res, _, err := h.apply(context.Background(), h.tracked(v1, tt.policy))
			var be *BlockedError
			if tt.blocked != errors.As(err, &be) || !tt.blocked && err != nil {
				t.Fatalf("rollback: %v", err)
			}
			if tt.blocked && (be.Policy != "block" || res.Result != "blocked") {
				t.Errorf("blocked: %+v, result %s", be, res.Result)
			}
			var steps []string
			for _, s := range res.Steps {
				steps = append(steps, string(s.Action))
			}
			if strings.Join(steps, " ") != tt.steps {
				t.Errorf("steps %v, want %s", steps, tt.steps)
			}
			want := second
			if tt.toV1 {
				want = first
			}
			if h.linked() != want {
				t.Errorf("linked %s, want %s", h.linked(), want)
			}
			if got := h.lines("db"); !reflect.DeepEqual(got, tt.applied) {
				t.Errorf("database %v, want %v", got, tt.applied)
			}
			m := h.migrationsRecord()
			if !reflect.DeepEqual(m.Applied, tt.applied) || (m.Ahead != nil) != tt.ahead {
				t.Errorf("record: applied %v ahead %+v", m.Applied, m.Ahead)
			}
			if tt.blocked {
				return
			}

			res = h.mustApplyRes(h.tracked(v2, tt.policy))
			migrated := false
			for _, s := range res.Steps {
				migrated = migrated || s.Action == plan.Migrate && s.Rerun
			}
			if migrated != tt.remigrates || h.linked() != second {
				t.Errorf("forward again: migrated %v, linked %s", migrated, h.linked())
			}
			if got := h.lines("db"); !reflect.DeepEqual(got, v2m) {
				t.Errorf("database after forward again %v", got)
			}
		})
	}
}

// A reverse that fails leaves the host on the newer release and records
// the target failed at it: it is not tried again until --retry.
func TestFailedReverseKeepsHostAndBlocksTarget(t *testing.T) {
	h := newHost(t)
	h.repo.Write("MIGRATIONS", "shop.0001_initial\n")
	v1 := h.commit("v1")
	h.mustApply(h.tracked(v1, "reverse"))
	first := h.linked()
	h.repo.Write("MIGRATIONS", "shop.0001_initial\nshop.0002_note\n")
	v2 := h.commit("v2")
	h.mustApply(h.tracked(v2, "reverse"))
	second := h.linked()
	if err := os.WriteFile(filepath.Join(h.l.ReleaseDir(second), "MIGRATIONS"), []byte("other.0001\n"), 0o644); err != nil {
		t.Fatal(err) // the newer code no longer has the migration: its reverse fails
	}
	if _, _, err := h.apply(context.Background(), h.tracked(v1, "reverse")); err == nil || !strings.Contains(err.Error(), "exited with status 7") {
		t.Fatalf("rollback with a failing reverse: %v", err)
	}
	if h.linked() != second {
		t.Errorf("linked %s after a failed reverse", h.linked())
	}
	if r := h.record(first); r.State != record.Failed || r.Failure == nil || r.Failure.Step != "reverse" {
		t.Errorf("target record: %+v", r)
	}
	if _, _, err := h.apply(context.Background(), h.tracked(v1, "reverse")); !errors.As(err, new(*BlockedError)) {
		t.Errorf("second try: %v; want blocked", err)
	}
}

func (h *host) mustApplyRes(d *desired.State) *Result {
	h.t.Helper()
	res, _ := h.mustApply(d)
	return res
}

// dropKnown removes release's list of migrations from the record, with
// the applied set as it was before: what a kill between the switch and
// the end of the migration's listing (it runs in the background) leaves.
func (h *host) dropKnown(release string, applied []string) {
	h.t.Helper()
	m := h.migrationsRecord()
	delete(m.Releases, release)
	if applied != nil {
		m.Applied = applied
	}
	b, err := json.Marshal(m)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(h.l.MigrationsFile(), b, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// lostListing deploys v1 (shop.0001) then v2 (shop.0002 too), with
// on_rollback: block, and leaves the record as a kill between v2's
// switch and the end of its listing does: no list of v2's migrations,
// the applied set of before.
func lostListing(t *testing.T) (h *host, v1, v2, second string) {
	h = newHost(t)
	h.repo.Write("MIGRATIONS", "shop.0001_initial\n")
	v1 = h.commit("v1")
	h.mustApply(h.tracked(v1, desired.OnRollbackBlock))
	h.repo.Write("MIGRATIONS", "shop.0001_initial\nshop.0002_note\n")
	v2 = h.repo.Commit("v2")
	h.mustApply(h.tracked(v2, desired.OnRollbackBlock))
	second = h.linked()
	h.dropKnown(second, []string{"shop.0001_initial"})
	return h, v1, v2, second
}

// A record that lost the linked release's migrations (an apply killed
// after its switch, before the listing was written) is listed again by
// the next apply, which has nothing else to do; then a rollback over the
// migration is seen for what it is and blocked. Without the listing the
// record's applied set would lack v2's migration and the rollback would
// go through.
func TestLostMigrationsRecordIsListedAgain(t *testing.T) {
	v2m := []string{"shop.0001_initial", "shop.0002_note"}
	h, v1, v2, second := lostListing(t)

	res := h.mustApplyRes(h.tracked(v2, desired.OnRollbackBlock))
	if got := actions(res.Plan); got != "record" {
		t.Fatalf("steps %q; want only the record step", got)
	}
	if m := h.migrationsRecord(); !reflect.DeepEqual(m.Applied, v2m) || !reflect.DeepEqual(m.Releases[second], v2m) {
		t.Fatalf("record %+v; want v2's migrations known and applied", m)
	}
	if res := h.mustApplyRes(h.tracked(v2, desired.OnRollbackBlock)); len(res.Steps) != 0 {
		t.Errorf("steps %q after the record; want none", actions(res.Plan))
	}
	_, _, err := h.apply(context.Background(), h.tracked(v1, desired.OnRollbackBlock))
	var be *BlockedError
	if !errors.As(err, &be) || h.linked() != second {
		t.Errorf("rollback over the recorded migration: %v, linked %s; want blocked on %s", err, h.linked(), second)
	}
}

// A listing that fails fails the apply, not the release: the host keeps
// serving it, its record is unchanged, and the next apply lists again.
func TestFailedRecordStepKeepsTheRelease(t *testing.T) {
	h := newHost(t)
	h.repo.Write("MIGRATIONS", "shop.0001_initial\n")
	d := h.tracked(h.commit("v1"), desired.OnRollbackBlock)
	h.mustApply(d)
	first := h.linked()
	h.dropKnown(first, nil)
	d.Migrate.Migrations.Applied = `echo "database unreachable" >&2; exit 3`
	_, _, err := h.apply(context.Background(), d)
	if err == nil || !strings.Contains(err.Error(), "record the migrations of release "+first) || !strings.Contains(err.Error(), "status 3") {
		t.Fatalf("apply with a failing listing: %v", err)
	}
	if rec := h.record(first); rec.State != record.Complete || rec.Failure != nil || h.linked() != first {
		t.Errorf("release %+v, linked %s; want %s complete and linked", rec, h.linked(), first)
	}
	d.Migrate.Migrations.Applied = `cat "$RECONCILER_SHARED/db"`
	if res := h.mustApplyRes(d); actions(res.Plan) != "record" {
		t.Errorf("steps %q; want the record step again", actions(res.Plan))
	}
}

// django's listing shows only the migrations the code has. Recording a
// release that lacks applied ones (linked by a warned rollback) keeps
// them in the applied set, and the warned switch's note, so a later
// rollback still sees them.
func TestRecordStepKeepsMigrationsTheCodeDoesNotKnow(t *testing.T) {
	v1m := []string{"shop.0001_initial"}
	v2m := []string{"shop.0001_initial", "shop.0002_note"}
	h := newHost(t)
	tracked := func(commit string) *desired.State {
		d := h.tracked(commit, desired.OnRollbackWarn)
		d.Migrate.Migrations = &desired.Migrations{Kind: desired.MigrationsDjango, OnRollback: desired.OnRollbackWarn,
			Manage: `sh -c 'while read m; do if grep -qx "$m" "$RECONCILER_SHARED/db"; then echo "[X]  $m"; else echo "[ ]  $m"; fi; done < MIGRATIONS' manage`}
		return d
	}
	h.repo.Write("MIGRATIONS", strings.Join(v1m, "\n")+"\n")
	v1 := h.commit("v1")
	h.mustApply(tracked(v1))
	first := h.linked()
	h.repo.Write("MIGRATIONS", strings.Join(v2m, "\n")+"\n")
	h.mustApply(tracked(h.repo.Commit("v2")))
	h.mustApply(tracked(v1)) // warned: shop.0002_note stays applied
	if h.linked() != first {
		t.Fatalf("linked %s after the rollback; want %s", h.linked(), first)
	}
	h.dropKnown(first, nil)

	res := h.mustApplyRes(tracked(v1))
	if got := actions(res.Plan); got != "record" {
		t.Fatalf("steps %q; want only the record step", got)
	}
	m := h.migrationsRecord()
	if !reflect.DeepEqual(m.Releases[first], v1m) || !reflect.DeepEqual(m.Applied, v2m) {
		t.Errorf("record: %s knows %v, applied %v; want %v and %v", first, m.Releases[first], m.Applied, v1m, v2m)
	}
	if m.Ahead == nil || m.Ahead.Release != first || !reflect.DeepEqual(m.Ahead.Migrations, []string{"shop.0002_note"}) {
		t.Errorf("ahead %+v; want the warned switch to %s kept", m.Ahead, first)
	}
}

// A record that lost the linked release's migrations (its listing cut
// short by a kill or a SIGTERM) has a stale applied set: a switch away
// from it, by `commit:` set back or by `reconciler rollback`, lists them
// first and then decides, so a rollback over the migration is blocked.
func TestSwitchAwayListsTheLinkedReleaseFirst(t *testing.T) {
	v2m := []string{"shop.0001_initial", "shop.0002_note"}
	for _, how := range []string{"commit set back", "reconciler rollback"} {
		t.Run(how, func(t *testing.T) {
			h, v1, v2, second := lostListing(t)

			d, mod := h.tracked(v1, desired.OnRollbackBlock), func(*Options) {}
			if how == "reconciler rollback" {
				d = h.tracked(v2, desired.OnRollbackBlock)
				mod = func(o *Options) { o.Rollback = &Rollback{Suspension: record.Suspension{Reason: "test"}} }
			}
			res, _, err := h.apply(context.Background(), d, mod)
			var be *BlockedError
			if !errors.As(err, &be) || be.Policy != desired.OnRollbackBlock {
				t.Fatalf("switch away: %v; want blocked by the policy", err)
			}
			if len(res.Steps) != 1 || res.Steps[0].Step.Action != plan.Record || res.Steps[0].Step.Release != second || res.Steps[0].Result != StepOK {
				t.Errorf("steps %+v; want the linked release's migrations listed", res.Steps)
			}
			if h.linked() != second {
				t.Errorf("linked %s; want %s", h.linked(), second)
			}
			if m := h.migrationsRecord(); !reflect.DeepEqual(m.Applied, v2m) || !reflect.DeepEqual(m.Releases[second], v2m) {
				t.Errorf("record %+v; want v2's migrations known and applied", m)
			}
		})
	}
}

// When that listing fails, the plan is made again without it and judges
// the switch on the record as it is: a rollback is not held up by the
// listing, and still refused over the migrations the stale record shows.
func TestSwitchAwayWhenTheLinkedListingFails(t *testing.T) {
	lists := [][]string{{"shop.0001_initial"}, {"shop.0001_initial", "shop.0002_note"}, {"shop.0001_initial", "shop.0002_note", "shop.0003_sku"}}
	tests := []struct {
		name     string
		releases int      // deployed one after the other
		stale    []string // the applied set the record keeps
		blocked  bool
	}{
		{name: "the stale record shows nothing ahead: the switch goes on", releases: 2, stale: lists[0]},
		{name: "the stale record shows a migration ahead: refused", releases: 3, stale: lists[1], blocked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			var first, commit0 string
			for i := 0; i < tt.releases; i++ {
				h.repo.Write("MIGRATIONS", strings.Join(lists[i], "\n")+"\n")
				var c string
				if i == 0 {
					c = h.commit("v1")
				} else {
					c = h.repo.Commit(fmt.Sprintf("v%d", i+1))
				}
				h.mustApply(h.tracked(c, desired.OnRollbackBlock))
				if i == 0 {
					first, commit0 = h.linked(), c
				}
			}
			last := h.linked()
			h.dropKnown(last, tt.stale)
			d := h.tracked(commit0, desired.OnRollbackBlock)
			d.Migrate.Migrations.Applied = `echo "database unreachable" >&2; exit 3`
			res, _, err := h.apply(context.Background(), d)
			var be *BlockedError
			if tt.blocked != errors.As(err, &be) || !tt.blocked && err != nil {
				t.Fatalf("switch away with a failing listing: %v; want blocked %v", err, tt.blocked)
			}
			want := first
			if tt.blocked {
				want = last
			}
			if h.linked() != want || len(res.Steps) == 0 || res.Steps[0].Result != StepFailed || res.Steps[0].Step.Action != plan.Record {
				t.Errorf("linked %s, steps %+v; want the failed listing, then %s linked", h.linked(), res.Steps, want)
			}
			if w := strings.Join(res.Plan.Warnings, "\n"); !strings.Contains(w, "could not be listed: the switch is judged on the record as it is") {
				t.Errorf("warnings %q; want the failed listing said", w)
			}
		})
	}
}
