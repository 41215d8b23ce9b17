package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/services/supervisortest"
)

// withHealth adds a global command check that passes only for commits
// without a BROKEN file, like a /health that answers 500 in a bad release.
// Its non-zero exit is a wrong answer: the check fails after three, long
// before its timeout, which is generous so a busy machine passes a good
// release.
func withHealth(d *desired.State) *desired.State {
	d.Health = []desired.Check{{Kind: desired.CheckCommand, Target: "test ! -f BROKEN || { echo 'health: 500' >&2; exit 1; }",
		Timeout: time.Minute, Interval: 50 * time.Millisecond}}
	return d
}

func TestHealthFailureRevertsAndIsNotRetried(t *testing.T) {
	h := newHost(t)
	h.mustApply(withHealth(h.desired(h.commit("v1"))))
	good := h.linked()
	restarts := len(h.lines("restarts"))

	d := withHealth(h.desired(h.commit("v2", "BROKEN")))
	res, _, err := h.apply(context.Background(), d)
	var he *HealthError
	if !errors.As(err, &he) || he.RevertedTo != good || he.PreviousErr != nil {
		t.Fatalf("apply of a broken release: %v", err)
	}
	if !strings.Contains(err.Error(), "health check command test ! -f BROKEN") || !strings.Contains(err.Error(), "health: 500") {
		t.Errorf("the message does not name the check and its output: %v", err)
	}
	if h.linked() != good {
		t.Fatalf("linked %s after a failed health check; want %s", h.linked(), good)
	}
	bad := res.Release
	if r := h.record(bad); r.State != record.Failed || r.Failure.Step != "health" {
		t.Errorf("the broken release is recorded %s (%+v)", r.State, r.Failure)
	}
	// The services acted for the switch and again for the return.
	r := h.lines("restarts")
	if len(r) != restarts+2 || r[len(r)-1] != h.l.ReleaseDir(good) {
		t.Errorf("restarts: %v", r[restarts:])
	}
	host, _ := record.ReadHost(h.l.HostFile())
	if host.Linked != good || !host.ServicesDone || !host.Verified {
		t.Errorf("host record after revert: %+v", host)
	}

	// Invariant 10: the same target is not tried again...
	_, _, err = h.apply(context.Background(), d)
	var be *BlockedError
	if !errors.As(err, &be) || be.Release != bad || be.Step != "health" {
		t.Fatalf("second apply: %v", err)
	}
	if len(h.lines("restarts")) != restarts+2 {
		t.Error("a blocked apply restarted services")
	}
	// ...unless asked: --retry switches to it again and checks again,
	// without building it again.
	builds := len(h.lines("builds"))
	_, _, err = h.apply(context.Background(), d, func(o *Options) { o.Retry = true })
	if !errors.As(err, &he) || h.linked() != good {
		t.Fatalf("retry of a still broken release: %v (linked %s)", err, h.linked())
	}
	if len(h.lines("builds")) != builds {
		t.Error("retry rebuilt a release whose build had succeeded")
	}
	// Fixing the release is a new commit: a new target, deployed.
	h.repo.Git("rm", "-q", "BROKEN")
	h.mustApply(withHealth(h.desired(h.commit("v3"))))
	if r := h.record(h.linked()); r.State != record.Complete || h.linked() == good {
		t.Errorf("fixed release: linked %s, %s", h.linked(), r.State)
	}
}

