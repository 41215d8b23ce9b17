package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/etcdtest"
)

var target = Target{Commit: "8c0d2e4f8c0d2e4f8c0d2e4f8c0d2e4f8c0d2e4f", Fingerprint: "a1b2c3d4e5f6"}

// newClient is an etcd client of its own, as each host has: closing it is
// what a killed agent does to its connection.
func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// testConfig is a group's config with timings for tests: the TTL is short
// so an expired lease is seen within the test; the poll is only a safety
// net, progress comes from watch events.
func testConfig(host string) Config {
	return Config{App: "shop", Group: "web", Host: host, MaxParallel: 1,
		TTL: 2 * time.Second, OpTimeout: 2 * time.Second, Poll: 200 * time.Millisecond}
}

func newAgent(t *testing.T, cli *clientv3.Client, cfg Config) *Agent {
	t.Helper()
	a, err := New(cli, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// recorder watches the simulated hosts: who holds a slot now, the most at
// once, who switched when, who migrated.
type recorder struct {
	mu         sync.Mutex
	cond       *sync.Cond
	holding    int
	max        int
	acquired   []string
	acquiredAt map[string]time.Time
	releasedAt map[string]time.Time
	migrated   []string
	doneBy     map[string]string
	errs       map[string]error
	// canaries is how many hosts go first: while some of them have not
	// released, at most that many can hold a slot.
	canaries int
	released int
	holders  map[string]bool   // hosts holding a slot now
	slotWait map[string]string // host → the holders it last found holding every slot
}

func newRecorder(canaries int) *recorder {
	r := &recorder{acquiredAt: map[string]time.Time{}, releasedAt: map[string]time.Time{},
		doneBy: map[string]string{}, errs: map[string]error{}, canaries: canaries,
		holders: map[string]bool{}, slotWait: map[string]string{}}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *recorder) acquire(host string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holding++
	r.max = max(r.max, r.holding)
	r.acquired = append(r.acquired, host)
	r.acquiredAt[host] = time.Now()
	r.holders[host] = true
	r.cond.Broadcast()
}

// hold keeps a slot until every host that could take one next has found
// all slots held by the hosts holding one now (its OnWait names them), or
// none is left to look. A slot
// handed out past max_parallel would be taken then, and counted. It waits
// on events, not on time.
func (r *recorder) hold(ctx context.Context, canaries []string, hosts []string) {
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for ctx.Err() == nil {
		waiting := true
		for _, h := range hosts {
			if _, ok := r.acquiredAt[h]; ok {
				continue
			}
			// While a canary holds or waits, only canaries can come.
			if r.released < len(canaries) && !slices.Contains(canaries, h) {
				continue
			}
			if r.slotWait[h] != holderSet(r.holders) {
				waiting = false
			}
		}
		if waiting {
			return
		}
		r.cond.Wait()
	}
}

// onWait is a host's OnWait: it notes when the host last found every
// slot held.
func (r *recorder) onWait(host string) func(string) {
	return func(reason string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if held, ok := strings.CutPrefix(reason, "waiting for a switch slot (held by "); ok {
			names := strings.Split(strings.TrimSuffix(held, ")"), ", ")
			set := map[string]bool{}
			for _, n := range names {
				set[n] = true
			}
			r.slotWait[host] = holderSet(set)
			r.cond.Broadcast()
		}
	}
}

func holderSet(m map[string]bool) string {
	var out []string
	for h := range m {
		out = append(out, h)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func (r *recorder) release(host string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holding--
	delete(r.holders, host)
	r.released++
	r.releasedAt[host] = time.Now()
	r.cond.Broadcast()
}

// host is one simulated agent's part in a test.
type host struct {
	name       string
	unhealthy  bool  // its health check fails after the switch
	migrateErr error // its migration fails, if it runs it
}

// deploy is what an agent does for a target, as the executor will: build
// (nothing here), migrate or learn who did, take a slot, switch, check
// health, release.
func deploy(ctx context.Context, a *Agent, h host, rec *recorder, hold func()) error {
	turn, err := a.Migrate(ctx, target)
	if err != nil {
		return err
	}
	if turn.Run {
		rec.mu.Lock()
		rec.migrated = append(rec.migrated, h.name)
		rec.mu.Unlock()
		if err := turn.Finish(ctx, h.migrateErr); err != nil {
			return err
		}
		if h.migrateErr != nil {
			return h.migrateErr
		}
	} else {
		rec.mu.Lock()
		rec.doneBy[h.name] = turn.DoneBy
		rec.mu.Unlock()
	}
	slot, err := a.AcquireSwitch(ctx, target)
	if err != nil {
		return err
	}
	rec.acquire(h.name)
	if hold != nil {
		hold()
	}
	// The count goes down before the slot is free, so it never counts a
	// host that already gave its slot up.
	rec.release(h.name)
	var cause error
	if h.unhealthy {
		cause = errors.New("health check http://127.0.0.1/health: 500")
	}
	return slot.Release(ctx, !h.unhealthy, cause)
}

// runFleet starts one agent per host, all registered before any deploys
// (the canaries are chosen among registered hosts), and waits for all.
func runFleet(t *testing.T, endpoints []string, cfg Config, hosts []host, hold bool) *recorder {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	rec := newRecorder(cfg.Canary)
	var all []string
	for _, h := range hosts {
		all = append(all, h.name)
	}
	sort.Strings(all)
	canaries := all[:min(cfg.Canary, len(all))]
	var holdFn func()
	if hold {
		holdFn = func() { rec.hold(ctx, canaries, all) }
	}
	agents := make([]*Agent, len(hosts))
	for i, h := range hosts {
		c := cfg
		c.Host = h.name
		c.OnWait = rec.onWait(h.name)
		agents[i] = newAgent(t, newClient(t, endpoints), c)
		if err := agents[i].Report(ctx, Status{State: "building", Target: target.Key()}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := deploy(ctx, agents[i], h, rec, holdFn)
			rec.mu.Lock()
			rec.errs[h.name] = err
			rec.mu.Unlock()
		}()
	}
	wg.Wait()
	return rec
}

// names are hosts in an order that is not their sorted one: the canaries
// are chosen by name, not by who comes first.
func names(n int) []host {
	var hs []host
	for i := n - 1; i >= 0; i-- {
		hs = append(hs, host{name: fmt.Sprintf("web-%02d", (i*7)%n)})
	}
	return hs
}

func TestRollout(t *testing.T) {
	c := etcdtest.Start(t, 1)
	tests := []struct {
		name                       string
		hosts, maxParallel, canary int
		soak                       time.Duration
	}{
		{"one at a time", 4, 1, 0, 0},
		{"two at a time", 6, 2, 0, 0},
		{"canaries then soak", 6, 2, 2, 200 * time.Millisecond},
		{"one canary, more slots than canaries", 5, 3, 1, 200 * time.Millisecond},
		{"more canaries than hosts", 3, 3, 5, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("")
			cfg.Group = fmt.Sprintf("g%d", i)
			cfg.MaxParallel, cfg.Canary, cfg.Soak = tt.maxParallel, tt.canary, tt.soak
			hosts := names(tt.hosts)
			rec := runFleet(t, c.Endpoints(), cfg, hosts, true)
			for h, err := range rec.errs {
				if err != nil {
					t.Errorf("%s: %v", h, err)
				}
			}
			// The slot limit: reached and never passed.
			canaries := min(tt.canary, tt.hosts)
			want := min(tt.maxParallel, tt.hosts)
			if canaries > 0 {
				want = max(min(tt.maxParallel, canaries), min(tt.maxParallel, tt.hosts-canaries))
			}
			if rec.max != want {
				t.Errorf("at most %d hosts held a slot at once, want %d (max_parallel %d)", rec.max, want, tt.maxParallel)
			}
			// Migrate once: one host ran it, every other was told who.
			if len(rec.migrated) != 1 {
				t.Fatalf("migrations run by %v, want exactly one", rec.migrated)
			}
			for _, h := range hosts {
				if h.name != rec.migrated[0] && rec.doneBy[h.name] != rec.migrated[0] {
					t.Errorf("%s: migrate done by %q, want %q", h.name, rec.doneBy[h.name], rec.migrated[0])
				}
			}
			g, err := ReadGroup(t.Context(), newClient(t, c.Endpoints()), cfg.App, cfg.Group)
			if err != nil {
				t.Fatal(err)
			}
			if len(g.Rollouts) != 1 || len(g.Rollouts[0].Healthy) != tt.hosts || g.Rollouts[0].MigratedBy != rec.migrated[0] || len(g.Slots) != 0 {
				t.Errorf("group status: %+v", g)
			}
			if canaries == 0 {
				return
			}
			// Canaries: the first hosts by name switched before anyone
			// else, and the others waited the soak after the last of them.
			var sorted []string
			for _, h := range hosts {
				sorted = append(sorted, h.name)
			}
			sort.Strings(sorted)
			wantCanaries := sorted[:canaries]
			if !slices.Equal(g.Rollouts[0].Canaries, wantCanaries) {
				t.Errorf("canaries %v, want %v", g.Rollouts[0].Canaries, wantCanaries)
			}
			first := rec.acquired[:canaries]
			slices.Sort(first)
			if !slices.Equal(first, wantCanaries) {
				t.Errorf("switch order %v: the canaries %v are not first", rec.acquired, wantCanaries)
			}
			var lastCanary time.Time
			for _, h := range wantCanaries {
				if rec.releasedAt[h].After(lastCanary) {
					lastCanary = rec.releasedAt[h]
				}
			}
			for _, h := range sorted[canaries:] {
				if waited := rec.acquiredAt[h].Sub(lastCanary); waited < tt.soak {
					t.Errorf("%s switched %s after the last canary was healthy, before the soak of %s", h, waited, tt.soak)
				}
			}
		})
	}
}
