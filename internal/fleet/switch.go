package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// Slot is a held switch slot. It is bound to the agent's session lease:
// Lost is closed when the lease is gone (the agent could not reach etcd
// for its TTL), and then the slot may already be another host's.
type Slot struct {
	a     *Agent
	t     Target
	key   string
	sess  *concurrency.Session
	index int
}

// Index is which of the max_parallel slots is held.
func (s *Slot) Index() int { return s.index }

// Lost is closed when the slot's lease is gone. The executor checks it
// right before the switch: a host that lost its slot must not switch.
func (s *Slot) Lost() <-chan struct{} { return s.sess.Done() }

// Release records how the switch went and frees the slot. healthy means
// the host switched and passed its health checks; otherwise cause (which
// may be nil) is recorded as its failure, and when failures exceed
// max_failures the rollout halts in the same transaction, before the slot
// is free for anyone else. When etcd cannot be reached before ctx ends,
// the session is dropped so the lease, and the slot, expire.
func (s *Slot) Release(ctx context.Context, healthy bool, cause error) error {
	a := s.a
	for {
		err := s.release(ctx, healthy, cause)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			a.dropSession(s.sess)
			return fmt.Errorf("fleet: release slot %d for %s: %w", s.index, s.t.Key(), err)
		}
		a.log.Warn("release slot: etcd", zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(a.cfg.Poll / 4):
		}
	}
}

func (s *Slot) release(ctx context.Context, healthy bool, cause error) error {
	a := s.a
	host := a.cfg.Host
	octx, cancel := a.op(ctx)
	defer cancel()
	r, err := a.cli.Txn(octx).Then(
		clientv3.OpGet(s.key),
		clientv3.OpGet(a.rkey(s.t, "failures")),
	).Commit()
	if err != nil {
		return err
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	// The slot is deleted only while it is still this session's: after a
	// lost lease it may be another host's.
	slotRev := int64(0)
	if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		slotRev = kvs[0].ModRevision
		if clientv3.LeaseID(kvs[0].Lease) == s.sess.Lease() {
			ops = append(ops, clientv3.OpDelete(s.key))
		}
	}
	cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.key), "=", slotRev))
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if healthy {
		ops = append(ops, clientv3.OpPut(a.rkey(s.t, "healthy", host), now))
	} else {
		// The failure count is a compare-and-swap counter: two hosts
		// failing at once both count, and the one that crosses
		// max_failures halts the rollout in the same transaction.
		n, fRev := 0, int64(0)
		if kvs := r.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			n, _ = strconv.Atoi(string(kvs[0].Value))
			fRev = kvs[0].ModRevision
		}
		msg := "failed"
		if cause != nil {
			msg = cause.Error()
		}
		fk := a.rkey(s.t, "failed", host)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(a.rkey(s.t, "failures")), "=", fRev))
		// A host that fails twice counts once.
		r2, err := a.cli.Get(octx, fk)
		if err != nil {
			return err
		}
		if len(r2.Kvs) == 0 {
			n++
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(fk), "=", 0))
			ops = append(ops,
				clientv3.OpPut(a.rkey(s.t, "failures"), strconv.Itoa(n)),
				clientv3.OpPut(fk, msg))
			if n > a.cfg.MaxFailures {
				ops = append(ops, clientv3.OpPut(a.rkey(s.t, "halted"),
					fmt.Sprintf("failed hosts: %d, more than max_failures %d (last %s: %s)", n, a.cfg.MaxFailures, host, msg)))
			}
		}
	}
	tr, err := a.cli.Txn(octx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !tr.Succeeded {
		return errConflict
	}
	a.log.Info("released slot", zap.Int("slot", s.index), zap.Bool("healthy", healthy))
	return nil
}

var errConflict = errors.New("changed concurrently; trying again")

// heldBy starts the part of a waiting reason that names the slots'
// holders, which the status key leaves out.
const heldBy = " (held by "

// AcquireSwitch implements Gate.
func (a *Agent) AcquireSwitch(ctx context.Context, t Target) (*Slot, error) {
	if err := checkTarget(t); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	defer a.doneWaiting()
	var soakUntil time.Time // when this agent saw the canaries done, plus soak
	reason := ""
	var lastErr error
	for {
		if err := ctx.Err(); err != nil {
			return nil, &WaitingError{Reason: reason, Err: errors.Join(err, lastErr)}
		}
		sl, why, rev, timer, err := a.trySwitch(ctx, t, &soakUntil)
		switch {
		case errors.Is(err, ErrHalted):
			return nil, err
		case errors.Is(err, errConflict):
			continue // something changed between read and write: read again
		case err != nil:
			if ctx.Err() != nil {
				continue
			}
			a.log.Warn("etcd", zap.Error(err))
			reason, lastErr = ReasonUnreachable, err
			a.waiting(ctx, reason)
			a.pause(ctx)
			continue
		case sl != nil:
			return sl, nil
		}
		reason, lastErr = why, nil
		a.waiting(ctx, reason)
		var extra <-chan time.Time
		if timer != nil {
			extra = timer.C
		}
		prefixes := []string{a.key("slots") + "/", a.key("suspended"), a.rkey(t) + "/"}
		if strings.HasPrefix(why, waitingCanaries) {
			// A canary whose agent goes is replaced: its status key
			// going is news.
			prefixes = append(prefixes, a.key("agents")+"/")
		}
		werr := a.wait(ctx, rev, extra, prefixes...)
		if timer != nil {
			timer.Stop()
		}
		if werr != nil {
			return nil, &WaitingError{Reason: reason, Err: werr}
		}
	}
}

