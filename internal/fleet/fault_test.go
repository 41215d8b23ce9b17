package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reconciler-dev/reconciler/internal/etcdtest"
)

func TestHalt(t *testing.T) {
	c := etcdtest.Start(t, 1)
	broken := errors.New("migrate: relation already exists")
	tests := []struct {
		name                       string
		maxParallel, canary, maxF  int
		hosts                      []host
		wantSwitched, wantMigrated int
	}{
		{"failing canary: no other host switches", 2, 1, 0,
			[]host{{name: "web-3"}, {name: "web-1", unhealthy: true}, {name: "web-2"}, {name: "web-4"}}, 1, 1},
		{"max_failures 1 tolerates one failed host", 1, 0, 1,
			[]host{{name: "a", unhealthy: true}, {name: "b", unhealthy: true}, {name: "c", unhealthy: true}, {name: "d", unhealthy: true}}, 2, 1},
		{"failed migration fails the rollout for everyone", 2, 0, 5,
			[]host{{name: "a", migrateErr: broken}, {name: "b", migrateErr: broken}, {name: "c", migrateErr: broken}}, 0, 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("")
			cfg.Group = fmt.Sprintf("h%d", i)
			cfg.MaxParallel, cfg.Canary, cfg.MaxFailures = tt.maxParallel, tt.canary, tt.maxF
			rec := runFleet(t, c.Endpoints(), cfg, tt.hosts, false)
			if len(rec.acquired) != tt.wantSwitched {
				t.Errorf("switched: %v, want %d hosts", rec.acquired, tt.wantSwitched)
			}
			if len(rec.migrated) != tt.wantMigrated {
				t.Errorf("migrated: %v, want %d", rec.migrated, tt.wantMigrated)
			}
			halted := 0
			for h, err := range rec.errs {
				switch {
				case errors.Is(err, ErrHalted):
					halted++
				case err != nil && !errors.Is(err, broken):
					t.Errorf("%s: %v", h, err)
				}
			}
			if want := len(tt.hosts) - tt.wantSwitched - tt.wantMigrated + min(tt.wantSwitched, tt.wantMigrated); tt.wantSwitched == 0 && halted != want {
				t.Errorf("%d hosts were told the rollout halted, want %d: %v", halted, want, rec.errs)
			}
			if tt.wantSwitched > 0 && halted != len(tt.hosts)-tt.wantSwitched {
				t.Errorf("%d hosts were told the rollout halted, want %d: %v", halted, len(tt.hosts)-tt.wantSwitched, rec.errs)
			}
			g, err := ReadGroup(t.Context(), newClient(t, c.Endpoints()), cfg.App, cfg.Group)
			if err != nil {
				t.Fatal(err)
			}
			if len(g.Rollouts) != 1 || g.Rollouts[0].State() != "halted" {
				t.Fatalf("rollout: %+v, want halted", g.Rollouts)
			}
			// A new commit starts a new rollout, not halted. (Without
			// canaries: the others are not deploying it here.)
			next := target
			next.Commit = "0000000000000000000000000000000000000001"
			a := newAgent(t, newClient(t, c.Endpoints()), func() Config { c := cfg; c.Host, c.Canary = "z", 0; return c }())
			sl, err := a.AcquireSwitch(t.Context(), next)
			if err != nil {
				t.Fatalf("a new target after a halt: %v", err)
			}
			sl.Release(t.Context(), true, nil)
		})
	}
}

// A slot whose holder is gone frees itself: its lease revoked (the agent
// closed), or expired (the agent killed: its keepalives stop).
func TestDeadHolderFreesSlot(t *testing.T) {
	c := etcdtest.Start(t, 1)
	tests := []struct {
		name string
		kill func(t *testing.T, a *Agent, cli *clientv3.Client, s *Slot)
	}{
		{"lease revoked", func(t *testing.T, a *Agent, cli *clientv3.Client, s *Slot) {
			if _, err := newClient(t, c.Endpoints()).Revoke(t.Context(), s.sess.Lease()); err != nil {
				t.Fatal(err)
			}
		}},
		{"agent killed: its client gone, the lease expires", func(t *testing.T, a *Agent, cli *clientv3.Client, s *Slot) {
			cli.Close()
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cfg := testConfig("a")
			cfg.Group = fmt.Sprintf("d%d", i)
			cliA := newClient(t, c.Endpoints())
			a := newAgent(t, cliA, cfg)
			sa, err := a.AcquireSwitch(ctx, target)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Host = "b"
			waiting := make(chan string, 10)
			cfg.OnWait = func(r string) { waiting <- r }
			b := newAgent(t, newClient(t, c.Endpoints()), cfg)
			got := make(chan error, 1)
			go func() {
				sb, err := b.AcquireSwitch(ctx, target)
				if err == nil {
					err = sb.Release(ctx, true, nil)
				}
				got <- err
			}()
			if r := <-waiting; r != "waiting for a switch slot (held by a)" {
				t.Fatalf("b waits for %q", r)
			}
			select {
			case err := <-got:
				t.Fatalf("b switched while a held the only slot: %v", err)
			default:
			}
			tt.kill(t, a, cliA, sa)
			if err := <-got; err != nil {
				t.Fatalf("b after a's lease went: %v", err)
			}
			select {
			case <-sa.Lost():
			case <-ctx.Done():
				t.Fatal("a's slot is not reported lost")
			}
		})
	}
}

