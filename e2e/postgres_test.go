//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/e2e/stack"
)

// The article's own stack: gunicorn and a Celery worker under supervisord,
// nginx in front, PostgreSQL (a cluster of the test's own) and redis as
// Celery's broker, configured from examples/django-celery. The project is
// e2e/testdata/orders; its releases:
//
//	v1  the model Order (migration shop.0001_initial)
//	v2  a nullable column note (shop.0002_order_note)
//	v3  on v2: shop.0003_order_priority adds a column, then its RunSQL fails
//
// The cases share one stack, the way a host lives through them, because
// starting PostgreSQL, redis and the Python programs is most of the time
// the suite takes: each case first deploys the release it starts from
// (nothing to do when the case before left the host there), so each runs
// alone too.
//
//	go test -tags e2e -run TestPostgresStack ./e2e/
func TestPostgresStack(t *testing.T) {
	s := stack.NewCelery(t, stack.Options{Dir: t.TempDir(), ModRoot: "..", Bin: bin})
	s.Release("v2", "v2")
	s.Release("v3", "bad")
	for _, c := range []struct {
		name string
		run  func(*testing.T, *stack.CeleryStack)
	}{
		{"worker restart", testWorkerRestart},
		{"failing migration", testFailingMigration},
		{"rollback policies", testRollbackPolicies},
	} {
		parent := t
		t.Run(c.name, func(t *testing.T) {
			// The stack reports to the case that runs now: a Fatalf must
			// come from the case's own goroutine.
			s.Use(t)
			defer s.Use(parent)
			c.run(t, s)
		})
	}
}

// deploy applies tag (migrate: more keys of the migrate block) and fails
// the test unless it exits 0.
func deploy(s *stack.CeleryStack, tag, migrate string) stack.Result {
	s.T.Helper()
	s.Desired(tag, migrate)
	return s.MustApply()
}

var (
	migrationsV1 = []string{"shop.0001_initial"}
	migrationsV2 = []string{"shop.0001_initial", "shop.0002_order_note"}
	columnsV1    = []string{"id", "number"}
	columnsV2    = []string{"id", "number", "note"}
)

