package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// MigrateTurn is the answer of Migrate.
type MigrateTurn struct {
	// Run: this host migrates, then calls Finish.
	Run bool
	// DoneBy names the host that migrated the target, when not Run.
	DoneBy string

	a    *Agent
	t    Target
	sess *concurrency.Session // nil with migrate: each
}

// Finish records the migration's outcome: done by this host, or failed,
// which halts the rollout for every host. With migrate: each it does
// nothing. It retries an unreachable etcd until ctx ends.
func (m *MigrateTurn) Finish(ctx context.Context, cause error) error {
	if m.sess == nil || !m.Run {
		return nil
	}
	a, t, host := m.a, m.t, m.a.cfg.Host
	ops := []clientv3.Op{clientv3.OpDelete(a.rkey(t, "migrate", "lock"))}
	if cause == nil {
		ops = append(ops, clientv3.OpPut(a.rkey(t, "migrate", "done"), host))
	} else {
		ops = append(ops,
			clientv3.OpPut(a.rkey(t, "migrate", "failed"), host+": "+cause.Error()),
			clientv3.OpPut(a.rkey(t, "halted"), "the migration failed on "+host+": "+cause.Error()))
	}
	for {
		_, err := a.txn(ctx, nil, ops...)
		if err == nil {
			a.log.Info("migration recorded", zap.String("target", t.Key()), zap.Bool("ok", cause == nil))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fleet: record the migration of %s: %w", t.Key(), err)
		}
		a.pause(ctx)
	}
}

// Migrate implements Gate. The first host to ask takes the rollout's
// migration lock, a key created only if absent under its lease; the
// others wait for the record it leaves. A lock whose holder died frees
// itself with the lease, and the next host migrates.
func (a *Agent) Migrate(ctx context.Context, t Target) (*MigrateTurn, error) {
	if err := checkTarget(t); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if a.cfg.MigrateEach {
		return &MigrateTurn{Run: true}, nil
	}
	defer a.doneWaiting()
	reason := ""
	for {
		if err := ctx.Err(); err != nil {
			return nil, &WaitingError{Reason: reason, Err: err}
		}
		turn, why, rev, err := a.tryMigrate(ctx, t)
		switch {
		case errors.Is(err, ErrHalted):
			return nil, err
		case errors.Is(err, errConflict):
			continue
		case err != nil:
			if ctx.Err() != nil {
				continue
			}
			a.log.Warn("etcd", zap.Error(err))
			reason = ReasonUnreachable
			a.waiting(ctx, reason)
			a.pause(ctx)
			continue
		case turn != nil:
			return turn, nil
		}
		reason = why
		a.waiting(ctx, reason)
		if err := a.wait(ctx, rev, nil, a.rkey(t)+"/"); err != nil {
			return nil, &WaitingError{Reason: reason, Err: err}
		}
	}
}

func (a *Agent) tryMigrate(ctx context.Context, t Target) (*MigrateTurn, string, int64, error) {
	sess, err := a.session(ctx)
	if err != nil {
		return nil, "", 0, err
	}
	s, err := a.read(ctx, t)
	if err != nil {
		return nil, "", 0, err
	}
	if f, ok := s.kv["migrate/failed"]; ok {
		return nil, "", 0, fmt.Errorf("fleet: target %s: %w: the migration failed on %s", t.Key(), ErrHalted, f.value)
	}
	if d, ok := s.kv["migrate/done"]; ok {
		return &MigrateTurn{DoneBy: d.value}, "", 0, nil
	}
	if err := a.halted(t, s); err != nil {
		return nil, "", 0, err
	}
	if l, ok := s.kv["migrate/lock"]; ok {
		holder, _, _ := strings.Cut(l.value, " ")
		return nil, "waiting for " + holder + " to migrate", s.rev, nil
	}
	lk := a.rkey(t, "migrate", "lock")
	tr, err := a.txn(ctx, []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(a.rkey(t, "migrate", "done")), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(a.rkey(t, "migrate", "failed")), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(a.rkey(t, "halted")), "=", 0),
	}, clientv3.OpPut(lk, a.cfg.Host+" "+time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(sess.Lease())))
	if err != nil {
		return nil, "", 0, err
	}
	if !tr.Succeeded {
		return nil, "", 0, errConflict
	}
	a.log.Info("took the migration lock", zap.String("target", t.Key()))
	return &MigrateTurn{Run: true, a: a, t: t, sess: sess}, "", 0, nil
}

// Abandon gives up the migration lock without a record: the migration was
// interrupted, not failed, and the next host to ask migrates. When etcd
// does not answer, the session is dropped so the lease, and the lock,
// expire.
func (m *MigrateTurn) Abandon() {
	if m.sess == nil || !m.Run {
		return
	}
	a := m.a
	lk := a.rkey(m.t, "migrate", "lock")
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.OpTimeout)
	defer cancel()
	_, err := a.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(lk), "=", m.sess.Lease())).
		Then(clientv3.OpDelete(lk)).Commit()
	if err != nil {
		a.log.Warn("abandon the migration lock: etcd", zap.Error(err))
		a.dropSession(m.sess)
	}
}
