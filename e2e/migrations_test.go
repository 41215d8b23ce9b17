//go:build e2e

package e2e

import (
	"reflect"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/e2e/stack"
)

// TestDjangoRollbackOverMigration rolls back over a migration that adds a
// nullable column (v2's shop.0002_update) under each migrate.on_rollback
// policy, and goes forward again, reading django_migrations and the
// table's columns after each.
func TestDjangoRollbackOverMigration(t *testing.T) {
	s := stack.New(t, stack.Options{Dir: t.TempDir(), ModRoot: "..", Bin: bin})
	s.AddColumn("v2")
	desired := func(tag, policy string) {
		t.Helper()
		y := s.Render(tag, stack.Web, "reload")
		s.WriteDesired(s.Replace(y, "on_rollback: warn ", "on_rollback: "+policy+" "))
	}
	v1 := []string{"shop.0001_initial"}
	v2 := []string{"shop.0001_initial", "shop.0002_update"}
	want := func(step string, migrations []string, column bool, page string) {
		t.Helper()
		if got := s.AppliedMigrations(); !reflect.DeepEqual(got, migrations) {
			t.Errorf("%s: django_migrations has %v, want %v", step, got, migrations)
		}
		cols := strings.Join(s.Columns("shop_setting"), " ")
		if has := strings.Contains(" "+cols+" ", " note "); has != column {
			t.Errorf("%s: shop_setting has columns %s; want note: %v", step, cols, column)
		}
		if code, body := s.Get("/"); code != 200 || !strings.HasPrefix(body, stack.Page(page)) {
			t.Errorf("%s: GET / through nginx: %d %q; want %s", step, code, body, stack.Page(page))
		}
	}

	t.Log("1. v1, then v2 adds the nullable column")
	desired("v1", "warn")
	s.MustApply()
	want("v1", v1, false, "v1")
	desired("v2", "warn")
	s.MustApply()
	want("v2", v2, true, "v2")
	v2Link := stack.Link(s.Root)

	t.Log("2. block: back to v1 is refused, exit 1, the host stays on v2")
	desired("v1", "block")
	r := s.Reconciler("plan")
	if !strings.Contains(r.Stdout, "! schema ahead: shop.0002_update is applied; release ") || !strings.Contains(r.Stdout, "Refused: ") {
		t.Errorf("plan under block:\n%s", r.Stdout)
	}
	r = s.Reconciler("apply")
	if r.Code != 1 || !strings.Contains(r.Stderr, "migrate.on_rollback is block") || strings.Contains(r.Stdout, "~ switch") {
		t.Fatalf("apply under block: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if l := stack.Link(s.Root); l != v2Link {
		t.Errorf("the link moved to %s", l)
	}
	want("block", v2, true, "v2")

	t.Log("3. warn: back to v1 anyway; the column stays, v1 serves beside it")
	desired("v1", "warn")
	r = s.MustApply()
	if !strings.Contains(r.Stdout, "! schema ahead: shop.0002_update is applied; release ") || strings.Contains(r.Stdout, "+ migrate") {
		t.Errorf("apply under warn:\n%s", r.Stdout)
	}
	want("warn", v2, true, "v1")

	t.Log("4. forward to v2 after warn: every migration is applied, none runs")
	before := s.Migrations()
	desired("v2", "warn")
	s.MustApply()
	if n := s.Migrations(); n != before {
		t.Errorf("a migration ran going forward after warn (%d, was %d)", n, before)
	}
	want("forward after warn", v2, true, "v2")

	t.Log("5. reverse: v2's code unapplies 0002 before the switch; the column goes")
	desired("v1", "reverse")
	r = s.MustApply()
	if !strings.Contains(r.Stdout, "- reverse shop to 0001_initial with the code of release "+strings.TrimPrefix(v2Link, "releases/")) {
		t.Errorf("apply under reverse:\n%s", r.Stdout)
	}
	want("reverse", v1, false, "v1")

	t.Log("6. forward to v2 after reverse: its migrate runs again, nothing is built")
	desired("v2", "reverse")
	r = s.MustApply()
	if !strings.Contains(r.Stdout, "+ migrate migrate again") || strings.Contains(r.Stdout, "+ build") || strings.Contains(r.Stdout, "+ export") {
		t.Errorf("forward after reverse:\n%s", r.Stdout)
	}
	if l := stack.Link(s.Root); l != v2Link {
		t.Errorf("forward after reverse linked %s, want %s (the release on disk)", l, v2Link)
	}
	want("forward after reverse", v2, true, "v2")
}