// testWorkerRestart deploys v2 while the v1 worker runs a task and
// another waits in the queue: the worker is restarted gracefully (its
// supervisor action; a new pid), the running task ends in the old worker,
// the queued one runs in the new one, and a task run afterwards answers the
// new commit.
func testWorkerRestart(t *testing.T, s *stack.CeleryStack) {
	v1, v2 := s.Commit("v1"), s.Commit("v2")

	t.Log("1. v1: both programs start, a task answers v1's commit")
	deploy(s, "v1", "")
	s.WantPage("orders v1: 0 orders")
	if r := s.WaitTask(s.StartTask("")); r.State != "SUCCESS" || r.Result.Commit != v1 {
		t.Fatalf("task on v1: %+v; want SUCCESS from %s", r, v1)
	}
	pid1 := s.WorkerPID()
	if !regexp.MustCompile(`^[0-9]+$`).MatchString(pid1) {
		t.Fatalf("worker pid: %q", pid1)
	}

	t.Log("2. a task holds the v1 worker, another waits in redis; deploy v2")
	gate := filepath.Join(s.Dir, "gate")
	// A failure below must not leave the task, and so the apply and
	// supervisord's stop, waiting for the gate.
	defer os.WriteFile(gate, nil, 0o644)
	running := s.StartTask(gate)
	s.WaitLong("the held task to start", func() bool { _, err := os.Stat(gate + ".started"); return err == nil })
	queued := s.StartTask("")
	s.Desired("v2", "")
	done := make(chan stack.Result, 1)
	go func() { done <- s.Reconciler("apply") }()
	// supervisord sent TERM and waits: the worker's warm shutdown lets the
	// running task finish. Only then is the task let go. No deadline of
	// our own: the apply builds, migrates and preflights v2 first, as long
	// as that takes, and it ends (its steps have timeouts) if it never
	// gets here.
	for s.ProgramState(stack.Worker) != "STOPPING" {
		select {
		case r := <-done:
			t.Fatalf("apply returned while the task was held: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.Code != 0 {
		t.Fatalf("apply v2: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if !strings.Contains(r.Stdout, "ok service restart worker") || !strings.Contains(r.Stdout, "passed worker runs from releases/") {
		t.Errorf("apply did not restart the worker into the new release:\n%s", r.Stdout)
	}

	t.Log("3. no task lost: the held one ended in v1's worker, the queued one ran in v2's")
	if got := s.WaitTask(running); got.State != "SUCCESS" || got.Result.Commit != v1 {
		t.Errorf("the task running across the deploy: %+v; want SUCCESS from %s", got, v1)
	}
	if got := s.WaitTask(queued); got.State != "SUCCESS" || got.Result.Commit != v2 {
		t.Errorf("the task queued across the deploy: %+v; want SUCCESS from %s", got, v2)
	}
	if !strings.Contains(s.WorkerLog(), "Warm shutdown") {
		t.Errorf("the worker log shows no warm shutdown:\n%s", s.WorkerLog())
	}

	t.Log("4. a new worker process runs v2: a task run now answers v2's commit")
	if pid2 := s.WorkerPID(); pid2 == pid1 || !regexp.MustCompile(`^[0-9]+$`).MatchString(pid2) {
		t.Errorf("worker pid %q after the deploy, %q before", pid2, pid1)
	}
	if got := s.WaitTask(s.StartTask("")); got.State != "SUCCESS" || got.Result.Commit != v2 {
		t.Errorf("task on v2: %+v; want SUCCESS from %s", got, v2)
	}
	s.WantPage("orders v2: 0 orders")
}

// testFailingMigration applies v3, whose migration adds a column
// and then fails: PostgreSQL's transactional DDL takes the column back,
// and the host stays on v2 (link, page, history).
func testFailingMigration(t *testing.T, s *stack.CeleryStack) {
	deploy(s, "v2", "")
	s.PG.Query("DELETE FROM shop_order")
	s.PG.Query("INSERT INTO shop_order (number, note) VALUES ('A-1', 'kept')")
	s.WantPage("orders v2: 1 orders")
	link := stack.Link(s.Root)
	if got := s.PG.Columns("shop_order"); !slices.Equal(got, columnsV2) {
		t.Fatalf("columns on v2: %v; want %v", got, columnsV2)
	}

	s.Desired("v3", "")
	r := s.Reconciler("apply")
	if r.Code != 1 || !strings.Contains(r.Stderr, "migrate migrate: exited with status 1") ||
		!strings.Contains(r.Stdout, `column "no_such_column" does not exist`) || strings.Contains(r.Stdout, "\n~ switch") {
		t.Fatalf("apply v3: exit %d; want 1, the migration's error, no switch\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}

	t.Log("the schema is as it was: no priority column, 0003 not recorded, the row kept")
	if got := s.PG.Columns("shop_order"); !slices.Equal(got, columnsV2) {
		t.Errorf("columns after the failed migration: %v; want %v (transactional DDL)", got, columnsV2)
	}
	if got := s.PG.Migrations("shop"); !slices.Equal(got, migrationsV2) {
		t.Errorf("django_migrations after the failed migration: %v; want %v", got, migrationsV2)
	}
	if got := s.PG.Query("SELECT number || ' ' || note FROM shop_order"); !slices.Equal(got, []string{"A-1 kept"}) {
		t.Errorf("rows: %v", got)
	}

	t.Log("the host is on v2: link, page, status, history")
	if l := stack.Link(s.Root); l != link {
		t.Errorf("the link moved from %s to %s", link, l)
	}
	s.WantPage("orders v2: 1 orders")
	if st := s.Reconciler("status"); !strings.Contains(st.Stdout, "failed at migrate") || !strings.Contains(st.Stdout, "last apply: failed") {
		t.Errorf("status does not show the failed migration:\n%s", st.Stdout)
	}
	var migrateFailed, applyFailed bool
	for _, rec := range s.History() {
		if rec.Step == "migrate migrate" && rec.Result != "ok" && strings.HasSuffix(rec.Release, s.Commit("v3")[:8]) {
			migrateFailed = true
		}
		if rec.Kind == "apply" && rec.Result == "failed" {
			applyFailed = true
		}
	}
	if !migrateFailed || !applyFailed {
		t.Errorf("history: migrate of v3 failed %v, apply failed %v; want both\n%+v", migrateFailed, applyFailed, s.History())
	}
}

// rollback applies tag with migrate.on_rollback: policy and returns what
// apply did and the rows of django_migrations for shop afterwards.
func rollback(s *stack.CeleryStack, tag, policy string) (stack.Result, []string) {
	s.T.Helper()
	s.Desired(tag, policy)
	r := s.Reconciler("apply")
	return r, s.PG.Migrations("shop")
}

// testRollbackPolicies rolls v2 back to v1 on PostgreSQL under each
// policy of migrate.on_rollback, in turn on one host (each case starts
// where the one before left it; block comes last, so that whatever its
// refusal records cannot stand in the way of the others), and checks
// django_migrations and the schema after each. Adding a case is a line:
// rollback() does the apply and reads django_migrations.
func testRollbackPolicies(t *testing.T, s *stack.CeleryStack) {
	deploy(s, "v2", "warn")
	s.PG.Query("DELETE FROM shop_order")

	for _, c := range []struct {
		name, tag, policy string
		code              int
		out               []string // in stdout or stderr
		page              string
		migrations        []string
		columns           []string
		migrate           string // "again": a migrate step runs; "none": none runs; "": not checked
	}{
		{name: "warn switches and leaves 0002 applied", tag: "v1", policy: "warn",
			out: []string{"schema ahead", "shop.0002_order_note"}, page: "orders v1: 0 orders", migrations: migrationsV2, columns: columnsV2},
		{name: "forward after warn: everything applied, no migration", tag: "v2", policy: "warn",
			page: "orders v2: 0 orders", migrations: migrationsV2, columns: columnsV2, migrate: "none"},
		{name: "reverse unapplies 0002 with v2's code, then switches", tag: "v1", policy: "reverse",
			out: []string{"shop.0002_order_note"}, page: "orders v1: 0 orders", migrations: migrationsV1, columns: columnsV1},
		{name: "forward after reverse migrates again", tag: "v2", policy: "reverse",
			page: "orders v2: 0 orders", migrations: migrationsV2, columns: columnsV2, migrate: "again"},
		{name: "block refuses, the host stays on v2", tag: "v1", policy: "block", code: 1,
			out: []string{"schema ahead", "shop.0002_order_note"}, page: "orders v2: 0 orders", migrations: migrationsV2, columns: columnsV2},
	} {
		t.Log(c.name)
		r, rows := rollback(s, c.tag, c.policy)
		out := r.Stdout + r.Stderr
		if r.Code != c.code {
			t.Fatalf("%s: exit %d; want %d\n%s", c.name, r.Code, c.code, out)
		}
		for _, want := range c.out {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output lacks %q:\n%s", c.name, want, out)
			}
		}
		if ran := strings.Contains(r.Stdout, "\n+ migrate migrate"); c.migrate != "" && ran != (c.migrate == "again") {
			t.Errorf("%s: the migrate step ran: %v; want %s\n%s", c.name, ran, c.migrate, r.Stdout)
		}
		s.WantPage(c.page)
		if !slices.Equal(rows, c.migrations) {
			t.Errorf("%s: django_migrations %v; want %v", c.name, rows, c.migrations)
		}
		if got := s.PG.Columns("shop_order"); !slices.Equal(got, c.columns) {
			t.Errorf("%s: columns %v; want %v", c.name, got, c.columns)
		}
	}
}
