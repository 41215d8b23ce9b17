package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/etcdtest"
	"github.com/reconciler-dev/reconciler/internal/fleet"
)

// fleetStatus is the fleet part of /status, as a client reads it.
type fleetStatus struct {
	Fleet *fleet.HostReport `json:"fleet"`
}

func getFleet(t *testing.T, url string) *fleet.HostReport {
	t.Helper()
	resp, err := http.Get(url + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out fleetStatus
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("/status: %v\n%s", err, b)
	}
	return out.Fleet
}

// TestStatusShowsFleet: with fleet:, /status says who the host is in its
// group, what it waits for, and the group's rollout as `fleet status
// --json` does (built, switched, healthy, waiting, who migrated); with
// etcd stopped it still says what the host waits for, and why the group
// could not be read. Against a real etcd.
func TestStatusShowsFleet(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	newAgent := func(host string, onWait func(string)) *fleet.Agent {
		cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		a, err := fleet.New(cli, fleet.Config{App: "shop", Group: "web", Host: host, MaxParallel: 1,
			OpTimeout: time.Second, Poll: 100 * time.Millisecond, OnWait: onWait}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	target := fleet.Target{Commit: "8c0d2e4f8c0d2e4f8c0d2e4f8c0d2e4f8c0d2e4f", Fingerprint: "a1b2c3d4e5f6"}
	web1 := newAgent("web-1", nil)
	waits := make(chan string, 10)
	web2 := newAgent("web-2", func(r string) { waits <- r })

	// web-1 migrates and holds the only slot; web-2 built and waits.
	for _, a := range []*fleet.Agent{web1, web2} {
		if err := a.Report(ctx, fleet.Status{Target: target.Key(), State: fleet.StateBuilt}); err != nil {
			t.Fatal(err)
		}
	}
	turn, err := web1.Migrate(ctx, target)
	if err != nil || !turn.Run {
		t.Fatalf("web-1 migrate: %+v, %v", turn, err)
	}
	if err := turn.Finish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	slot1, err := web1.AcquireSwitch(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		s, err := web2.AcquireSwitch(ctx, target)
		if err == nil {
			err = s.Release(ctx, true, nil)
		}
		got <- err
	}()
	if r := <-waits; r != "waiting for a switch slot (held by web-1)" {
		t.Fatalf("web-2 waits for %q", r)
	}

	d := New(Options{Source: &fakeSource{fakeYAML}, Log: zaptest.NewLogger(t)})
	d.good = &desired.State{App: "shop"}
	srv := httptest.NewServer((&Server{Daemon: d, Log: zaptest.NewLogger(t),
		Fleet: func(ctx context.Context) any { return web2.HostReport(ctx) }}).Handler())
	defer srv.Close()

	f := getFleet(t, srv.URL)
	if f == nil || f.Host != "web-2" || f.Group != "web" || f.State != "waiting: waiting for a switch slot (held by web-1)" || f.Error != "" {
		t.Fatalf("/status fleet: %+v", f)
	}
	if f.Status == nil || len(f.Status.Rollouts) != 1 {
		t.Fatalf("/status fleet group: %+v", f.Status)
	}
	r := f.Status.Rollouts[0]
	if r.Target != target.Key() || r.State != "rolling" || r.MigratedBy != "web-1" ||
		!slices.Equal(r.Built, []string{"web-1", "web-2"}) || !slices.Equal(r.Switched, []string{"web-1"}) ||
		len(r.Healthy) != 0 || !slices.Equal(r.Waiting, []string{"web-2"}) {
		t.Errorf("/status rollout: %+v", r)
	}

	// web-1 healthy, web-2 switches: both healthy.
	if err := slot1.Release(ctx, true, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	web2.Report(ctx, fleet.Status{Target: target.Key(), State: "ok"})
	f = getFleet(t, srv.URL)
	if r := f.Status.Rollouts[0]; f.State != "ok" || !slices.Equal(r.Healthy, []string{"web-1", "web-2"}) || len(r.Waiting) != 0 {
		t.Errorf("/status after the rollout: state %q, %+v", f.State, r)
	}

	// etcd stopped: a new target waits, and /status says so without etcd.
	c.Members[0].Stop()
	next := target
	next.Commit = "0000000000000000000000000000000000000001"
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go web2.AcquireSwitch(wctx, next)
	for r := <-waits; r != fleet.ReasonUnreachable; r = <-waits {
	}
	f = getFleet(t, srv.URL)
	if f.State != "waiting: etcd unreachable" || f.Status != nil || f.Error == "" {
		t.Errorf("/status with etcd stopped: %+v", f)
	}

	// Without fleet: no fleet section.
	plain := httptest.NewServer((&Server{Daemon: d, Log: zaptest.NewLogger(t)}).Handler())
	defer plain.Close()
	if f := getFleet(t, plain.URL); f != nil {
		t.Errorf("/status without fleet: %+v", f)
	}
}
