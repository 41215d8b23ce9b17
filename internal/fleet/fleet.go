package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/fleetgate"
)

// Gate is what the executor and the daemon ask before acting on a new
// target. A host without fleet: has no Gate.
type Gate interface {
	// Report publishes the host's status under its lease, for `fleet
	// status` and the canary choice.
	Report(ctx context.Context, s Status) error
	// Migrate decides who migrates t. When the turn says Run, the caller
	// migrates and then calls Finish with the result; otherwise DoneBy
	// names the host that migrated. It waits while another host holds the
	// migration, and returns a *WaitingError when ctx ends first.
	Migrate(ctx context.Context, t Target) (*MigrateTurn, error)
	// AcquireSwitch waits for the host's turn to switch to t: the canaries
	// healthy and soaked, a free slot, the rollout not halted. The caller
	// switches, acts on its services, checks health and then calls
	// Slot.Release. It returns an error wrapping ErrHalted when the rollout
	// stopped, and a *WaitingError when ctx ends before the turn came.
	AcquireSwitch(ctx context.Context, t Target) (*Slot, error)
}

var _ Gate = (*Agent)(nil)

// The values of a rollout are fleetgate's, so that the executor knows
// them without linking etcd.
type (
	Target       = fleetgate.Target
	Status       = fleetgate.Status
	WaitingError = fleetgate.WaitingError
)

// ErrHalted: see fleetgate.ErrHalted.
var ErrHalted = fleetgate.ErrHalted

// Waiting reasons and states: see fleetgate.
const (
	ReasonUnreachable = fleetgate.ReasonUnreachable
	StateBuilt        = fleetgate.StateBuilt
)

func checkTarget(t Target) error {
	for _, s := range []string{t.Commit, t.Fingerprint} {
		if s == "" || strings.ContainsAny(s, "/ \t\r\n\x00") {
			return fmt.Errorf("target %q: commit and fingerprint must be plain, non-empty names", t.Key())
		}
	}
	return nil
}

// Config is an agent's part in its group: fleet: plus who it is.
type Config struct {
	App, Group, Host string
	MaxParallel      int
	Canary           int
	Soak             time.Duration
	MaxFailures      int
	// MigrateEach: every host migrates (migrate: each); otherwise one
	// host per target does.
	MigrateEach bool
	// TTL is the session lease's: how long a killed agent holds its slot.
	// Default 10s.
	TTL time.Duration
	// OpTimeout bounds each etcd request; past it etcd counts as
	// unreachable. Default 5s.
	OpTimeout time.Duration
	// Poll is how often a waiting agent reads again besides the events
	// its watches deliver: a watch on an unreachable etcd says nothing.
	// Default 5s.
	Poll time.Duration
	// OnWait, when set, is called with the reason each time it changes
	// while the agent waits.
	OnWait func(reason string)
}

// Agent is one host's member of its group: it holds the session lease its
// status, slots and migration lock are bound to. Safe for concurrent use.
type Agent struct {
	cli    *clientv3.Client
	cfg    Config
	log    *zap.Logger
	prefix string

	ctx    context.Context // the agent's lifetime: its sessions' keepalives
	cancel context.CancelFunc

	mu      sync.Mutex
	sess    *concurrency.Session
	last    Status // the last reported status, re-put on a new session
	waitMsg string
	// waitStatus is the reason last written to the status key: waitMsg
	// without who holds the slots.
	waitStatus string
}

// New makes the agent for cfg on cli, which the caller owns and closes
// after Close. It does not contact etcd: the session is made when first
// needed, so an agent starts while etcd is down.
func New(cli *clientv3.Client, cfg Config, log *zap.Logger) (*Agent, error) {
	for _, s := range []struct{ name, v string }{{"app", cfg.App}, {"group", cfg.Group}, {"host", cfg.Host}} {
		if s.v == "" || strings.ContainsAny(s.v, "/ \t\r\n\x00") {
			return nil, fmt.Errorf("fleet: %s %q must be a plain, non-empty name", s.name, s.v)
		}
	}
	if cfg.MaxParallel < 1 {
		return nil, fmt.Errorf("fleet: max_parallel %d must be at least 1", cfg.MaxParallel)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 5 * time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Agent{
		cli: cli, cfg: cfg, ctx: ctx, cancel: cancel,
		log:    log.Named("fleet").With(zap.String("host", cfg.Host), zap.String("group", cfg.Group)),
		prefix: GroupPrefix(cfg.App, cfg.Group),
		last:   Status{Host: cfg.Host, State: "starting"},
	}, nil
}

// GroupPrefix is where a group's keys live.
func GroupPrefix(app, group string) string {
	return "/reconciler/" + app + "/" + group + "/"
}

// Close revokes the agent's lease: its status key, slots and migration
// lock go at once rather than after the TTL.
func (a *Agent) Close() error {
	a.mu.Lock()
	s := a.sess
	a.sess = nil
	a.mu.Unlock()
	defer a.cancel()
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.OpTimeout)
	defer cancel()
	s.Orphan()
	if _, err := a.cli.Revoke(ctx, s.Lease()); err != nil {
		return fmt.Errorf("fleet: revoke the lease of %s: %w", a.cfg.Host, err)
	}
	return nil
}

