package fleet

import (
	"context"

	"github.com/reconciler-dev/reconciler/internal/fleetgate"
)

// AsGate is the agent as the executor's fleetgate.Gate.
func (a *Agent) AsGate() fleetgate.Gate { return gate{a} }

type gate struct{ a *Agent }

func (g gate) Report(ctx context.Context, s Status) error { return g.a.Report(ctx, s) }

func (g gate) Migrate(ctx context.Context, t Target) (fleetgate.Turn, error) {
	m, err := g.a.Migrate(ctx, t)
	if err != nil {
		return nil, err
	}
	return turn{m}, nil
}

func (g gate) AcquireSwitch(ctx context.Context, t Target) (fleetgate.Slot, error) {
	s, err := g.a.AcquireSwitch(ctx, t)
	if err != nil {
		return nil, err
	}
	return s, nil
}

type turn struct{ m *MigrateTurn }

func (t turn) Run() bool                                     { return t.m.Run }
func (t turn) DoneBy() string                                { return t.m.DoneBy }
func (t turn) Finish(ctx context.Context, cause error) error { return t.m.Finish(ctx, cause) }
func (t turn) Abandon()                                      { t.m.Abandon() }

var _ fleetgate.Slot = (*Slot)(nil)
