package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/etcdtest"
	"github.com/reconciler-dev/reconciler/internal/fleet"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// procFleet is a fleet of real reconciler processes on this machine: each
// host its own root and desired file, all deploying from one repository
// through one etcd. Their commands append to one log, a line each naming
// the host: "migrate web-1", "begin web-1" (the service restart, after
// the switch), "end web-1" (the health check). A service restart blocks
// while the file block.<host> exists, after touching blocked.<host>.
type procFleet struct {
	t         *testing.T
	bin, dir  string
	repo      *testgit.Repo
	endpoints []string
	fleetYAML string
	hosts     []string
}

func newProcFleet(t *testing.T, endpoints []string, fleetYAML string, hosts ...string) *procFleet {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	f := &procFleet{t: t, bin: bin, dir: t.TempDir(), repo: testgit.New(t), endpoints: endpoints, fleetYAML: fleetYAML, hosts: hosts}
	// A restart still blocked when the test ends (its apply killed) lets go.
	t.Cleanup(func() {
		for _, h := range hosts {
			os.Remove(filepath.Join(f.dir, "block."+h))
		}
	})
	return f
}

// commit commits a new version and points every host's desired file at it.
func (f *procFleet) commit(version string) string {
	f.t.Helper()
	f.repo.Write("VERSION", version+"\n")
	sha := f.repo.Commit(version)
	for _, h := range f.hosts {
		f.writeDesired(h, sha)
	}
	return sha
}

func (f *procFleet) file(host string) string { return filepath.Join(f.dir, host+".yaml") }
func (f *procFleet) root(host string) string { return filepath.Join(f.dir, "root-"+host) }
func (f *procFleet) log() string             { return filepath.Join(f.dir, "fleet.log") }

func (f *procFleet) writeDesired(host, sha string) {
	f.t.Helper()
	// The commands are the same on every host (they name it by $HOST):
	// they are part of the build's fingerprint, so of the rollout's name.
	y := fmt.Sprintf(`app: shop
root: root-%[1]s
source: {repo: %[2]s, commit: "%[3]s"}
build:
  - {name: copy, run: "cat VERSION > built.txt"}
migrate:
  run: 'echo "migrate $HOST" >> "$FLEETDIR/fleet.log"'
services:
  - name: web
    manager: command
    restart: 'echo "begin $HOST" >> "$FLEETDIR/fleet.log"; while [ -f "$FLEETDIR/block.$HOST" ]; do touch "$FLEETDIR/blocked.$HOST"; sleep 0.05; done; sleep 0.2'
health:
  - {command: 'echo "end $HOST" >> "$FLEETDIR/fleet.log"', interval: 50ms, timeout: 1m}
%[4]s`, host, f.repo.Dir, sha, f.fleetYAML)
	if err := os.WriteFile(f.file(host), []byte(y), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// cmd is the reconciler with args as host, in its own process group so
// that a kill reaches it alone, as on its own machine.
func (f *procFleet) cmd(host string, args ...string) *exec.Cmd {
	args = append(args, "-f", f.file(host), "--host", host, "--etcd", strings.Join(f.endpoints, ","))
	cmd := exec.Command(f.bin, args...)
	cmd.Dir = f.dir
	cmd.Env = append(testgit.Env(f.t.TempDir()), "PATH=/usr/bin:/bin", "HOST="+host, "FLEETDIR="+f.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// start starts an apply of host in the background; wait gives its exit
// and output.
func (f *procFleet) start(host string, args ...string) (*exec.Cmd, func() (string, error)) {
	f.t.Helper()
	cmd := f.cmd(host, append([]string{"apply"}, args...)...)
	out := &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	done := make(chan struct{})
	var res error
	go func() { res = cmd.Wait(); close(done) }()
	f.t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	return cmd, func() (string, error) {
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			f.t.Fatalf("apply of %s did not end:\n%s", host, out)
		}
		return out.String(), res
	}
}

func (f *procFleet) apply(host string) {
	f.t.Helper()
	if out, err := f.cmd(host, "apply").CombinedOutput(); err != nil {
		f.t.Fatalf("apply %s: %v\n%s", host, err, out)
	}
}

// events is the shared log, a line each.
func (f *procFleet) events() []string {
	b, _ := os.ReadFile(f.log())
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), " ", "_"))
}

// linked is the commit host's link points at, from its release's name.
func (f *procFleet) linkedTo(host, sha string) bool {
	return strings.HasSuffix(linkedTo(f.root(host)), sha[:8])
}

// status is `fleet status --json` of the group.
func (f *procFleet) status() fleet.Report {
	f.t.Helper()
	cmd := exec.Command(f.bin, "fleet", "status", "--json", "-f", f.file(f.hosts[0]), "--etcd", strings.Join(f.endpoints, ","))
	cmd.Dir = f.dir
	out, err := cmd.Output()
	if err != nil {
		f.t.Fatalf("fleet status: %v", err)
	}
	var r fleet.Report
	if err := json.Unmarshal(out, &r); err != nil {
		f.t.Fatalf("fleet status: %v\n%s", err, out)
	}
	return r
}

