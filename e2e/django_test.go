//go:build e2e

// Package e2e proves the reconciler on a real stack: a Django project
// served by gunicorn under its own supervisord, behind its own nginx, all
// on 127.0.0.1, configured from the files in examples/django. The stack
// itself is package e2e/stack, shared with `go run ./bench`.
//
//	go test -tags e2e ./e2e/
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/e2e/stack"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "reconciler-e2e-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "reconciler")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/reconciler").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newStack starts the stack with the repository's v1, v2 (a new migration,
// / says v2) and v3 (on v2, /health answers 500).
func newStack(t *testing.T) *stack.Stack {
	s := stack.New(t, stack.Options{Dir: t.TempDir(), ModRoot: "..", Bin: bin})
	s.Upgrade("v2", "")
	s.Broken("v3", "v2")
	return s
}

func TestDjangoStack(t *testing.T) {
	s := newStack(t)

	t.Log("1. v1: nginx serves v1 and its static file")
	s.Desired("v1", stack.Web, "reload")
	if r := s.Reconciler("plan", "--detailed-exitcode"); r.Code != 2 {
		t.Fatalf("plan: %d\n%s", r.Code, r.Stdout)
	}
	// The program is stopped before the first deploy (autostart=false):
	// status says so, and the example's reload starts it.
	if st := s.Reconciler("status"); !strings.Contains(st.Stdout, "  web  not running (supervisor: STOPPED)\n") {
		t.Errorf("status before the first deploy:\n%s", st.Stdout)
	}
	s.MustApply()
	if st := s.Reconciler("status"); !regexp.MustCompile(`\n  web  pid [0-9]+, [0-9]+ processes, running from [0-9TZ]+-[0-9a-f]{8}\n`).MatchString(st.Stdout) {
		t.Errorf("status after the first deploy:\n%s", st.Stdout)
	}
	s.WantPage("broken_brackets v1: seeded by 0001")
	if code, body := s.Get("/static/shop/site.css"); code != 200 || !strings.Contains(body, "font-family") {
		t.Fatalf("static file: %d %q", code, body)
	}
	if r := s.Reconciler("apply"); r.Code != 0 || !strings.Contains(r.Stdout, "No changes.") {
		t.Fatalf("converged apply: %d\n%s", r.Code, r.Stdout)
	}

	t.Log("2. v2: the migration runs once, nginx serves v2")
	s.Desired("v2", stack.Web, "reload")
	s.MustApply()
	s.WantPage("broken_brackets v2: updated by 0002")
	if n := s.Migrations(); n != 2 {
		t.Errorf("%d migrations ran for two releases", n)
	}
	s.MustApply()
	if n := s.Migrations(); n != 2 {
		t.Errorf("a converged apply ran a migration (%d)", n)
	}

	t.Log("3. commit back to v1: no build step, nginx serves v1")
	s.Desired("v1", stack.Web, "reload")
	r := s.MustApply()
	if strings.Contains(r.Stdout, "\n+ build") || strings.Contains(r.Stdout, "\n+ migrate") || strings.Contains(r.Stdout, "fetch") {
		t.Errorf("rollback ran a build step:\n%s", r.Stdout)
	}
	s.WantPage("broken_brackets v1: updated by 0002")
	v1 := stack.Link(s.Root)

	t.Log("4. v3: /health answers 500, the preflight refuses it, the link never moves, v3 is not retried")
	s.Desired("v3", stack.Web, "reload")
	r = s.Reconciler("apply")
	if r.Code != 1 || !strings.Contains(r.Stderr, "preflight") || !strings.Contains(r.Stderr, "status 500") || strings.Contains(r.Stdout, "\n~ switch") {
		t.Fatalf("apply v3: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if l := stack.Link(s.Root); l != v1 {
		t.Errorf("the link moved to %s", l)
	}
	s.WantPage("broken_brackets v1: updated by 0002")
	if n := s.ResponsesFrom("v3"); n != 0 {
		t.Errorf("nginx logged %d responses from v3", n)
	}
	st := s.Reconciler("status")
	if !strings.Contains(st.Stdout, "failed at preflight") || !strings.Contains(st.Stdout, "last apply: failed") {
		t.Errorf("status does not show the failure:\n%s", st.Stdout)
	}
	r = s.Reconciler("apply")
	if r.Code != 1 || !strings.Contains(r.Stdout, "Blocked: release") || strings.Contains(r.Stdout, "\n~ switch") {
		t.Errorf("second apply of v3: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}

	t.Log("5. v3 without the preflight: linked, /health answers 500, the link returns")
	s.WriteDesired(s.WithoutPreflight(s.Render("v3", stack.Web, "reload")))
	r = s.Reconciler("apply", "--retry")
	if r.Code != 1 || !strings.Contains(r.Stdout, "~ switch") || !strings.Contains(r.Stderr, "failed after the switch: health check") ||
		!strings.Contains(r.Stderr, "status 500") || !strings.Contains(r.Stderr, "which serves") {
		t.Fatalf("apply --retry of v3 without preflight: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if l := stack.Link(s.Root); l != v1 {
		t.Errorf("the link is at %s after the revert", l)
	}
	s.WantPage("broken_brackets v1: updated by 0002")
	st = s.Reconciler("status")
	if !strings.Contains(st.Stdout, "failed at health") {
		t.Errorf("status does not show the failure:\n%s", st.Stdout)
	}

	t.Log("6. gunicorn without --chdir, reloaded with HUP, is caught serving the old release")
	// Started by hand from the link, as it would have been before the
	// reconciler managed this host: it runs from the v1 release.
	if out, err := exec.Command("supervisorctl", "-c", s.SupConf, "start", stack.Plain).CombinedOutput(); err != nil {
		t.Fatalf("supervisorctl start: %v\n%s", err, out)
	}
	// Up, its HUP handler installed: a HUP before it would end it, and
	// supervisord would start it again from the new link.
	s.WaitUp(s.Plain)
	s.Desired("v2", stack.Plain, "reload")
	r = s.Reconciler("apply")
	if r.Code != 1 || !strings.Contains(r.Stderr, "service web still runs from the old release after reload") ||
		!strings.Contains(r.Stderr, "--chdir") {
		t.Fatalf("plain HUP: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	exec.Command("supervisorctl", "-c", s.SupConf, "stop", stack.Plain).Run()
}

// TestZeroDowntime switches v1 and v2 ten times under load through nginx,
// once with the graceful configuration of examples/ (HUP to gunicorn
// started with --chdir) and once with supervisorctl restart, and counts
// failed requests and responses from the wrong version after a switch.
func TestZeroDowntime(t *testing.T) {
	s := newStack(t)
	s.Desired("v1", stack.Web, "reload") // the first reload starts the program
	s.MustApply()
	s.Desired("v2", stack.Web, "restart")
	s.MustApply()

	type mode struct{ name, action string }
	figures := map[string]stack.LoadResult{}
	for _, m := range []mode{{"graceful (HUP, --chdir)", "reload"}, {"restart", "restart"}} {
		res := s.SwitchUnderLoad(s.Web, []string{"v1", "v2"}, 10, 8, func(tag string) error {
			s.Desired(tag, stack.Web, m.action)
			if r := s.Reconciler("apply"); r.Code != 0 {
				return fmt.Errorf("exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
			}
			return nil
		})
		figures[m.name] = res
		t.Logf("%-24s 10 switches, 8 connections: %d requests, %d failed, %d stale after a switch", m.name, res.Total, res.Failed, res.Stale)
		if res.FirstFailure != "" {
			t.Logf("%s: first failure: %s", m.action, res.FirstFailure)
		}
	}
	if f := figures["graceful (HUP, --chdir)"]; f.Failed != 0 || f.Stale != 0 {
		t.Errorf("graceful switches lost %d requests and served %d stale responses; want 0 and 0", f.Failed, f.Stale)
	}
}
