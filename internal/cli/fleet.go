package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"

	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fleet"
	"github.com/reconciler-dev/reconciler/internal/fleetgate"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// fleetFlags are who this host is in its fleet and where etcd is.
type fleetFlags struct {
	host, etcd string
}

func (f *fleetFlags) add(fl *pflag.FlagSet) {
	host, _ := os.Hostname()
	fl.StringVar(&f.host, "host", host, "this host's name in its fleet (fleet: only)")
	fl.StringVar(&f.etcd, "etcd", "", "etcd client URLs, comma-separated, overriding fleet.etcd (default: $RECONCILER_ETCD)")
}

// endpoints are --etcd, else RECONCILER_ETCD, else fleet.etcd.
func (f *fleetFlags) endpoints(fl *desired.Fleet) []string {
	list := f.etcd
	if list == "" {
		list = os.Getenv("RECONCILER_ETCD")
	}
	if list == "" {
		return fl.Etcd
	}
	var out []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// dial is the etcd client of st's fleet.
func (f *fleetFlags) dial(st *desired.State, log *zap.Logger) (*clientv3.Client, error) {
	return fleet.Dial(f.endpoints(st.Fleet), st.Fleet.TLS, log)
}

// agents keeps one fleet agent across the daemon's runs, so its status
// key and lease live as long as it does; a new one when fleet: changes.
type agents struct {
	f   *fleetFlags
	log *zap.Logger

	mu    sync.Mutex
	key   string
	cli   *clientv3.Client
	agent *fleet.Agent
}

// get is the agent for st; nil without fleet:.
func (a *agents) get(st *desired.State) (*fleet.Agent, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st.Fleet == nil {
		a.closeLocked()
		return nil, nil
	}
	cfg := fleet.ConfigOf(st.Fleet, st.App, a.f.host)
	key := fmt.Sprintf("%+v %v %+v", cfg, a.f.endpoints(st.Fleet), st.Fleet.TLS)
	if a.agent != nil && key == a.key {
		return a.agent, nil
	}
	a.closeLocked()
	cli, err := a.f.dial(st, a.log)
	if err != nil {
		return nil, err
	}
	ag, err := fleet.New(cli, cfg, a.log)
	if err != nil {
		cli.Close()
		return nil, err
	}
	a.key, a.cli, a.agent = key, cli, ag
	return ag, nil
}

func (a *agents) closeLocked() {
	if a.agent != nil {
		a.agent.Close()
		a.cli.Close()
	}
	a.key, a.cli, a.agent = "", nil, nil
}

// Close frees the agent's lease: its status, slots and locks go at once.
func (a *agents) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closeLocked()
}

// report is the agent's view of its fleet for /status: nil without
// fleet: (or before the desired state was read), else the host, its state
// and its group's rollouts. An interface holding a nil pointer is not nil,
// hence the any.
func (a *agents) report(ctx context.Context, st *desired.State) any {
	if st == nil || st.Fleet == nil {
		return nil
	}
	ag, err := a.get(st)
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	return ag.HostReport(ctx)
}

// gateOf is ag as apply's Gate: nil without fleet:.
func gateOf(ag *fleet.Agent) fleetgate.Gate {
	if ag == nil {
		return nil
	}
	return ag.AsGate()
}

