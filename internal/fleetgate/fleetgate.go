// Package fleetgate is what the executor asks of a fleet, without etcd:
// the interface and values internal/fleet implements. The executor imports
// this, never internal/fleet, so a binary links the etcd client (gRPC and
// protobuf, whose inits every command would pay for) only where a fleet is
// wired in.
package fleetgate

import (
	"context"
	"errors"
	"time"
)

// Gate is what the executor and the daemon ask before acting on a new
// target. A host without fleet: has no Gate. See fleet.Agent.
type Gate interface {
	// Report publishes the host's status, for `fleet status`.
	Report(ctx context.Context, s Status) error
	// Migrate decides who migrates t: this host (Turn.Run, then
	// Turn.Finish), or another (Turn.DoneBy). A *WaitingError when ctx
	// ends first; an error wrapping ErrHalted when the rollout stopped.
	Migrate(ctx context.Context, t Target) (Turn, error)
	// AcquireSwitch waits for the host's turn to switch to t. The caller
	// switches, acts on its services, checks health, then releases the
	// slot. Errors as Migrate's.
	AcquireSwitch(ctx context.Context, t Target) (Slot, error)
}

// Turn is the answer of Gate.Migrate.
type Turn interface {
	Run() bool      // this host migrates, then calls Finish
	DoneBy() string // else: the host that migrated
	// Finish records the migration's outcome; a failure halts the rollout.
	Finish(ctx context.Context, cause error) error
	// Abandon gives the turn up without an outcome (interrupted).
	Abandon()
}

// Slot is a held switch slot.
type Slot interface {
	// Lost is closed when the slot may be another host's: the host must
	// not switch.
	Lost() <-chan struct{}
	// Release records how the switch went and frees the slot.
	Release(ctx context.Context, healthy bool, cause error) error
	// Abandon frees the slot without an outcome (interrupted, or a step
	// before the switch failed).
	Abandon()
}

// ErrHalted is wrapped by the error of a rollout that stopped: too many
// hosts failed, or its migration failed. A person must act (a new commit
// starts a new rollout).
var ErrHalted = errors.New("rollout halted")

// WaitingError says the host's turn has not come: retry later. Reason is
// what it waits for, ReasonUnreachable among them.
type WaitingError struct {
	Reason string
	Err    error // the context's error or the last etcd error
}

func (e *WaitingError) Error() string { return "waiting: " + e.Reason }
func (e *WaitingError) Unwrap() error { return e.Err }

// ReasonUnreachable is the waiting reason while etcd does not answer.
const ReasonUnreachable = "etcd unreachable"

// StateBuilt is the state an agent reports once the target is built
// (and migrated), before it asks for a switch slot.
const StateBuilt = "built"

// Target is one rollout: a commit built with a fingerprint
// (desired.State.Fingerprint).
type Target struct {
	Commit, Fingerprint string
}

// Key is the target's name in etcd keys.
func (t Target) Key() string { return t.Commit + "-" + t.Fingerprint }

// Status is what an agent reports about its host.
type Status struct {
	Host      string    `json:"host"` // filled in by the agent
	Release   string    `json:"release,omitempty"`
	Commit    string    `json:"commit,omitempty"`
	Target    string    `json:"target,omitempty"` // Target.Key
	State     string    `json:"state"`            // e.g. built, waiting: …, ok, failed
	LastApply time.Time `json:"last_apply,omitzero"`
	Message   string    `json:"message,omitempty"`
}