// session returns a live session, making one (and re-putting the status
// under it) when there is none or the last one's lease was lost.
func (a *Agent) session(ctx context.Context) (*concurrency.Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess != nil {
		select {
		case <-a.sess.Done():
			a.log.Warn("session lease lost", zap.Int64("lease", int64(a.sess.Lease())))
			a.sess = nil
		default:
			return a.sess, nil
		}
	}
	octx, cancel := a.op(ctx)
	defer cancel()
	// Grant under the request's timeout; the keepalive under the agent's
	// lifetime, not the request's.
	g, err := a.cli.Grant(octx, int64((a.cfg.TTL+time.Second-1)/time.Second))
	if err != nil {
		return nil, fmt.Errorf("grant a lease: %w", err)
	}
	s, err := concurrency.NewSession(a.cli, concurrency.WithLease(g.ID), concurrency.WithContext(a.ctx))
	if err != nil {
		return nil, fmt.Errorf("keep the lease alive: %w", err)
	}
	b, _ := json.Marshal(a.last)
	if _, err := a.cli.Put(octx, a.key("agents", a.cfg.Host), string(b), clientv3.WithLease(s.Lease())); err != nil {
		s.Orphan()
		return nil, fmt.Errorf("register %s: %w", a.cfg.Host, err)
	}
	a.sess = s
	return s, nil
}

// dropSession gives up a session that may still hold keys this agent can
// no longer release: its keepalive stops, so the lease expires within its
// TTL even if the revoke does not reach etcd.
func (a *Agent) dropSession(s *concurrency.Session) {
	a.mu.Lock()
	if a.sess == s {
		a.sess = nil
	}
	a.mu.Unlock()
	s.Orphan()
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.OpTimeout)
	defer cancel()
	a.cli.Revoke(ctx, s.Lease())
}

func (a *Agent) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(clientv3.WithRequireLeader(ctx), a.cfg.OpTimeout)
}

func (a *Agent) key(parts ...string) string { return a.prefix + strings.Join(parts, "/") }

func (a *Agent) rkey(t Target, parts ...string) string {
	return a.key(append([]string{"rollouts", t.Key()}, parts...)...)
}

// Report puts the host's status under its lease.
func (a *Agent) Report(ctx context.Context, s Status) error {
	s.Host = a.cfg.Host
	a.mu.Lock()
	a.last = s
	a.mu.Unlock()
	sess, err := a.session(ctx)
	if err != nil {
		return fmt.Errorf("fleet: report %s: %w", a.cfg.Host, err)
	}
	b, _ := json.Marshal(s)
	octx, cancel := a.op(ctx)
	defer cancel()
	ops := []clientv3.Op{clientv3.OpPut(a.key("agents", a.cfg.Host), string(b), clientv3.WithLease(sess.Lease()))}
	if s.State == StateBuilt && s.Target != "" && !strings.ContainsAny(s.Target, "/ \t\r\n\x00") {
		// Kept with the rollout, not the lease: the progress outlives
		// the agent that reported it, as switched/ and healthy/ do.
		ops = append(ops, clientv3.OpPut(a.key("rollouts", s.Target, "built", a.cfg.Host), time.Now().UTC().Format(time.RFC3339Nano)))
	}
	if _, err := a.cli.Txn(octx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("fleet: report %s: %w", a.cfg.Host, err)
	}
	return nil
}