// Invariant 10, drift while blocked: the host stays on the last good
// release. A link moved by hand to the failed release goes back, and a
// revert that died before its services acted is finished; the target is
// never switched to, and each apply still exits blocked.
func TestBlockedTargetHoldsLastGoodRelease(t *testing.T) {
	h := newHost(t)
	h.mustApply(withHealth(h.desired(h.commit("v1"))))
	good := h.linked()
	d := withHealth(h.desired(h.commit("v2", "BROKEN")))
	res, _, err := h.apply(context.Background(), d)
	if !errors.As(err, new(*HealthError)) || h.linked() != good {
		t.Fatalf("apply of a broken release: %v (linked %s)", err, h.linked())
	}
	bad := res.Release

	// Someone points the link at the failed release by hand.
	if err := os.Remove(h.l.LinkPath()); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/"+bad, h.l.LinkPath()); err != nil {
		t.Fatal(err)
	}
	restarts := len(h.lines("restarts"))
	builds := len(h.lines("builds"))
	res, _, err = h.apply(context.Background(), d)
	var be *BlockedError
	if !errors.As(err, &be) || be.Release != bad {
		t.Fatalf("apply while blocked: %v; want the blocked error", err)
	}
	if res.Plan.Holding != good || h.linked() != good {
		t.Fatalf("holding %q, linked %s; want both %s", res.Plan.Holding, h.linked(), good)
	}
	if r := h.lines("restarts"); len(r) != restarts+1 || r[len(r)-1] != h.l.ReleaseDir(good) {
		t.Errorf("services after the return: %v; want one restart in %s", r[restarts:], good)
	}
	if len(h.lines("builds")) != builds {
		t.Error("holding the last good release ran a build")
	}
	if host, _ := record.ReadHost(h.l.HostFile()); host.Linked != good || !host.ServicesDone || !host.Verified {
		t.Errorf("host record after holding: %+v", host)
	}

	// Converged while blocked: nothing acts.
	res, _, err = h.apply(context.Background(), d)
	if !errors.As(err, &be) || res.Plan.Changes() || len(h.lines("restarts")) != restarts+1 {
		t.Fatalf("second apply while blocked: %v, %d steps, %d restarts", err, len(res.Plan.Steps), len(h.lines("restarts"))-restarts)
	}

	// A revert that died after the switch back, before its services.
	host, _ := record.ReadHost(h.l.HostFile())
	host.ServicesDone, host.Verified = false, false
	record.WriteHost(h.l.HostFile(), host)
	res, _, err = h.apply(context.Background(), d)
	if !errors.As(err, &be) || h.linked() != good || len(h.lines("restarts")) != restarts+2 {
		t.Fatalf("finishing an interrupted revert: %v (linked %s, %d restarts)", err, h.linked(), len(h.lines("restarts"))-restarts)
	}
	if got := actions(res.Plan); got != "service health" {
		t.Errorf("plan finishing the revert: %s", got)
	}
}

func actions(p *plan.Plan) string {
	var s []string
	for _, st := range p.Steps {
		s = append(s, string(st.Action))
	}
	return strings.Join(s, " ")
}

func TestHealthCheckAfterInterruptedSwitchReverts(t *testing.T) {
	h := newHost(t)
	h.mustApply(withHealth(h.desired(h.commit("v1"))))
	good := h.linked()
	// An apply switched to a broken release and died before its check:
	// simulate by applying without health, then asking for it.
	d := h.desired(h.commit("v2", "BROKEN"))
	h.mustApply(d)
	host, _ := record.ReadHost(h.l.HostFile())
	host.Verified = false
	record.WriteHost(h.l.HostFile(), host)

	res, _, err := h.apply(context.Background(), withHealth(h.desired(d.Source.Commit)))
	if len(res.Plan.Steps) == 0 || res.Plan.Steps[0].Action != plan.Health {
		t.Fatalf("plan after an unverified switch: %+v", res.Plan.Steps)
	}
	var he *HealthError
	if !errors.As(err, &he) || h.linked() != good {
		t.Fatalf("want a return to %s, got %v (linked %s)", good, err, h.linked())
	}
}