// waitEtcd waits until the value of key satisfies ok: a read, then a
// watch from the read's revision on, so no change is missed.
func waitEtcd(t *testing.T, cli *clientv3.Client, key string, ok func(string) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	r, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) > 0 && ok(string(r.Kvs[0].Value)) {
		return
	}
	for wr := range cli.Watch(ctx, key, clientv3.WithRev(r.Header.Revision+1)) {
		for _, ev := range wr.Events {
			if ok(string(ev.Kv.Value)) {
				return
			}
		}
	}
	t.Fatalf("%s: never as expected", key)
}

func etcdClient(t *testing.T, endpoints []string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// maxOpen is the most hosts ever between "begin" and "end" at once.
func maxOpen(events []string) int {
	open, most := map[string]bool{}, 0
	for _, ev := range events {
		what, h, _ := strings.Cut(ev, "_")
		switch what {
		case "begin":
			open[h] = true
		case "end":
			delete(open, h)
		}
		most = max(most, len(open))
	}
	return most
}

func count(events []string, prefix string) int {
	n := 0
	for _, ev := range events {
		if strings.HasPrefix(ev, prefix) {
			n++
		}
	}
	return n
}

// An agent SIGKILLed while it holds the only switch slot — its link moved,
// its service restart blocking — frees the slot when its lease expires
// (the default TTL, 10s): the host waiting for the slot then switches.
// Applied again, the killed host finishes its switch under a slot and the
// rollout ends with both hosts healthy and one migration.
func TestFleetAgentKilledHoldingSlot(t *testing.T) {
	// Mostly waiting (a lease to expire, etcd to answer): beside the others.
	t.Parallel()
	c := etcdtest.Start(t, 1)
	f := newProcFleet(t, c.Endpoints(), "fleet: {group: web, max_parallel: 1, migrate: once}\n", "web-1", "web-2")
	cli := etcdClient(t, c.Endpoints())
	f.commit("v1")
	f.apply("web-1")
	f.apply("web-2")

	v2 := f.commit("v2")
	os.WriteFile(filepath.Join(f.dir, "block.web-1"), nil, 0o644)
	web1, wait1 := f.start("web-1")
	waitfileT(t, filepath.Join(f.dir, "blocked.web-1"))
	if !f.linkedTo("web-1", v2) {
		t.Fatal("web-1 restarts its service before its link moved")
	}
	_, wait2 := f.start("web-2")
	waitEtcd(t, cli, fleet.GroupPrefix("shop", "web")+"agents/web-2", func(v string) bool {
		// The status key does not name the holders: rewritten at every
		// change of them, it cost O(hosts²) writes a rollout.
		return strings.Contains(v, `"state":"waiting: waiting for a switch slot"`)
	})
	if n := count(f.events(), "begin_web-2"); n != 1 { // v1's
		t.Fatalf("web-2 switched while web-1 held the only slot: %q", f.events())
	}
	syscall.Kill(-web1.Process.Pid, syscall.SIGKILL)
	if _, err := wait1(); err == nil {
		t.Fatal("web-1 was not killed")
	}
	if out, err := wait2(); err != nil {
		t.Fatalf("web-2 after web-1 was killed: %v\n%s", err, out)
	}
	if !f.linkedTo("web-2", v2) {
		t.Fatal("web-2 is not on v2")
	}
	// The killed host, applied again, finishes its switch.
	os.Remove(filepath.Join(f.dir, "block.web-1"))
	f.apply("web-1")
	st := f.status()
	if len(st.Rollouts) != 2 {
		t.Fatalf("rollouts: %+v", st.Rollouts)
	}
	r := st.Rollouts[0]
	if r.Target[:len(v2)] != v2 {
		r = st.Rollouts[1]
	}
	if !slices.Equal(r.Healthy, []string{"web-1", "web-2"}) || len(r.Failed) != 0 || r.MigratedBy == "" || len(st.Slots) != 0 {
		t.Errorf("v2's rollout: %+v, slots %v", r, st.Slots)
	}
	if n := count(f.events(), "migrate_"); n != 2 { // one for v1, one for v2
		t.Errorf("%d migrations for two targets: %q", n, f.events())
	}
}

// One member of a 3-member etcd, the leader, SIGKILLed as soon as the
// first host switches: the two left keep a quorum, and three real
// applies all reach the new commit, one switching at a time, one
// migration.
func TestFleetEtcdMemberKilledMidRollout(t *testing.T) {
	// Mostly waiting (a lease to expire, etcd to answer): beside the others.
	t.Parallel()
	c := etcdtest.Start(t, 3)
	f := newProcFleet(t, c.Endpoints(), "fleet: {group: web, max_parallel: 1, canary: 1, migrate: once}\n", "web-1", "web-2", "web-3")
	cli := etcdClient(t, c.Endpoints())
	f.commit("v1")
	for _, h := range f.hosts {
		f.apply(h)
	}
	mark := len(f.events())

	v2 := f.commit("v2")
	// Whoever switches first (the canary) blocks in its service restart
	// until the leader is killed: the kill lands mid-switch.
	for _, h := range f.hosts {
		os.WriteFile(filepath.Join(f.dir, "block."+h), nil, 0o644)
	}
	var waits []func() (string, error)
	for _, h := range f.hosts {
		_, w := f.start(h)
		waits = append(waits, w)
	}
	waitUntil(t, "a host switched", func() bool {
		m, _ := filepath.Glob(filepath.Join(f.dir, "blocked.*"))
		return len(m) > 0
	}, &syncBuf{})
	killed := false
	for _, m := range c.Members {
		st, err := cli.Status(t.Context(), m.ClientURL)
		if err == nil && st.Leader == st.Header.MemberId {
			m.Kill()
			killed = true
			break
		}
	}
	if !killed {
		t.Fatal("no leader found")
	}
	for _, h := range f.hosts {
		os.Remove(filepath.Join(f.dir, "block."+h))
	}
	for i, w := range waits {
		if out, err := w(); err != nil {
			t.Errorf("%s: %v\n%s", f.hosts[i], err, out)
		}
	}
	evs := f.events()[mark:]
	t.Logf("events: %q", evs)
	for _, h := range f.hosts {
		if !f.linkedTo(h, v2) {
			t.Errorf("%s is not on v2", h)
		}
	}
	if n := maxOpen(evs); n != 1 {
		t.Errorf("%d hosts switching at once, max_parallel 1: %q", n, evs)
	}
	if n := count(evs, "migrate_"); n != 1 {
		t.Errorf("%d migrations: %q", n, evs)
	}
	st := f.status()
	for _, r := range st.Rollouts {
		if !strings.HasPrefix(r.Target, v2) {
			continue
		}
		if len(r.Canaries) != 1 || evs[slices.IndexFunc(evs, func(e string) bool { return strings.HasPrefix(e, "begin_") })] != "begin_"+r.Canaries[0] {
			t.Errorf("the canary %v did not switch first: %q", r.Canaries, evs)
		}
		if len(r.Healthy) != 3 {
			t.Errorf("v2's rollout: %+v", r)
		}
	}
}

// etcd stopped while a daemon's host is on v1: a new commit is built but
// never switched to; /status says "waiting: etcd unreachable"; the link,
// removed by hand, is put back on v1 all the same. etcd started again,
// the host goes on to v2.
func TestFleetEtcdStoppedDaemonWaitsAndRepairs(t *testing.T) {
	// Mostly waiting (a lease to expire, etcd to answer): beside the others.
	t.Parallel()
	c := etcdtest.Start(t, 1)
	f := newProcFleet(t, c.Endpoints(), "fleet: {group: web, max_parallel: 1, migrate: once}\n", "web-1")
	v1 := f.commit("v1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := f.cmd("web-1", "run", "--listen", addr)
	logs := &syncBuf{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	fleetState := func() string {
		resp, err := http.Get("http://" + addr + "/status")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out struct {
			Fleet *fleet.HostReport `json:"fleet"`
		}
		if json.Unmarshal(b, &out) != nil || out.Fleet == nil {
			return ""
		}
		return out.Fleet.State
	}
	waitUntil(t, "v1 deployed and reported", func() bool { return f.linkedTo("web-1", v1) && fleetState() == "ok" }, logs)

	c.Members[0].Stop()
	if err := os.Remove(filepath.Join(f.root("web-1"), "current")); err != nil {
		t.Fatal(err)
	}
	v2 := f.commit("v2") // the daemon watches its desired file
	waitUntil(t, "/status says waiting: etcd unreachable", func() bool { return fleetState() == "waiting: etcd unreachable" }, logs)
	if !f.linkedTo("web-1", v1) {
		t.Errorf("linked to %q while waiting with etcd down, want v1 %s", linkedTo(f.root("web-1")), v1[:8])
	}
	if n := count(f.events(), "begin_"); n != 1 {
		t.Errorf("services acted on with etcd down: %q", f.events())
	}

	c.Members[0].Restart()
	waitUntil(t, "v2 deployed once etcd is back", func() bool { return f.linkedTo("web-1", v2) && fleetState() == "ok" }, logs)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// waitfileT waits until path exists, however long a loaded machine takes;
// the bound turns an event that never comes into a failure.
func waitfileT(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
