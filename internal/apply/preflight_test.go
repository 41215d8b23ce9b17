package apply

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// preflightApp is the app a preflight starts: it serves /health from
// the release, answers 500 when the release holds BROKEN, or holds
// NEEDS_SCHEMA and shared/db did not say "migrated" when it started,
// ignores SIGTERM when it holds IGNORE_TERM, and writes its pid and its
// child's pid (a worker it forked) to shared/ once it read the schema.
const preflightApp = `import http.server, os, signal, subprocess, sys
if os.path.exists("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
shared = os.environ["RECONCILER_SHARED"]
def migrated():
    try:
        return "migrated" in open(os.path.join(shared, "db")).read()
    except OSError:
        return False
schema_at_start = migrated()
child = subprocess.Popen(["sleep", "300"])
open(os.path.join(shared, "preflight.pids"), "w").write("%d %d\n" % (os.getpid(), child.pid))
version = open("VERSION").read().strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if os.path.exists("BROKEN"):
            print("Traceback (most recent call last):\nImportError: boom in " + version, file=sys.stderr, flush=True)
            self.send_response(500); self.end_headers(); self.wfile.write(b"Server Error (500)")
            return
        if os.path.exists("NEEDS_SCHEMA") and not schema_at_start:
            print("django.db.utils.OperationalError: no such column: shop_item.note", file=sys.stderr, flush=True)
            self.send_response(500); self.end_headers(); self.wfile.write(b"Server Error (500)")
            return
        self.send_response(200); self.end_headers(); self.wfile.write(("ok " + version).encode())
print("listening on", os.environ["RECONCILER_PREFLIGHT_PORT"], flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["RECONCILER_PREFLIGHT_PORT"])), H).serve_forever()
`

func (h *host) withPreflight(d *desired.State) *desired.State {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.root, "shared", "server.py"), []byte(preflightApp), 0o644); err != nil {
		h.t.Fatal(err)
	}
	d.Preflight = &desired.Preflight{Run: `exec /usr/bin/python3 -u "$RECONCILER_SHARED/server.py"`, Timeout: time.Minute,
		Health: []desired.Check{{Kind: desired.CheckHTTP, Target: "http://127.0.0.1:${RECONCILER_PREFLIGHT_PORT}/health", Body: "ok",
			Timeout: time.Minute, Interval: 100 * time.Millisecond, Failures: desired.DefaultCheckFailures}}}
	return d
}