// A service whose reload leaves its process in the old release is caught:
// the apply fails, names the stale process and returns to the old release.
func TestStaleProcessAfterReloadIsCaught(t *testing.T) {
	h := newHost(t)
	pidfile := filepath.Join(h.root, "shared", "app.pid")
	start := `pid=$(cat ` + pidfile + ` 2>/dev/null) && kill $pid 2>/dev/null; cd "$RECONCILER_ROOT/current" && (sleep 300 >/dev/null 2>&1 & echo $! > ` + pidfile + `)`
	svc := func(d *desired.State, action string) *desired.State {
		d.Services = []desired.Service{{Name: "app", Manager: "command", Action: action, Restart: start, Reload: "true",
			PIDFile: "shared/app.pid", Timeout: time.Minute}}
		return d
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidfile); err == nil {
			var pid int
			for _, c := range strings.TrimSpace(string(b)) {
				pid = pid*10 + int(c-'0')
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	old := cwdTimeout
	cwdTimeout = 500 * time.Millisecond
	t.Cleanup(func() { cwdTimeout = old })

	h.mustApply(svc(h.desired(h.commit("v1")), "restart"))
	first := h.linked()
	// A restart moves the process to the new release: passes.
	h.mustApply(svc(h.desired(h.commit("v2")), "restart"))
	second := h.linked()
	if second == first {
		t.Fatal("no upgrade")
	}
	// A reload that does not re-execute: the process stays in v2.
	_, _, err := h.apply(context.Background(), svc(h.desired(h.commit("v3")), "reload"))
	var he *HealthError
	if !errors.As(err, &he) {
		t.Fatalf("reload leaving the old process: %v", err)
	}
	for _, want := range []string{"service app still runs from the old release after reload", "in releases/" + second, "Use action: restart"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message lacks %q: %v", want, err)
		}
	}
	if h.linked() != second {
		t.Errorf("linked %s; want a return to %s", h.linked(), second)
	}
}

// A release a live process still runs from is not pruned, whatever keep
// says, and the plan says why.
func TestPruneSparesReleaseInUse(t *testing.T) {
	h := newHost(t)
	h.keep = 1
	h.mustApply(h.desired(h.commit("v1")))
	old := h.linked()
	proc := exec.Command("sleep", "300")
	proc.Dir = h.l.ReleaseDir(old)
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { proc.Process.Kill(); proc.Wait() }()
	h.mustApply(h.desired(h.commit("v2")))
	v := &events{}
	h.mustApply(h.desired(h.commit("v3")), func(o *Options) { o.View = v })
	if _, err := os.Stat(h.l.ReleaseDir(old)); err != nil {
		t.Fatal("a release a process runs from was pruned")
	}
	found := false
	for _, n := range v.notes {
		found = found || strings.Contains(n, "skipped: "+old+" in use by pid ")
	}
	if !found {
		t.Errorf("the prune does not say why it skipped: %v", v.notes)
	}
	proc.Process.Kill()
	proc.Wait()
	h.mustApply(h.desired(h.commit("v4")))
	if _, err := os.Stat(h.l.ReleaseDir(old)); err == nil {
		t.Error("once the process is gone, the release should be pruned")
	}
}

// The wait for a reloaded service's processes ends with the health step's
// budget (its longest check timeout), not after cwdTimeout: timeout bounds
// the whole step, whatever it waits on.
func TestCwdWaitEndsWithTheStepBudget(t *testing.T) {
	h := newHost(t)
	pidfile := filepath.Join(h.root, "shared", "app.pid")
	start := `pid=$(cat ` + pidfile + ` 2>/dev/null) && kill $pid 2>/dev/null; cd "$RECONCILER_ROOT/current" && (sleep 300 >/dev/null 2>&1 & echo $! > ` + pidfile + `)`
	// The first apply's check has a generous timeout: on a busy machine
	// even `true` may take 300 ms. The reload's never runs: the wait for
	// the stale process uses up its budget.
	svc := func(d *desired.State, action string) *desired.State {
		timeout := time.Minute
		if action == "reload" {
			timeout = 300 * time.Millisecond
		}
		d.Services = []desired.Service{{Name: "app", Manager: "command", Action: action, Restart: start, Reload: "true",
			PIDFile: "shared/app.pid", Timeout: time.Minute,
			Health: []desired.Check{{Kind: "command", Target: "true", Timeout: timeout, Interval: 10 * time.Millisecond, Failures: 1}}}}
		return d
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidfile); err == nil {
			var pid int
			for _, c := range strings.TrimSpace(string(b)) {
				pid = pid*10 + int(c-'0')
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	old := cwdTimeout
	cwdTimeout = time.Hour
	t.Cleanup(func() { cwdTimeout = old })
	h.mustApply(svc(h.desired(h.commit("v1")), "restart"))
	done := make(chan error, 1)
	go func() {
		_, _, err := h.apply(context.Background(), svc(h.desired(h.commit("v2")), "reload"))
		done <- err
	}()
	select {
	case err := <-done:
		if !strings.Contains(fmt.Sprint(err), "service app still runs from the old release after reload") {
			t.Fatalf("got %v; want the stale process named", err)
		}
	case <-time.After(time.Minute): // far beyond the 300ms budget on any machine
		t.Fatal("the wait for the service's processes outlived the step's budget by far")
	}
}

// outputs is a view that keeps what each step printed, by step name.
type outputs struct {
	events
	out map[string]*strings.Builder
}

func (v *outputs) Output(s plan.Step) io.Writer {
	if v.out[s.Name] == nil {
		v.out[s.Name] = &strings.Builder{}
	}
	return v.out[s.Name]
}

// A supervisor program whose supervisord the config names is acted on and
// asked for its pid over XML-RPC, not through supervisorctl (a Python
// start-up per call): the supervisorctl on the commands' PATH only
// records that it ran, and fails. A restart moves the program to the new
// release; a reload that does not re-execute leaves it in the old one, and
// the process check, with the pid from XML-RPC, catches that (the
// program ignores SIGHUP, as a server that handles it).
func TestSupervisorServiceOverXMLRPC(t *testing.T) {
	h := newHost(t)
	bin := t.TempDir()
	calls := filepath.Join(bin, "calls")
	if err := os.WriteFile(filepath.Join(bin, "supervisorctl"), []byte("#!/bin/sh\necho \"$@\" >> "+calls+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sup := supervisortest.Start(t, `[program:web]
command=/bin/sh -c 'trap "" HUP; cd `+h.root+`/current && exec sleep 300'
autostart=false
autorestart=false
startsecs=0
stopsignal=KILL
`)
	svc := func(d *desired.State, action string) *desired.State {
		d.Services = []desired.Service{{Name: "web", Manager: "supervisor", Program: "web", Action: action,
			Supervisor: desired.SupervisorConn{Config: sup.Config}, Timeout: time.Minute}}
		return d
	}
	old := cwdTimeout
	cwdTimeout = 500 * time.Millisecond
	t.Cleanup(func() { cwdTimeout = old })
	path := func(o *Options) { o.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"} }

	for i, action := range []string{"restart", "restart", "reload"} {
		v := &outputs{out: map[string]*strings.Builder{}}
		_, _, err := h.apply(context.Background(), svc(h.desired(h.commit(fmt.Sprintf("v%d", i+1))), action), path, func(o *Options) { o.View = v })
		switch action {
		case "restart":
			if err != nil {
				t.Fatalf("apply %d (%s): %v", i+1, action, err)
			}
			if got := v.out["web"].String(); !strings.HasSuffix(got, "web: started\n") {
				t.Errorf("apply %d: the service step printed %q; want supervisorctl's words", i+1, got)
			}
			found := false
			for _, n := range v.notes {
				found = found || strings.HasPrefix(n, "passed web runs from releases/"+h.linked())
			}
			if !found {
				t.Errorf("apply %d: the process check did not pass on the new release: %v", i+1, v.notes)
			}
		case "reload":
			if !strings.Contains(fmt.Sprint(err), "service web still runs from the old release after reload") {
				t.Errorf("a HUP the program does not re-execute on: %v; want the stale process named", err)
			}
		}
	}
	if b, err := os.ReadFile(calls); err == nil {
		t.Errorf("supervisorctl ran:\n%s", b)
	}
}

// miniGunicorn reloads as gunicorn does on HUP: it changes to the link
// again, forks a new worker there, and sends TERM to the old one, which
// stops accepting at once but exits only when shared/go-<its commit> exists
// (a worker finishing its last requests, or Python tearing down Django).
// Each worker answers with the REVISION of the release it runs from.
const miniGunicorn = `import os, signal, socket, sys, time
link, shared = sys.argv[1], sys.argv[2]
os.chdir(link)
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[3]))); ls.listen(64)
def worker():
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ls.settimeout(0.05)
    while not stop:
        try:
            c, _ = ls.accept()
        except (socket.timeout, InterruptedError):
            continue
        c.recv(65536)
        body = open("REVISION").read().strip().encode()
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)); c.close()
    while not os.path.exists(os.path.join(shared, "go-" + open("REVISION").read().strip())):
        time.sleep(0.01)
    os._exit(0)
def spawn():
    pid = os.fork()
    if pid == 0:
        worker()
    return pid
workers = [spawn()]
def hup(*a):
    os.chdir(link)
    old = workers[:]
    workers[:] = [spawn()]
    for w in old:
        os.kill(w, signal.SIGTERM)
signal.signal(signal.SIGHUP, hup)
signal.signal(signal.SIGCHLD, lambda *a: None)
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        time.sleep(0.05)
    except InterruptedError:
        pass
`

// After a graceful reload, gunicorn's old workers take their time to
// exit. When every check's body names the commit, an answer proves which
// code gave it: the health step passes as soon as the main process and a
// worker started since the reload run from the new release and the check
// answers, with the old worker still stopping. When a check proves
// nothing, the step waits for the old worker, as before.
func TestReloadDoesNotWaitForOldWorkersWhenTheCheckNamesTheCommit(t *testing.T) {
	h := newHost(t)
	port := freePortT(t)
	shared := filepath.Join(h.root, "shared")
	if err := os.WriteFile(filepath.Join(shared, "server.py"), []byte(miniGunicorn), 0o644); err != nil {
		t.Fatal(err)
	}
	sup := supervisortest.Start(t, fmt.Sprintf(`[program:web]
command=/usr/bin/python3 -u %s/server.py %s/current %s %d
autostart=false
autorestart=false
startsecs=0
stopasgroup=true
killasgroup=true
stopsignal=KILL
`, shared, h.root, shared, port))
	svc := func(d *desired.State, body string) *desired.State {
		d.Services = []desired.Service{{Name: "web", Manager: "supervisor", Program: "web", Action: "reload",
			Supervisor: desired.SupervisorConn{Config: sup.Config}, Timeout: time.Minute}}
		d.Health = []desired.Check{{Kind: desired.CheckHTTP, Target: fmt.Sprintf("http://127.0.0.1:%d/", port), Body: body,
			Timeout: time.Minute, Interval: 100 * time.Millisecond, Failures: desired.DefaultCheckFailures}}
		return d
	}
	// Old workers are let go once each apply has returned.
	release := func(commits ...string) {
		for _, c := range commits {
			if err := os.WriteFile(filepath.Join(shared, "go-"+c), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	v1 := h.commit("v1")
	h.mustApply(svc(h.desired(v1), "${RECONCILER_COMMIT}"))

	v := &events{}
	v2 := h.commit("v2")
	res, _ := h.mustApply(svc(h.desired(v2), "${RECONCILER_COMMIT}"), func(o *Options) { o.View = v })
	notes := strings.Join(v.notes, "\n")
	if !strings.Contains(notes, "passed web runs from releases/"+res.Release) || !strings.Contains(notes, "1 old process still stopping") {
		t.Errorf("notes:\n%s\nwant the check passed with the old worker still stopping", notes)
	}
	release(v1)

	// A body that names nothing: the old worker is waited for, and it
	// never goes (until released), so the step ends at its budget.
	old := cwdTimeout
	cwdTimeout = 500 * time.Millisecond
	t.Cleanup(func() { cwdTimeout = old })
	v3 := h.commit("v3")
	_, _, err := h.apply(context.Background(), svc(h.desired(v3), ""))
	if !strings.Contains(fmt.Sprint(err), "service web still runs from the old release after reload") {
		t.Errorf("a check that proves nothing passed with an old worker alive: %v", err)
	}
	release(v2, v3)
}

func freePortT(t *testing.T) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
