package apply

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/etcdtest"
	"github.com/reconciler-dev/reconciler/internal/fleet"
	"github.com/reconciler-dev/reconciler/internal/fleetgate"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// fleetHosts are n hosts of one app and group, each its own root and
// desired file, deploying from one repository. Their commands append to
// one shared log, each line naming the host: "migrate web-2", "begin
// web-1" (a service restart, after the switch), "end web-1" (the health
// check).
type fleetHosts struct {
	t     *testing.T
	repo  *testgit.Repo
	cli   *clientv3.Client
	log   string
	hosts []*host
	names []string
}

const fleetYAML = "fleet: {etcd: [%s], max_parallel: 1, canary: 1, soak: 200ms, migrate: once}\n"

func newFleet(t *testing.T, n int) *fleetHosts {
	c := etcdtest.Start(t, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	f := &fleetHosts{t: t, repo: testgit.New(t), cli: cli, log: filepath.Join(t.TempDir(), "fleet.log")}
	for i := range n {
		dir := t.TempDir()
		h := &host{t: t, repo: f.repo, dir: dir, root: filepath.Join(dir, "host"), keep: 5}
		h.l = layout.New(h.root, "current")
		if err := os.MkdirAll(filepath.Join(h.root, "shared"), 0o755); err != nil {
			t.Fatal(err)
		}
		f.hosts = append(f.hosts, h)
		f.names = append(f.names, fmt.Sprintf("web-%d", i+1))
	}
	return f
}

func (f *fleetHosts) commit(version string, files ...string) string {
	f.repo.Write("VERSION", version+"\n")
	for _, name := range files {
		f.repo.Write(name, "")
	}
	sha := f.repo.Commit(version)
	for _, name := range files {
		os.Remove(filepath.Join(f.repo.Dir, name))
	}
	return sha
}

// desired is host i's desired file at commit, with fleet: when withFleet.
func (f *fleetHosts) desired(i int, commit string, withFleet bool) *desired.State {
	f.t.Helper()
	h := f.hosts[i]
	src := "app: shop\nroot: host\n" +
		"source: {repo: " + f.repo.Dir + ", commit: \"" + commit + "\"}\n" +
		"build:\n  - name: copy\n    run: cat VERSION > built.txt\n" +
		"migrate:\n  run: 'echo \"migrate $HOST\" >> \"$FLEETLOG\"'\n" +
		"services:\n  - name: web\n    manager: command\n    restart: echo \"begin $HOST\" >> \"$FLEETLOG\"\n" +
		"health:\n  - command: 'echo \"end $HOST\" >> \"$FLEETLOG\"; test ! -f BROKEN'\n    interval: 10ms\n    timeout: 1m\n"
	if withFleet {
		src += fmt.Sprintf(fleetYAML, f.cli.Endpoints()[0])
	}
	file := filepath.Join(h.dir, "desired.yaml")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		f.t.Fatal(err)
	}
	d, err := desired.Load(file)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// applyAll applies commit on every host at once, each with its own agent,
// and returns each host's error.
func (f *fleetHosts) applyAll(commit string, withFleet bool) []error {
	f.t.Helper()
	errs := make([]error, len(f.hosts))
	agents := make([]*fleet.Agent, len(f.hosts))
	ds := make([]*desired.State, len(f.hosts))
	for i := range f.hosts {
		ds[i] = f.desired(i, commit, withFleet)
		if !withFleet {
			continue
		}
		a, err := fleet.New(f.cli, fleet.ConfigOf(ds[i].Fleet, ds[i].App, f.names[i]), zaptest.NewLogger(f.t))
		if err != nil {
			f.t.Fatal(err)
		}
		defer a.Close()
		// Registered before any apply, so that the canary is chosen
		// among all three: web-1, first by name.
		if err := a.Report(context.Background(), fleet.Status{State: "starting"}); err != nil {
			f.t.Fatal(err)
		}
		agents[i] = a
	}
	var wg sync.WaitGroup
	for i, h := range f.hosts {
		wg.Go(func() {
			_, _, errs[i] = h.apply(context.Background(), ds[i], func(o *Options) {
				o.Env = append(o.Env, "HOST="+f.names[i], "FLEETLOG="+f.log)
				if agents[i] != nil {
					o.Fleet = agents[i].AsGate()
				}
			})
		})
	}
	wg.Wait()
	return errs
}

// events reads the shared log from line from on.
func (f *fleetHosts) events(from int) []string {
	b, err := os.ReadFile(f.log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		f.t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) == 1 && lines[0] == "" {
		lines = nil
	}
	return lines[min(from, len(lines)):]
}

// maxSwitching is the most hosts ever between their restart (after the
// switch) and their first health check: switching at once.
func maxSwitching(events []string) int {
	open, most := map[string]bool{}, 0
	for _, ev := range events {
		what, h, _ := strings.Cut(ev, " ")
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

func TestFleetRollsOutOneHostAtATimeAndMigratesOnce(t *testing.T) {
	f := newFleet(t, 3)
	v1 := f.commit("v1")
	for i, err := range f.applyAll(v1, false) {
		if err != nil {
			t.Fatalf("%s: first deploy: %v", f.names[i], err)
		}
	}
	mark := len(f.events(0))

	v2 := f.commit("v2")
	for i, err := range f.applyAll(v2, true) {
		if err != nil {
			t.Fatalf("%s: apply v2: %v", f.names[i], err)
		}
	}
	for i, h := range f.hosts {
		if c := h.record(h.linked()).Commit; c != v2 {
			t.Errorf("%s is on %s, want %s", f.names[i], c, v2)
		}
	}
	evs := f.events(mark)
	if n := maxSwitching(evs); n != 1 {
		t.Errorf("%d hosts switching at once, want 1 (max_parallel): %q", n, evs)
	}
	var migrated []string
	for _, ev := range evs {
		if h, ok := strings.CutPrefix(ev, "migrate "); ok {
			migrated = append(migrated, h)
		}
	}
	if len(migrated) != 1 {
		t.Fatalf("migrations run: %q, want exactly one", migrated)
	}
	// The canary (web-1) switches first, the others after its soak.
	if first := evs[slicesIndexPrefix(evs, "begin ")]; first != "begin web-1" {
		t.Errorf("first host switched: %q, want the canary web-1: %q", first, evs)
	}
	// The others report who migrated, in their history.
	for i, h := range f.hosts {
		if f.names[i] == migrated[0] {
			continue
		}
		recs, _, err := history.Read(h.l.HistoryFile())
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range recs {
			if strings.HasPrefix(r.Step, "migrate") && strings.Contains(r.Step, "(done by "+migrated[0]+")") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no migrate step done by %s in its history", f.names[i], migrated[0])
		}
	}
	g, err := fleet.ReadGroup(context.Background(), f.cli, "shop", "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Rollouts) != 1 || len(g.Rollouts[0].Healthy) != 3 || g.Rollouts[0].MigratedBy != migrated[0] {
		t.Errorf("rollout in etcd: %+v", g.Rollouts)
	}
}

func TestFleetBrokenCanaryHaltsTheRollout(t *testing.T) {
	f := newFleet(t, 3)
	v1 := f.commit("v1")
	for i, err := range f.applyAll(v1, false) {
		if err != nil {
			t.Fatalf("%s: first deploy: %v", f.names[i], err)
		}
	}
	old := make([]string, len(f.hosts))
	for i, h := range f.hosts {
		old[i] = h.linked()
	}
	mark := len(f.events(0))

	errs := f.applyAll(f.commit("v2", "BROKEN"), true)
	var he *HealthError
	if !errors.As(errs[0], &he) || he.RevertedTo != old[0] {
		t.Errorf("web-1 (the canary): %v, want a failed health check reverted to %s", errs[0], old[0])
	}
	for i := 1; i < len(f.hosts); i++ {
		var ae *Error
		if !errors.Is(errs[i], fleet.ErrHalted) || !errors.As(errs[i], &ae) || ae.Kind != NeedsPerson {
			t.Errorf("%s: %v, want the rollout halted, a person's to act on", f.names[i], errs[i])
		}
	}
	for i, h := range f.hosts {
		if got := h.linked(); got != old[i] {
			t.Errorf("%s is linked to %s, want its old release %s", f.names[i], got, old[i])
		}
	}
	for _, ev := range f.events(mark) {
		if strings.HasPrefix(ev, "begin ") && ev != "begin web-1" {
			t.Errorf("%s: only the canary may switch to a broken release", ev)
		}
	}
}

func slicesIndexPrefix(s []string, p string) int {
	for i, x := range s {
		if strings.HasPrefix(x, p) {
			return i
		}
	}
	return 0
}

// With etcd out of reach, a host never moves to a new target: the apply
// ends "waiting", retry-later, on the old release. It still repairs drift
// back to its own release, which asks nothing of etcd.
func TestFleetEtcdDownWaitsButRepairsDrift(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	f := &fleetHosts{t: t, repo: testgit.New(t), cli: cli, log: filepath.Join(t.TempDir(), "fleet.log")}
	h := &host{t: t, repo: f.repo, dir: t.TempDir(), keep: 5}
	h.root = filepath.Join(h.dir, "host")
	h.l = layout.New(h.root, "current")
	f.hosts, f.names = []*host{h}, []string{"web-1"}
	env := func(o *Options) { o.Env = append(o.Env, "HOST=web-1", "FLEETLOG="+f.log) }
	v1 := f.commit("v1")
	h.mustApply(f.desired(0, v1, false), env)
	old := h.linked()

	d := f.desired(0, f.commit("v2"), true)
	cfg := fleet.ConfigOf(d.Fleet, d.App, "web-1")
	cfg.OpTimeout, cfg.Poll = 300*time.Millisecond, 100*time.Millisecond
	a, err := fleet.New(cli, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c.Members[0].Stop()
	withGate := func(o *Options) { env(o); o.Fleet = a.AsGate() }

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, _, err := h.apply(ctx, d, withGate)
	var ae *Error
	var we *fleetgate.WaitingError
	if !errors.As(err, &ae) || ae.Kind != RetryLater || !errors.As(err, &we) || we.Reason != fleet.ReasonUnreachable {
		t.Fatalf("apply with etcd down: %v, want waiting: %s, retry later", err, fleet.ReasonUnreachable)
	}
	if res.Result != ResultWaiting {
		t.Errorf("result %q, want %q", res.Result, ResultWaiting)
	}
	if got := h.linked(); got != old {
		t.Errorf("linked %s with etcd down, want %s", got, old)
	}

	// Drift: the link removed by hand, repaired back to the host's own
	// release with etcd still down.
	if err := os.Remove(h.l.LinkPath()); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Minute)
	defer cancel2()
	if _, _, err := h.apply(ctx2, f.desired(0, v1, true), withGate); err != nil {
		t.Fatalf("drift repair with etcd down: %v", err)
	}
	if got := h.linked(); got != old {
		t.Errorf("linked %s after the repair, want %s", got, old)
	}
}
