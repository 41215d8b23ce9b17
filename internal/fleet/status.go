package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// GroupStatus is what `reconciler fleet status` shows: every host and
// every rollout of one app and group.
type GroupStatus struct {
	App, Group string
	Suspended  bool
	Agents     []Status  // sorted by host
	Slots      []string  // "<host> <target>" per held slot, by index
	Rollouts   []Rollout // sorted by target
}

// Rollout is the progress of one target.
type Rollout struct {
	Target     string
	Canaries   []string
	Built      []string // hosts that reported the target built, sorted
	Switched   []string // hosts that took a slot, sorted
	Healthy    []string
	Failed     map[string]string // host → why
	Halted     string            // why; "" while it goes on
	MigratedBy string
	Migrating  string // the host holding the migration lock
}

// State is the rollout in one word: halted, or in progress.
func (r Rollout) State() string {
	if r.Halted != "" {
		return "halted"
	}
	return "rolling"
}

// ReadGroup reads a group's status in one consistent read.
func ReadGroup(ctx context.Context, cli *clientv3.Client, app, group string) (*GroupStatus, error) {
	p := GroupPrefix(app, group)
	r, err := cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("fleet: read %s: %w", p, err)
	}
	g := &GroupStatus{App: app, Group: group}
	rollouts := map[string]*Rollout{}
	ro := func(t string) *Rollout {
		if r, ok := rollouts[t]; ok {
			return r
		}
		r := &Rollout{Target: t, Failed: map[string]string{}}
		rollouts[t] = r
		return r
	}
	for _, kv := range r.Kvs {
		k, v := strings.TrimPrefix(string(kv.Key), p), string(kv.Value)
		parts := strings.Split(k, "/")
		switch {
		case k == "suspended":
			g.Suspended = true
		case parts[0] == "agents" && len(parts) == 2:
			var s Status
			if err := json.Unmarshal(kv.Value, &s); err != nil {
				s = Status{Host: parts[1], State: "unreadable status: " + err.Error()}
			}
			g.Agents = append(g.Agents, s)
		case parts[0] == "slots" && len(parts) == 2:
			g.Slots = append(g.Slots, v)
		case parts[0] == "rollouts" && len(parts) >= 3:
			r := ro(parts[1])
			switch rest := strings.Join(parts[2:], "/"); {
			case rest == "canaries":
				json.Unmarshal(kv.Value, &r.Canaries)
			case rest == "halted":
				r.Halted = v
			case rest == "migrate/done":
				r.MigratedBy = v
			case rest == "migrate/lock":
				r.Migrating, _, _ = strings.Cut(v, " ")
			case len(parts) == 4 && parts[2] == "built":
				r.Built = append(r.Built, parts[3])
			case len(parts) == 4 && parts[2] == "switched":
				r.Switched = append(r.Switched, parts[3])
			case len(parts) == 4 && parts[2] == "healthy":
				r.Healthy = append(r.Healthy, parts[3])
			case len(parts) == 4 && parts[2] == "failed":
				r.Failed[parts[3]] = v
			}
		}
	}
	for _, r := range rollouts {
		g.Rollouts = append(g.Rollouts, *r)
	}
	sort.Slice(g.Rollouts, func(i, j int) bool { return g.Rollouts[i].Target < g.Rollouts[j].Target })
	return g, nil
}

// Suspend stops every host of the group from taking a switch slot until
// Resume; hosts already switching finish.
func Suspend(ctx context.Context, cli *clientv3.Client, app, group, by string) error {
	if _, err := cli.Put(ctx, GroupPrefix(app, group)+"suspended", by); err != nil {
		return fmt.Errorf("fleet: suspend %s/%s: %w", app, group, err)
	}
	return nil
}

// Resume undoes Suspend.
func Resume(ctx context.Context, cli *clientv3.Client, app, group string) error {
	if _, err := cli.Delete(ctx, GroupPrefix(app, group)+"suspended"); err != nil {
		return fmt.Errorf("fleet: resume %s/%s: %w", app, group, err)
	}
	return nil
}