// With etcd down an agent never switches: it waits, says why, and goes
// on when etcd is back.
func TestEtcdStoppedMidRollout(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cfg := testConfig("a")
	a := newAgent(t, newClient(t, c.Endpoints()), cfg)
	turn, err := a.Migrate(ctx, target)
	if err != nil || !turn.Run {
		t.Fatalf("the first host does not migrate: %+v, %v", turn, err)
	}
	if err := turn.Finish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	sa, err := a.AcquireSwitch(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	c.Members[0].Stop()

	// a's own slot may expire while etcd is down (its keepalives get no
	// answer for longer than its TTL): then sa.Lost says so and a must
	// not switch. b and c are counted here.
	var mu sync.Mutex
	holding, most := 0, 0
	type result struct {
		host string
		err  error
	}
	results := make(chan result, 2)
	unreachable := make(chan string, 2)
	for _, h := range []string{"b", "c"} {
		hc := cfg
		hc.Host = h
		hc.OnWait = func(r string) {
			if r == ReasonUnreachable {
				unreachable <- h
			}
		}
		ag := newAgent(t, newClient(t, c.Endpoints()), hc)
		go func() {
			turn, err := ag.Migrate(ctx, target)
			if err == nil && turn.Run {
				err = fmt.Errorf("%s migrates again", h)
			}
			var s *Slot
			if err == nil {
				s, err = ag.AcquireSwitch(ctx, target)
			}
			if err == nil {
				mu.Lock()
				holding++
				most = max(most, holding)
				mu.Unlock()
				mu.Lock()
				holding--
				mu.Unlock()
				err = s.Release(ctx, true, nil)
			}
			results <- result{h, err}
		}()
	}
	// Both say why they wait, and neither goes on while etcd is down.
	for range 2 {
		select {
		case <-unreachable:
		case r := <-results:
			t.Fatalf("%s went on with etcd down: %v", r.host, r.err)
		case <-ctx.Done():
			t.Fatal("no agent reported etcd unreachable")
		}
	}
	// A wait that ends while etcd is down says why: the daemon reports
	// it and tries again later.
	short, cancelShort := context.WithCancel(ctx)
	d := newAgent(t, newClient(t, c.Endpoints()), func() Config {
		x := cfg
		x.Host = "d"
		x.OnWait = func(r string) {
			if r == ReasonUnreachable {
				cancelShort()
			}
		}
		return x
	}())
	_, err = d.AcquireSwitch(short, target)
	var we *WaitingError
	if !errors.As(err, &we) || err.Error() != "waiting: etcd unreachable" {
		t.Fatalf("AcquireSwitch with etcd down until ctx ends: %v, want waiting: etcd unreachable", err)
	}

	c.Members[0].Restart()
	if err := sa.Release(ctx, true, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if r := <-results; r.err != nil {
			t.Errorf("%s: %v", r.host, r.err)
		}
	}
	if most > cfg.MaxParallel {
		t.Errorf("%d hosts held a slot at once, max_parallel %d", most, cfg.MaxParallel)
	}
}

// One member of three killed mid-rollout, the leader: the other two keep
// a quorum and the rollout goes on to every host, within its limits.
func TestMemberKilledMidRollout(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cfg := testConfig("")
	cfg.MaxParallel, cfg.Canary = 2, 1
	hosts := names(6)
	rec := newRecorder(cfg.Canary)
	killed := make(chan struct{})
	// The leader dies as soon as the first host switched.
	go func() {
		rec.mu.Lock()
		for len(rec.acquired) == 0 {
			rec.cond.Wait()
		}
		rec.mu.Unlock()
		defer close(killed)
		cli := newClient(t, c.Endpoints())
		for _, m := range c.Members {
			st, err := cli.Status(t.Context(), m.ClientURL)
			if err == nil && st.Leader == st.Header.MemberId {
				m.Kill()
				return
			}
		}
		c.Members[0].Kill()
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	agents := make([]*Agent, len(hosts))
	for i, h := range hosts {
		hc := cfg
		hc.Host = h.name
		agents[i] = newAgent(t, newClient(t, c.Endpoints()), hc)
		if err := agents[i].Report(ctx, Status{State: "building"}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := deploy(ctx, agents[i], h, rec, nil)
			rec.mu.Lock()
			rec.errs[h.name] = err
			rec.mu.Unlock()
		}()
	}
	wg.Wait()
	<-killed
	for h, err := range rec.errs {
		if err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if len(rec.acquired) != len(hosts) || len(rec.migrated) != 1 || rec.max > cfg.MaxParallel {
		t.Errorf("switched %v (max %d at once), migrated %v", rec.acquired, rec.max, rec.migrated)
	}
	if rec.acquired[0] != "web-00" || slices.Contains(rec.acquired[1:], "web-00") {
		t.Errorf("switch order %v: the canary web-00 is not first", rec.acquired)
	}
}

// A canary that goes away before it reported healthy or failed — its
// agent stopped, or killed and its lease expired — is replaced by the
// next live host by name, which switches as the canary; the others
// follow it. Without the replacement they wait for it forever.
func TestGoneCanaryIsReplaced(t *testing.T) {
	c := etcdtest.Start(t, 1)
	tests := []struct {
		name string
		gone func(a *Agent, cli *clientv3.Client)
	}{
		{"agent stopped", func(a *Agent, _ *clientv3.Client) { a.Close() }},
		{"agent killed: its lease expires", func(_ *Agent, cli *clientv3.Client) { cli.Close() }},
		// Its commands differ from the group's: another build of the
		// commit, a rollout of its own, never this one.
		{"agent on another build of the commit", func(a *Agent, _ *clientv3.Client) {
			if err := a.Report(context.Background(), Status{State: "built", Commit: target.Commit, Target: target.Commit + "-0therbuild"}); err != nil {
				panic(err)
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cfg := testConfig("")
			cfg.Group, cfg.Canary = fmt.Sprintf("g%d", i), 1
			agents := map[string]*Agent{}
			clients := map[string]*clientv3.Client{}
			waits := map[string]chan string{}
			for _, h := range []string{"web-1", "web-2", "web-3"} {
				hc := cfg
				hc.Host = h
				w := make(chan string, 10)
				hc.OnWait = func(r string) { w <- r }
				clients[h] = newClient(t, c.Endpoints())
				agents[h], waits[h] = newAgent(t, clients[h], hc), w
				if err := agents[h].Report(ctx, Status{State: "building"}); err != nil {
					t.Fatal(err)
				}
			}
			type res struct {
				host string
				err  error
			}
			order := make(chan res, 2)
			for _, h := range []string{"web-2", "web-3"} {
				go func() {
					s, err := agents[h].AcquireSwitch(ctx, target)
					if err == nil {
						order <- res{h, nil}
						err = s.Release(ctx, true, nil)
					}
					if err != nil {
						order <- res{h, err}
					}
				}()
			}
			for _, h := range []string{"web-2", "web-3"} {
				if r := <-waits[h]; r != "waiting for the canaries web-1" {
					t.Fatalf("%s waits for %q", h, r)
				}
			}
			tt.gone(agents["web-1"], clients["web-1"])
			var got []string
			for range 2 {
				select {
				case r := <-order:
					if r.err != nil {
						t.Fatalf("%s: %v", r.host, r.err)
					}
					got = append(got, r.host)
				case <-ctx.Done():
					t.Fatalf("the rollout stopped with its canary gone; switched: %v", got)
				}
			}
			if !slices.Equal(got, []string{"web-2", "web-3"}) {
				t.Errorf("switch order %v, want web-2 (the new canary) then web-3", got)
			}
			g, err := ReadGroup(ctx, newClient(t, c.Endpoints()), cfg.App, cfg.Group)
			if err != nil {
				t.Fatal(err)
			}
			var ro *Rollout
			for i := range g.Rollouts {
				if g.Rollouts[i].Target == target.Key() {
					ro = &g.Rollouts[i]
				}
			}
			if ro == nil || !slices.Equal(ro.Canaries, []string{"web-2"}) {
				t.Errorf("rollouts: %+v, want %s with the canary web-2", g.Rollouts, target.Key())
			}
		})
	}
}
