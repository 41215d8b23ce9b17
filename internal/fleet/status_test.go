package fleet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/etcdtest"
)

// A suspended group takes no slot; resumed, it goes on.
func TestSuspendResume(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cli := newClient(t, c.Endpoints())
	if err := Suspend(ctx, cli, "shop", "web", "alice: db maintenance"); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("a")
	waiting := make(chan string, 10)
	cfg.OnWait = func(r string) { waiting <- r }
	a := newAgent(t, newClient(t, c.Endpoints()), cfg)
	got := make(chan error, 1)
	go func() {
		s, err := a.AcquireSwitch(ctx, target)
		if err == nil {
			err = s.Release(ctx, true, nil)
		}
		got <- err
	}()
	if r := <-waiting; r != "the group is suspended" {
		t.Fatalf("waits for %q", r)
	}
	g, err := ReadGroup(ctx, cli, "shop", "web")
	if err != nil || !g.Suspended {
		t.Fatalf("status: %+v, %v", g, err)
	}
	if len(g.Agents) != 1 || g.Agents[0].State != "waiting: the group is suspended" {
		t.Errorf("agents: %+v", g.Agents)
	}
	if err := Resume(ctx, cli, "shop", "web"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestDial(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli, err := Dial(c.Endpoints(), desired.FleetTLS{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(t.Context(), "/k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(nil, desired.FleetTLS{}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "RECONCILER_ETCD") {
		t.Errorf("no endpoints: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	if _, err := Dial([]string{"https://127.0.0.1:1"}, desired.FleetTLS{CA: bad}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("bad CA: %v", err)
	}
}
