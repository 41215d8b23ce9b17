package fleet

import (
	"context"
	"slices"
	"strings"
)

// Report is a group's status as `fleet status --json` and the daemon's
// /status show it: every host, the held slots, and each rollout's
// progress in hosts (built, switched, healthy, failed, waiting).
type Report struct {
	App       string     `json:"app"`
	Group     string     `json:"group"`
	Suspended bool       `json:"suspended"`
	Hosts     []Status   `json:"hosts"`
	Slots     []string   `json:"slots"`
	Rollouts  []Progress `json:"rollouts"`
}

// Progress is one rollout's progress.
type Progress struct {
	Target     string            `json:"target"`
	State      string            `json:"state"` // rolling or halted
	Halted     string            `json:"halted,omitempty"`
	Canaries   []string          `json:"canaries,omitempty"`
	Built      []string          `json:"built"` // hosts that built the target
	Switched   []string          `json:"switched"`
	Healthy    []string          `json:"healthy"`
	Failed     map[string]string `json:"failed"`
	Waiting    []string          `json:"waiting"`
	MigratedBy string            `json:"migrated_by,omitempty"`
	Migrating  string            `json:"migrating,omitempty"`
}

// Report is g as people and programs read it. Lists are never null.
func (g *GroupStatus) Report() Report {
	out := Report{App: g.App, Group: g.Group, Suspended: g.Suspended, Hosts: g.Agents, Slots: nonNil(g.Slots)}
	if out.Hosts == nil {
		out.Hosts = []Status{}
	}
	out.Rollouts = []Progress{}
	for _, r := range g.Rollouts {
		p := Progress{Target: r.Target, State: r.State(), Halted: r.Halted, Canaries: r.Canaries,
			Switched: nonNil(r.Switched), Healthy: nonNil(r.Healthy), Failed: r.Failed, Waiting: []string{},
			MigratedBy: r.MigratedBy, Migrating: r.Migrating}
		if p.Failed == nil {
			p.Failed = map[string]string{}
		}
		// A host that switched built first, whether or not it said so
		// (an older agent, or etcd out of reach when it would have).
		built := append(slices.Clone(r.Built), r.Switched...)
		for _, a := range g.Agents {
			if a.Target == r.Target && strings.HasPrefix(a.State, "waiting") {
				p.Waiting = append(p.Waiting, a.Host)
			}
		}
		slices.Sort(built)
		p.Built = nonNil(slices.Compact(built))
		out.Rollouts = append(out.Rollouts, p)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// HostReport is one agent's view of its fleet, for the daemon's /status:
// who this host is, what it is doing, and its group's status. The host's
// own part is known without etcd: while etcd is out of reach it still
// says "waiting: etcd unreachable".
type HostReport struct {
	Host  string `json:"host"`
	App   string `json:"app"`
	Group string `json:"group"`
	// State is this host's: "waiting: <reason>" while it waits for its
	// turn, else the state it last reported (built, ok, failed, …).
	State string `json:"state"`
	// Status is the group's, read from etcd now; nil when it could not
	// be, and then Error says why.
	Status *Report `json:"group_status,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// HostReport reads the group's status (within the agent's request
// timeout) and says what this host is doing.
func (a *Agent) HostReport(ctx context.Context) HostReport {
	a.mu.Lock()
	r := HostReport{Host: a.cfg.Host, App: a.cfg.App, Group: a.cfg.Group, State: a.last.State}
	if a.waitMsg != "" {
		r.State = "waiting: " + a.waitMsg
	}
	a.mu.Unlock()
	octx, cancel := a.op(ctx)
	defer cancel()
	g, err := ReadGroup(octx, a.cli, a.cfg.App, a.cfg.Group)
	if err != nil {
		r.Error = ReasonUnreachable + ": " + err.Error()
		return r
	}
	rep := g.Report()
	r.Status = &rep
	return r
}