// pause waits a poll interval before trying an unreachable etcd again.
func (a *Agent) pause(ctx context.Context) {
	t := time.NewTimer(a.cfg.Poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// trySwitch reads once and, when it is this host's turn, takes a slot in
// one transaction. Otherwise it says why not, from which revision to
// watch, and maybe a timer (the soak) to wake up for.
func (a *Agent) trySwitch(ctx context.Context, t Target, soakUntil *time.Time) (*Slot, string, int64, *time.Timer, error) {
	sess, err := a.session(ctx)
	if err != nil {
		return nil, "", 0, nil, err
	}
	s, err := a.read(ctx, t)
	if err != nil {
		return nil, "", 0, nil, err
	}
	if err := a.halted(t, s); err != nil {
		return nil, "", 0, nil, err
	}
	if s.suspended {
		return nil, "the group is suspended", s.rev, nil, nil
	}
	host := a.cfg.Host
	if a.cfg.Canary > 0 {
		ck, ok := s.kv["canaries"]
		if !ok {
			return nil, "", 0, nil, a.chooseCanaries(ctx, t, s)
		}
		var canaries []string
		if err := json.Unmarshal([]byte(ck.value), &canaries); err != nil {
			return nil, "", 0, nil, fmt.Errorf("fleet: %s: %w", a.rkey(t, "canaries"), err)
		}
		if !contains(canaries, host) && !s.has("soaked") {
			var pending []string
			for _, c := range canaries {
				if !s.has("healthy/"+c) && !s.has("failed/"+c) {
					pending = append(pending, c)
				}
			}
			if len(pending) > 0 {
				if err := a.replaceGoneCanaries(ctx, t, s, canaries, ck.modRev, pending); err != nil {
					return nil, "", 0, nil, err
				}
				return nil, waitingCanaries + strings.Join(pending, ", "), s.rev, nil, nil
			}
			// The soak is measured on this host's own clock from when it
			// saw the canaries done: no clocks of two hosts compared.
			if a.cfg.Soak > 0 {
				now := time.Now()
				if soakUntil.IsZero() {
					*soakUntil = now.Add(a.cfg.Soak)
				}
				if left := soakUntil.Sub(now); left > 0 {
					return nil, "the canaries soak", s.rev, time.NewTimer(left), nil
				}
			}
			// The first host past the soak records it, so hosts that come
			// later do not soak again.
			tr, err := a.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(a.rkey(t, "halted")), "=", 0)},
				clientv3.OpPut(a.rkey(t, "soaked"), host))
			if err != nil {
				return nil, "", 0, nil, err
			}
			if !tr.Succeeded {
				return nil, "", 0, nil, errConflict
			}
		}
	}
	var free []int
	var holders []string
	for i := 0; i < a.cfg.MaxParallel; i++ {
		if h, ok := s.slots[i]; ok {
			holders = append(holders, h.host)
		} else {
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return nil, "waiting for a switch slot" + heldBy + strings.Join(holders, ", ") + ")", s.rev, nil, nil
	}
	// Hosts start at different free slots so that they collide less.
	h := fnv.New32a()
	h.Write([]byte(host))
	i := free[int(h.Sum32()%uint32(len(free)))]
	sk := a.key("slots", strconv.Itoa(i))
	// The one transaction that bounds the switches: the slot is taken only
	// if nobody holds it, and only while the rollout is not halted, the
	// group not suspended, the migration not failed.
	tr, err := a.txn(ctx, []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(sk), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(a.rkey(t, "halted")), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(a.key("suspended")), "=", 0),
	},
		clientv3.OpPut(sk, host+" "+t.Key(), clientv3.WithLease(sess.Lease())),
		clientv3.OpPut(a.rkey(t, "switched", host), time.Now().UTC().Format(time.RFC3339Nano)),
	)
	if err != nil {
		return nil, "", 0, nil, err
	}
	if !tr.Succeeded {
		return nil, "", 0, nil, errConflict
	}
	a.log.Info("took switch slot", zap.Int("slot", i), zap.String("target", t.Key()))
	return &Slot{a: a, t: t, key: sk, sess: sess, index: i}, "", 0, nil, nil
}