// gone waits until every pid the preflight's server wrote is gone (or a
// zombie): nothing it started outlives the preflight.
func (h *host) serverGone() {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, "shared", "preflight.pids"))
	if err != nil {
		h.t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		// SIGKILL was sent before the apply returned; its delivery is the
		// kernel's business: wait for it, generously.
		for end := time.Now().Add(30 * time.Second); alive(pid); {
			if time.Now().After(end) {
				h.t.Fatalf("pid %d the preflight started is still running", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses; Z is a zombie.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}

func TestPreflightPasses(t *testing.T) {
	h := newHost(t)
	v := &events{}
	res, _ := h.mustApply(h.withPreflight(h.desired(h.commit("v1"))), func(o *Options) { o.View = v })
	// The server stops while the switch goes on; the apply waits for it
	// (serverGone below).
	if n := strings.Join(v.notes, "\n"); !strings.Contains(n, "passed http") || !strings.Contains(n, "the server stops after the health check") {
		t.Errorf("notes %q; want the check passed and the server stopped after the health check", n)
	}
	var actions []string
	for _, s := range res.Plan.Steps {
		actions = append(actions, string(s.Action))
	}
	if got := strings.Join(actions, " "); !strings.Contains(got, "migrate preflight switch") {
		t.Errorf("steps %s; want the preflight between the migration and the switch", got)
	}
	rec := h.record(h.linked())
	if rec.State != record.Complete || !rec.Done(plan.StepPreflight, h.withPreflight(h.desired(h.commit("v1"))).Preflight.Fingerprint()) {
		t.Errorf("record: %+v; want complete with the preflight recorded", rec)
	}
	h.serverGone()
	// Converged: the preflight is not run again.
	res, _ = h.mustApply(h.withPreflight(h.desired(rec.Commit)))
	if res.Plan.Changes() {
		t.Errorf("a converged host plans %+v", res.Plan.Steps)
	}
}

// A release whose server answers 500 fails at step preflight, before the
// link moves: the broken code never answers a user.
func TestPreflightRefusesBrokenRelease(t *testing.T) {
	h := newHost(t)
	h.mustApply(h.withPreflight(h.desired(h.commit("v1"))))
	good := h.linked()
	res, _, err := h.apply(context.Background(), h.withPreflight(h.desired(h.commit("v2", "BROKEN"))))
	if err == nil {
		t.Fatal("a release whose preflight answers 500 was applied")
	}
	if h.linked() != good {
		t.Fatalf("the link moved to %s", h.linked())
	}
	for _, s := range res.Steps {
		if s.Action == plan.Switch || s.Action == plan.Service {
			t.Errorf("%s ran after a failed preflight", s.Action)
		}
	}
	if n := len(h.lines("restarts")); n != 1 {
		t.Errorf("services restarted %d times; want once, for v1", n)
	}
	rec := h.record(res.Release)
	if rec.State != record.Failed || rec.Failure == nil || rec.Failure.Step != "preflight" {
		t.Fatalf("record: %+v; want failed at step preflight", rec)
	}
	if !strings.Contains(rec.Failure.Error, "status 500: Server Error (500)") || !strings.Contains(rec.Failure.Output, "ImportError: boom in v2") {
		t.Errorf("failure: %q\noutput: %q; want the 500 and the server's output", rec.Failure.Error, rec.Failure.Output)
	}
	h.serverGone()
	// Not retried in a loop: the next apply is blocked.
	_, _, err = h.apply(context.Background(), h.withPreflight(h.desired(rec.Commit)))
	if !errors.As(err, new(*BlockedError)) {
		t.Errorf("second apply: %v; want blocked", err)
	}
}

// A port taken between the pick and the server's bind fails the
// preflight with a message that says so.
func TestPreflightPortInUse(t *testing.T) {
	h := newHost(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // never accepts: a check against it would hang
	port := ln.Addr().(*net.TCPAddr).Port
	old := preflightPort
	preflightPort = func() (int, error) { return port, nil }
	t.Cleanup(func() { preflightPort = old })
	res, _, err := h.apply(context.Background(), h.withPreflight(h.desired(h.commit("v1"))))
	want := "port " + strconv.Itoa(port) + " on 127.0.0.1 is in use by another process"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v; want %q", err, want)
	}
	rec := h.record(res.Release)
	if rec.Failure == nil || rec.Failure.Step != "preflight" || !strings.Contains(rec.Failure.Output, "Address already in use") {
		t.Errorf("failure %+v; want the server's bind error in the record", rec.Failure)
	}
	if _, err := os.Lstat(h.l.LinkPath()); err == nil {
		t.Error("the link was made for a release that failed its preflight")
	}
}

// A server that ignores SIGTERM is killed after the grace, with what it
// started: nothing is left running.
func TestPreflightKillsServerIgnoringTerm(t *testing.T) {
	h := newHost(t)
	h.mustApply(h.withPreflight(h.desired(h.commit("v1", "IGNORE_TERM"))), func(o *Options) { o.Runner.KillGrace = 100 * time.Millisecond })
	h.serverGone()
}

// With migrations tracked and preflight.start: after_migrate, the
// preflight's server starts as soon as the migration ran, while the
// migrations are recorded (two starts of the app at once, not one after
// the other): here the listing of the applied migrations returns only once
// the server wrote its pids, which it never would if the server started
// after it. (With the default, with_migrate, it started earlier still.)
// The checks still pass in the preflight step, and the server is gone when
// the apply returns.
func TestPreflightStartsWhileMigrationsAreRecorded(t *testing.T) {
	h := newHost(t)
	h.repo.Write("MIGRATIONS", "shop.0001_initial\n")
	d := h.withPreflight(h.tracked(h.commit("v1"), desired.OnRollbackWarn))
	d.Preflight.Start = desired.PreflightAfterMigrate
	d.Migrate.Timeout = 30 * time.Second // the old order fails here, after this
	d.Migrate.Migrations.Applied = `while [ ! -s "$RECONCILER_SHARED/preflight.pids" ]; do sleep 0.01; done; cat "$RECONCILER_SHARED/db"`
	v := &events{}
	res, _ := h.mustApply(d, func(o *Options) { o.View = v })
	if n := strings.Join(v.notes, "\n"); !strings.Contains(n, "passed http") {
		t.Errorf("notes %q; want the preflight's check passed", n)
	}
	if m := h.migrationsRecord(); len(m.Applied) != 1 || m.Applied[0] != "shop.0001_initial" {
		t.Errorf("migrations record %+v; want shop.0001_initial applied", m)
	}
	if rec := h.record(res.Release); rec.State != record.Complete {
		t.Errorf("record %+v; want complete", rec)
	}
	h.serverGone()
}

// The migrations are recorded while the apply goes on to the switch and
// the service: here the listing returns only once the service restarted
// in the new release, which it never would if the migrate step waited for
// it. The record is written before the apply returns.
func TestMigrationsRecordedWhileTheReleaseIsSwitched(t *testing.T) {
	h := newHost(t)
	h.repo.Write("MIGRATIONS", "shop.0001_initial\n")
	d := h.withPreflight(h.tracked(h.commit("v1"), desired.OnRollbackWarn))
	d.Migrate.Timeout = 30 * time.Second // the old order fails here, after this
	d.Migrate.Migrations.Applied = `while ! grep -qx "$RECONCILER_RELEASE" "$RECONCILER_SHARED/restarts" 2>/dev/null; do sleep 0.01; done; cat "$RECONCILER_SHARED/db"`
	res, _ := h.mustApply(d)
	if m := h.migrationsRecord(); len(m.Applied) != 1 || m.Applied[0] != "shop.0001_initial" || len(m.Releases[res.Release]) != 1 {
		t.Errorf("migrations record %+v; want shop.0001_initial applied and known to %s", m, res.Release)
	}
	h.serverGone()
}

// A listing that fails after the migration succeeded does not fail the
// release, whose code and schema are in place: it is linked, and the
// history and the log say its migrations are not recorded.
func TestMigrationListingFailureIsRecordedNotFatal(t *testing.T) {
	h := newHost(t)
	h.repo.Write("MIGRATIONS", "shop.0001_initial\n")
	d := h.withPreflight(h.tracked(h.commit("v1"), desired.OnRollbackWarn))
	d.Migrate.Migrations.Applied = `echo "database unreachable" >&2; exit 3`
	res, _ := h.mustApply(d)
	if h.linked() != res.Release {
		t.Errorf("linked %s; want %s", h.linked(), res.Release)
	}
	recs, _, err := history.Read(h.l.HistoryFile())
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range recs {
		if strings.Contains(r.Step, "(record the migrations)") && r.Result == StepFailed &&
			strings.Contains(r.Error, "are not recorded") && strings.Contains(r.Error, "database unreachable") {
			found = true
		}
	}
	if !found {
		t.Errorf("history %+v; want the failed recording of the migrations", recs)
	}
	h.serverGone()
}

// The preflight's server starts with the migration (preflight.start:
// with_migrate, the default): here the migration finishes only once the
// server wrote its pids, which it never would if the server started after
// it. This app reads the schema as it starts and needs the migrated one,
// so the server started beside the migration fails its check; it is
// started again on the migrated schema, and that one decides.
func TestPreflightStartsWithTheMigrationAndAgainAfterIt(t *testing.T) {
	h := newHost(t)
	d := h.withPreflight(h.desired(h.commit("v1", "NEEDS_SCHEMA")))
	d.Migrate.Timeout = 30 * time.Second // the order "server after the migration" fails here, after this
	d.Migrate.Run = `while [ ! -s "$RECONCILER_SHARED/preflight.pids" ]; do sleep 0.01; done; echo migrated > "$RECONCILER_SHARED/db"`
	v := &events{}
	res, _ := h.mustApply(d, func(o *Options) { o.View = v })
	n := strings.Join(v.notes, "\n")
	if !strings.Contains(n, "the server started with the migration failed") || !strings.Contains(n, "status 500") ||
		!strings.Contains(n, "starting it again on the migrated schema") || !strings.Contains(n, "passed http") {
		t.Errorf("notes %q; want the first server's failure, a second start, its check passed", n)
	}
	if rec := h.record(res.Release); rec.State != record.Complete || h.linked() != res.Release {
		t.Errorf("record %+v, linked %s; want %s complete and linked", rec, h.linked(), res.Release)
	}
	h.serverGone()
}

// A broken release is refused by the second server too: the release fails
// at step preflight, its record has the second server's output.
func TestPreflightStartedWithTheMigrationRefusesBrokenRelease(t *testing.T) {
	h := newHost(t)
	d := h.withPreflight(h.desired(h.commit("v1", "BROKEN")))
	d.Migrate.Timeout = 30 * time.Second
	d.Migrate.Run = `while [ ! -s "$RECONCILER_SHARED/preflight.pids" ]; do sleep 0.01; done; rm "$RECONCILER_SHARED/preflight.pids"`
	res, _, err := h.apply(context.Background(), d)
	if err == nil {
		t.Fatal("a broken release was applied")
	}
	rec := h.record(res.Release)
	if rec.Failure == nil || rec.Failure.Step != "preflight" || !strings.Contains(rec.Failure.Output, "ImportError: boom in v1") {
		t.Fatalf("record %+v; want failed at preflight with the server's output", rec)
	}
	// The second server wrote its pids again after the migration removed the first's.
	h.serverGone()
	if _, err := os.Lstat(h.l.LinkPath()); err == nil {
		t.Error("the link was made")
	}
}

// preflight.start: after_migrate: no server runs during the migration.
func TestPreflightAfterMigrateStartsAfterIt(t *testing.T) {
	h := newHost(t)
	d := h.withPreflight(h.desired(h.commit("v1", "NEEDS_SCHEMA")))
	d.Preflight.Start = desired.PreflightAfterMigrate
	// No event marks "a server did not start": the migration gives one
	// the time to, and fails if it did.
	d.Migrate.Run = `sleep 0.3; if [ -e "$RECONCILER_SHARED/preflight.pids" ]; then echo "a preflight server runs during the migration" >&2; exit 1; fi; echo migrated > "$RECONCILER_SHARED/db"`
	v := &events{}
	h.mustApply(d, func(o *Options) { o.View = v })
	if n := strings.Join(v.notes, "\n"); strings.Contains(n, "starting it again") || !strings.Contains(n, "passed http") {
		t.Errorf("notes %q; want one server, after the migration, passing", n)
	}
	h.serverGone()
}

// With the migrations tracked, a server started with a migration that
// applied nothing saw the schema its checks ran on: its failure decides,
// and the broken release is refused without a second start. One that
// applied a migration is started again.
func TestPreflightStartedAgainOnlyWhenTheMigrationChangedTheSchema(t *testing.T) {
	for _, tt := range []struct {
		name       string
		migrations string // v2's
		again      bool
	}{
		{"no migration applied", "shop.0001_initial\n", false},
		{"a migration applied", "shop.0001_initial\nshop.0002_note\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			h.repo.Write("MIGRATIONS", "shop.0001_initial\n")
			h.mustApply(h.withPreflight(h.tracked(h.commit("v1"), desired.OnRollbackWarn)))
			h.repo.Write("MIGRATIONS", tt.migrations)
			v := &events{}
			res, _, err := h.apply(context.Background(), h.withPreflight(h.tracked(h.commit("v2", "BROKEN"), desired.OnRollbackWarn)), func(o *Options) { o.View = v })
			if err == nil {
				t.Fatal("a broken release was applied")
			}
			if rec := h.record(res.Release); rec.Failure == nil || rec.Failure.Step != "preflight" {
				t.Fatalf("record %+v; want failed at preflight", rec)
			}
			if again := strings.Contains(strings.Join(v.notes, "\n"), "starting it again"); again != tt.again {
				t.Errorf("started again: %v, want %v; notes %q", again, tt.again, v.notes)
			}
			h.serverGone()
		})
	}
}
