package apply

import (
	"errors"

	"github.com/reconciler-dev/reconciler/internal/fleetgate"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/lock"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// Kind says what a caller should do about a failed apply.
type Kind string

const (
	// NeedsPerson: trying again with the same desired state will fail the
	// same way (a failed build, a bad host state, a missing commit).
	NeedsPerson Kind = "needs-person"
	// RetryLater: the cause may pass (the remote did not answer, the lock
	// is held).
	RetryLater Kind = "retry-later"
)

// Error is a failed apply.
type Error struct {
	Kind Kind
	Step string // the step that failed, "" when none ran
	Err  error
}

func (e *Error) Error() string {
	if e.Step == "" {
		return e.Err.Error()
	}
	return e.Step + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrInterrupted is a step stopped from outside: Ctrl-C, SIGTERM, the
// daemon's deadline. Nothing failed; the next apply resumes there.
var ErrInterrupted = errors.New("interrupted; the next apply resumes here")

// BlockedError is returned when the target failed before and --retry was
// not given. What to do about it (the exact command) is the caller's to
// say: only it knows how it was invoked.
type BlockedError struct {
	Release, Step, Msg string
	// Policy is set when no release failed: migrate.on_rollback refused
	// a switch to a release that lacks applied migrations.
	Policy string
}

func (e *BlockedError) Error() string {
	if e.Policy != "" {
		return "not switching: " + e.Msg
	}
	return "target release " + e.Release + " failed before at step " + e.Step + "; not retrying it"
}

// SuspendedError is an apply refused while deploys are suspended. It says
// who suspended, when and why; the command to resume is the caller's.
type SuspendedError struct{ Suspension *record.Suspension }

func (e *SuspendedError) Error() string { return "deploys are " + e.Suspension.Describe() }

func classify(step string, err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	kind := NeedsPerson
	var held *lock.HeldError
	var ge *gitcache.Error
	switch {
	case errors.As(err, &held):
		kind = RetryLater
	case errors.As(err, &ge) && ge.Transient:
		kind = RetryLater
	case errors.Is(err, ErrInterrupted):
		kind = RetryLater
	case errors.As(err, new(*fleetgate.WaitingError)):
		// The fleet's turn has not come: the release is built, the next
		// apply switches when it does.
		kind = RetryLater
	}
	return &Error{Kind: kind, Step: step, Err: err}
}