// reportApply tells the fleet how an apply ended: the release linked now,
// its commit, the result. Best effort: etcd may be out of reach.
func reportApply(ctx context.Context, ag *fleet.Agent, st *desired.State, res *apply.Result, err error, log *zap.Logger) {
	if ag == nil || res == nil {
		return
	}
	s := fleet.Status{Release: res.Linked, State: res.Result, LastApply: time.Now().UTC()}
	if res.Commit != "" {
		s.Target = fleet.Target{Commit: res.Commit, Fingerprint: st.Fingerprint()}.Key()
	}
	if res.Linked != "" {
		if r, rerr := record.ReadRelease(layout.New(st.Root, st.Link).RecordFile(res.Linked)); rerr == nil {
			s.Commit = r.Commit
		}
	}
	if err != nil {
		s.Message = err.Error()
	}
	var we *fleetgate.WaitingError
	if errors.As(err, &we) {
		// What it waits for, not only that it waits.
		s.State = we.Error()
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if rerr := ag.Report(rctx, s); rerr != nil {
		log.Warn("fleet: report status", zap.Error(rerr))
	}
}

func fleetCmd(g *globals) *cobra.Command {
	var ff fleetFlags
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "The hosts of this app and group (fleet: in desired.yaml): status, suspend, resume",
	}
	cmd.PersistentFlags().StringVar(&ff.etcd, "etcd", "", "etcd client URLs, comma-separated, overriding fleet.etcd (default: $RECONCILER_ETCD)")
	// connect runs fn with the etcd client of -f's fleet.
	connect := func(cmd *cobra.Command, fn func(ctx context.Context, cli *clientv3.Client, st *desired.State) error) error {
		st, err := g.load()
		if err != nil {
			return err
		}
		if st.Fleet == nil {
			return fmt.Errorf("%s has no fleet: section", g.file)
		}
		log, err := g.logger()
		if err != nil {
			return err
		}
		cli, err := ff.dial(st, log)
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
		defer cancel()
		return fn(ctx, cli, st)
	}

	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Every host of the group, its commit and state, and each rollout's progress",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return connect(cmd, func(ctx context.Context, cli *clientv3.Client, st *desired.State) error {
				gs, err := fleet.ReadGroup(ctx, cli, st.App, st.Fleet.Group)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(g.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(gs.Report())
				}
				writeFleetStatus(g.human(g.stdout), gs)
				return nil
			})
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")

	var reason string
	suspend := &cobra.Command{
		Use:   "suspend",
		Short: "Stop every host of the group from switching to a new target, until fleet resume",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return connect(cmd, func(ctx context.Context, cli *clientv3.Client, st *desired.State) error {
				by := apply.CurrentUser() + " at " + time.Now().UTC().Format(time.RFC3339)
				if reason != "" {
					by += ": " + reason
				}
				if err := fleet.Suspend(ctx, cli, st.App, st.Fleet.Group, by); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "Group %s/%s suspended: no host takes a switch slot until `%s`.\n", st.App, st.Fleet.Group, g.command().With("fleet resume"))
				return nil
			})
		},
	}
	suspend.Flags().StringVar(&reason, "reason", "", "why, shown by fleet status")
	resume := &cobra.Command{
		Use:   "resume",
		Short: "Let the hosts of the group switch again",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return connect(cmd, func(ctx context.Context, cli *clientv3.Client, st *desired.State) error {
				if err := fleet.Resume(ctx, cli, st.App, st.Fleet.Group); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "Group %s/%s resumed.\n", st.App, st.Fleet.Group)
				return nil
			})
		},
	}
	cmd.AddCommand(status, suspend, resume)
	return cmd
}

func writeFleetStatus(w io.Writer, gs *fleet.GroupStatus) {
	rep := gs.Report()
	fmt.Fprintf(w, "Group %s/%s", rep.App, rep.Group)
	if rep.Suspended {
		fmt.Fprint(w, " (suspended: no host takes a switch slot)")
	}
	fmt.Fprintf(w, ": %d hosts\n\n", len(rep.Hosts))
	if len(rep.Hosts) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tCOMMIT\tSTATE\tLAST APPLY")
		for _, h := range rep.Hosts {
			last := "-"
			if !h.LastApply.IsZero() {
				last = h.LastApply.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.Host, short(h.Commit), h.State, last)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	for _, r := range rep.Rollouts {
		fmt.Fprintf(w, "Rollout %s: %s\n", shortTarget(r.Target), r.State)
		if r.Halted != "" {
			fmt.Fprintf(w, "  halted: %s\n", r.Halted)
		}
		if len(r.Canaries) > 0 {
			fmt.Fprintf(w, "  canaries: %s\n", strings.Join(r.Canaries, ", "))
		}
		fmt.Fprintf(w, "  built %d, switched %d, healthy %d, failed %d, waiting %d\n",
			len(r.Built), len(r.Switched), len(r.Healthy), len(r.Failed), len(r.Waiting))
		for _, h := range slices.Sorted(maps.Keys(r.Failed)) {
			fmt.Fprintf(w, "  failed %s: %s\n", h, r.Failed[h])
		}
		switch {
		case r.MigratedBy != "":
			fmt.Fprintf(w, "  migrated by %s\n", r.MigratedBy)
		case r.Migrating != "":
			fmt.Fprintf(w, "  migrating on %s\n", r.Migrating)
		}
	}
	if len(rep.Rollouts) == 0 {
		fmt.Fprintln(w, "No rollout yet.")
	}
}

func short(commit string) string {
	if len(commit) > 8 {
		return commit[:8]
	}
	if commit == "" {
		return "-"
	}
	return commit
}

// shortTarget is <commit>-<fingerprint> with both cut to 8 characters.
func shortTarget(t string) string {
	c, fp, ok := strings.Cut(t, "-")
	if !ok {
		return t
	}
	return short(c) + "-" + short(fp)
}