// chooseCanaries records the rollout's canaries once: the first canary
// hosts by name among the agents registered now. Sorting by name keeps
// the choice predictable (web-01 is the canary of every rollout), so
// people know which host to watch.
func (a *Agent) chooseCanaries(ctx context.Context, t Target, s *snapshot) error {
	hosts := s.agents
	if !contains(hosts, a.cfg.Host) {
		hosts = append(hosts, a.cfg.Host)
		sort.Strings(hosts)
	}
	n := min(a.cfg.Canary, len(hosts))
	b, _ := json.Marshal(hosts[:n])
	ck := a.rkey(t, "canaries")
	if _, err := a.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(ck), "=", 0)}, clientv3.OpPut(ck, string(b))); err != nil {
		return err
	}
	// Whoever won, read again.
	return errConflict
}

const waitingCanaries = "waiting for the canaries "

// replaceGoneCanaries swaps each pending canary whose agent is gone (its
// status key expired with its lease: the host is down, its agent stopped,
// or it never started) for the next live host by name that is not a
// canary yet and has not failed the target, so that a canary that never
// arrives does not hold the rollout forever. It writes only while the
// canaries are as read and the gone hosts still gone, and then returns
// errConflict so the caller reads again; nil when no canary is gone.
func (a *Agent) replaceGoneCanaries(ctx context.Context, t Target, s *snapshot, canaries []string, rev int64, pending []string) error {
	var gone []string
	for _, c := range pending {
		if !contains(s.agents, c) {
			gone = append(gone, c)
		}
	}
	elsewhere := a.elsewhere(ctx, t, pending, gone)
	if len(gone) == 0 && len(elsewhere) == 0 {
		return nil
	}
	cmps := []clientv3.Cmp{}
	for _, g := range gone {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(a.key("agents", g)), "=", 0))
	}
	for h, rev := range elsewhere {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(a.key("agents", h)), "=", rev))
		gone = append(gone, h)
	}
	var next []string
	for _, c := range canaries {
		if !contains(gone, c) {
			next = append(next, c)
		}
	}
	for _, h := range s.agents { // sorted by name
		if len(next) == len(canaries) {
			break
		}
		if !contains(next, h) && !contains(canaries, h) && !s.has("failed/"+h) {
			next = append(next, h)
		}
	}
	b, _ := json.Marshal(next)
	ck := a.rkey(t, "canaries")
	cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(ck), "=", rev))
	if _, err := a.txn(ctx, cmps, clientv3.OpPut(ck, string(b))); err != nil {
		return err
	}
	a.log.Info("canaries gone or on another build of the commit, replaced", zap.Strings("gone", gone), zap.Strings("canaries", next))
	return errConflict
}

// elsewhere returns, with the revision of their status keys, the pending
// canaries (not gone) whose agents report another build of this commit: a
// host whose commands differ from the group's is a rollout of its own and
// would never arrive in this one. Only the pending canaries' keys are
// read, and only while a host waits for them.
func (a *Agent) elsewhere(ctx context.Context, t Target, pending, gone []string) map[string]int64 {
	out := map[string]int64{}
	for _, c := range pending {
		if contains(gone, c) {
			continue
		}
		octx, cancel := a.op(ctx)
		r, err := a.cli.Get(octx, a.key("agents", c))
		cancel()
		if err != nil || len(r.Kvs) == 0 {
			continue
		}
		var st Status
		if json.Unmarshal(r.Kvs[0].Value, &st) != nil {
			continue
		}
		if st.Target != "" && st.Target != t.Key() && strings.HasPrefix(st.Target, t.Commit+"-") {
			out[c] = r.Kvs[0].ModRevision
		}
	}
	return out
}

func (a *Agent) txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	octx, cancel := a.op(ctx)
	defer cancel()
	return a.cli.Txn(octx).If(cmps...).Then(ops...).Commit()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Abandon frees the slot without recording an outcome: the apply holding
// it stopped before the switch was judged (interrupted, or a step before
// the switch failed). When etcd does not answer, the session is dropped so
// the lease, and the slot, expire.
func (s *Slot) Abandon() {
	a := s.a
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.OpTimeout)
	defer cancel()
	// Deleted only while it is still this session's.
	_, err := a.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(s.key), "=", s.sess.Lease())).
		Then(clientv3.OpDelete(s.key)).Commit()
	if err != nil {
		a.log.Warn("abandon slot: etcd", zap.Error(err))
		a.dropSession(s.sess)
		return
	}
	a.log.Info("abandoned slot", zap.Int("slot", s.index))
}
