package record

import (
	"errors"
	"io/fs"
	"os"
	"time"
)

// Suspension says a person stopped the reconciler from deploying: while it
// exists, apply refuses and the daemon only reports. `reconciler rollback`
// writes one, so the daemon does not move the host back.
type Suspension struct {
	By     string    `json:"by"` // the user who suspended
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
	// Release is what the link pointed at then: after a rollback, the
	// release rolled back to.
	Release string `json:"release,omitempty"`
}

// Describe is one line: who, when and why.
func (s *Suspension) Describe() string {
	msg := "suspended by " + s.By
	if !s.At.IsZero() {
		msg += " at " + s.At.UTC().Format(time.RFC3339)
	}
	if s.Reason != "" {
		msg += ": " + s.Reason
	}
	return msg
}

// ReadSuspension reads the suspension at path: nil when the host is not
// suspended.
func ReadSuspension(path string) (*Suspension, error) {
	var s Suspension
	err := readJSON(path, &s)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		// An unreadable suspension still suspends: a person wrote it.
		return &Suspension{By: "unknown", Reason: "the suspension record cannot be read: " + err.Error()}, nil
	}
	return &s, nil
}

// WriteSuspension suspends.
func WriteSuspension(path string, s *Suspension) error { return writeJSON(path, s) }

// RemoveSuspension resumes; it reports whether the host was suspended.
func RemoveSuspension(path string) (bool, error) {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// ReadApplied reads the snapshot of the desired state the last successful
// apply reconciled; nil when there is none (or it cannot be read: it only
// serves to say what changed).
func ReadApplied(path string) map[string]string {
	var m map[string]string
	if err := readJSON(path, &m); err != nil {
		return nil
	}
	return m
}

// WriteApplied keeps the snapshot of the desired state just reconciled.
func WriteApplied(path string, m map[string]string) error { return writeJSON(path, m) }
