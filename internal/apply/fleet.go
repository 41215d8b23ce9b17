package apply

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/fleetgate"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// ResultWaiting is the result of an apply whose fleet turn had not come
// when it ended: the release is built, the host stays on its release, and
// the next apply asks again.
const ResultWaiting = "waiting"

// releaseTimeout bounds how long recording the switch's outcome in etcd
// may take after the apply's own context ended.
const releaseTimeout = 30 * time.Second

// gated reports whether p takes the host to a new target, the only plans
// the fleet is asked about: never a revert, a rollback, a blocked plan
// holding the last good release, or a repair back to the release the
// reconciler last switched this host to and verified (drift is repaired
// without etcd). A switch that a kill cut short — the link on the target,
// its checks never passed — is finished under a slot like any other, so
// the rollout hears how it went.
func (e *executor) gated(p *plan.Plan) bool {
	if e.Fleet == nil || !p.RevertsOnFailure() || p.Target == "" {
		return false
	}
	h, err := record.ReadHost(e.l.HostFile())
	if err != nil {
		h = nil
	}
	finishing := false
	if p.Target == p.Linked || h != nil && h.Linked == p.Target {
		if h == nil || h.Linked != p.Target || h.Verified {
			return false
		}
		finishing = true
	}
	for _, s := range p.Steps {
		switch s.Action {
		case plan.Switch, plan.Migrate:
			return true
		case plan.Service, plan.Health:
			if finishing {
				return true
			}
		}
	}
	return false
}

// holdOwnRelease puts the link back on the release the reconciler last
// switched this host to and verified, when it drifted (removed or moved by
// hand), before a gated plan waits for its turn: however long the fleet
// makes it wait, etcd up or not, the host serves its own release.
func (e *executor) holdOwnRelease(p *plan.Plan) {
	h, err := record.ReadHost(e.l.HostFile())
	if err != nil || h == nil || !h.Verified || h.Linked == "" || h.Linked == p.Target {
		return
	}
	want := layout.LinkTarget(h.Linked)
	if got, err := os.Readlink(e.l.LinkPath()); err == nil && got == want {
		return
	}
	r, err := record.ReadRelease(e.l.RecordFile(h.Linked))
	if err != nil || r.State != record.Complete {
		return
	}
	if err := fsx.SwitchLink(e.l.LinkPath(), want); err != nil {
		e.log.Warn("fleet: put the link back on the host's own release", zap.String("release", h.Linked), zap.Error(err))
		return
	}
	e.log.Info("fleet: link put back on the host's own release before waiting for a turn", zap.String("release", h.Linked))
}

// turn asks the fleet before the migration and before the switch of a
// gated plan. A migration another host ran is recorded done here without
// running it.
func (e *executor) turn(ctx context.Context, p *plan.Plan, s plan.Step) error {
	t := fleetgate.Target{Commit: p.Commit, Fingerprint: p.Fingerprint}
	if !e.reported {
		// The release is built: say so once, for `fleet status`. Best
		// effort: the Gate's own call says when etcd is out of reach.
		e.reported = true
		e.Fleet.Report(ctx, fleetgate.Status{Release: p.Linked, Commit: p.ShipsFrom, Target: t.Key(), State: fleetgate.StateBuilt, LastApply: e.Now().UTC()})
	}
	if e.FleetWait > 0 {
		// One budget for every wait of the plan: the migration's and
		// the slot's together.
		if e.waitUntil.IsZero() {
			e.waitUntil = time.Now().Add(e.FleetWait)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, e.waitUntil)
		defer cancel()
	}
	switch s.Action {
	case plan.Migrate:
		mt, err := e.Fleet.Migrate(ctx, t)
		if err != nil {
			return classify(describe(s), err)
		}
		if !mt.Run() {
			e.doneBy = mt.DoneBy()
			return nil
		}
		e.doneBy = ""
		e.migrateTurn = mt
	case plan.Switch, plan.Service, plan.Health:
		// Once per plan: at its switch, or at the first service action
		// of a switch being finished.
		if e.slotAsked {
			return nil
		}
		e.slotAsked = true
		sl, err := e.Fleet.AcquireSwitch(ctx, t)
		if err != nil {
			return classify(describe(s), err)
		}
		e.slot = sl
	}
	return nil
}

// slotLost is the last check before the link moves: a host whose lease
// expired (etcd out of reach for its TTL) may have lost the slot to
// another, and must not switch.
func (e *executor) slotLost() error {
	if e.slot == nil {
		return nil
	}
	select {
	case <-e.slot.Lost():
		e.slot = nil
		return &fleetgate.WaitingError{Reason: "the switch slot was lost (etcd out of reach)"}
	default:
		return nil
	}
}

// releaseSlot records the switch's outcome and frees the slot, even when
// ctx ended: the other hosts wait for it.
func (e *executor) releaseSlot(ctx context.Context, healthy bool, cause error) {
	sl := e.slot
	e.slot = nil
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := sl.Release(rctx, healthy, cause); err != nil {
		// The slot's lease was dropped: it frees itself within its TTL.
		e.log.Warn("fleet: release the switch slot", zap.Error(err))
	}
}

// dropSlot frees a slot an apply still holds when its plan stopped
// before the last check (interrupted, or a step before the switch
// failed): no outcome is recorded, the slot just goes.
func (e *executor) dropSlot() {
	if e.slot == nil {
		return
	}
	e.slot.Abandon()
	e.slot = nil
}

// finishMigration tells the fleet how this host's migration went; a
// failure halts the rollout for every host.
func (e *executor) finishMigration(ctx context.Context, err error) {
	mt := e.migrateTurn
	e.migrateTurn = nil
	if mt == nil {
		return
	}
	if ctx.Err() != nil && err != nil {
		// Interrupted, not failed: the lock goes, the next host (or
		// this one's next apply) migrates.
		mt.Abandon()
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if ferr := mt.Finish(rctx, err); ferr != nil {
		e.log.Warn("fleet: record the migration", zap.Error(ferr))
	}
}

func doneByNote(host string) string { return fmt.Sprintf("migrate: done by %s", host) }