// waiting tells OnWait and the host's status key why the agent waits,
// when that changed. The status key is not told who holds the slots
// (slots/ says so): every waiting host rewrote its status at every slot
// change, O(hosts²) etcd writes per rollout.
func (a *Agent) waiting(ctx context.Context, reason string) {
	brief, _, _ := strings.Cut(reason, heldBy)
	a.mu.Lock()
	changed := a.waitMsg != reason
	rewrite := a.waitStatus != brief
	a.waitMsg, a.waitStatus = reason, brief
	st := a.last
	a.mu.Unlock()
	if !changed {
		return
	}
	a.log.Info("waiting", zap.String("reason", reason))
	// The status first, OnWait after: whoever hears of the wait finds it
	// in etcd.
	defer func() {
		if a.cfg.OnWait != nil {
			a.cfg.OnWait(reason)
		}
	}()
	if reason != ReasonUnreachable && rewrite {
		// Best effort: the status is for people; the wait goes on anyway.
		st.State = "waiting: " + brief
		b, _ := json.Marshal(st)
		a.mu.Lock()
		sess := a.sess
		a.mu.Unlock()
		if sess != nil {
			octx, cancel := a.op(ctx)
			a.cli.Put(octx, a.key("agents", a.cfg.Host), string(b), clientv3.WithLease(sess.Lease()))
			cancel()
		}
	}
}

func (a *Agent) doneWaiting() {
	a.mu.Lock()
	a.waitMsg, a.waitStatus = "", ""
	a.mu.Unlock()
}

// wait returns after an event under one of prefixes since rev, a poll
// tick, or extra (nil for none); an error when ctx ended.
func (a *Agent) wait(ctx context.Context, rev int64, extra <-chan time.Time, prefixes ...string) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	cases := make([]clientv3.WatchChan, len(prefixes))
	for i, p := range prefixes {
		cases[i] = a.cli.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	}
	poll := time.NewTimer(a.cfg.Poll)
	defer poll.Stop()
	merged := make(chan struct{}, 1)
	for _, wc := range cases {
		go func() {
			// An event, or the channel closed (the watch failed, or
			// wctx ended): either way, read again.
			<-wc
			select {
			case merged <- struct{}{}:
			default:
			}
		}()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-merged:
	case <-poll.C:
	case <-extra:
	}
	return nil
}

// snapshot is one consistent read of what a decision needs.
type snapshot struct {
	rev       int64
	slots     map[int]slotHolder // index → holder
	suspended bool
	agents    []string
	kv        map[string]kvInfo // the rollout's keys, relative to it
}

type slotHolder struct {
	host   string
	lease  clientv3.LeaseID
	modRev int64
}

type kvInfo struct {
	value  string
	modRev int64
}

func (s *snapshot) has(k string) bool { _, ok := s.kv[k]; return ok }

func (a *Agent) read(ctx context.Context, t Target) (*snapshot, error) {
	octx, cancel := a.op(ctx)
	defer cancel()
	r, err := a.cli.Txn(octx).Then(
		clientv3.OpGet(a.key("slots")+"/", clientv3.WithPrefix()),
		clientv3.OpGet(a.key("suspended")),
		clientv3.OpGet(a.key("agents")+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(a.rkey(t)+"/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, err
	}
	s := &snapshot{rev: r.Header.Revision, slots: map[int]slotHolder{}, kv: map[string]kvInfo{}}
	for _, kv := range r.Responses[0].GetResponseRange().Kvs {
		i, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), a.key("slots")+"/"))
		if err != nil {
			continue
		}
		host, _, _ := strings.Cut(string(kv.Value), " ")
		s.slots[i] = slotHolder{host: host, lease: clientv3.LeaseID(kv.Lease), modRev: kv.ModRevision}
	}
	s.suspended = len(r.Responses[1].GetResponseRange().Kvs) > 0
	for _, kv := range r.Responses[2].GetResponseRange().Kvs {
		s.agents = append(s.agents, strings.TrimPrefix(string(kv.Key), a.key("agents")+"/"))
	}
	sort.Strings(s.agents)
	for _, kv := range r.Responses[3].GetResponseRange().Kvs {
		s.kv[strings.TrimPrefix(string(kv.Key), a.rkey(t)+"/")] = kvInfo{value: string(kv.Value), modRev: kv.ModRevision}
	}
	return s, nil
}

func (a *Agent) halted(t Target, s *snapshot) error {
	if h, ok := s.kv["halted"]; ok {
		return fmt.Errorf("fleet: target %s: %w: %s", t.Key(), ErrHalted, h.value)
	}
	return nil
}
