// Package record defines the durable records the reconciler keeps on the
// host: one per release, and one for the host's link, and reads and writes
// them atomically.
package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/reconciler-dev/reconciler/internal/fsx"
)

// Release states.
const (
	Building = "building" // created; steps still to run
	Complete = "complete" // every build step and the migration succeeded
	Failed   = "failed"   // a step (or, later, a health check) failed
)

// Release is the record of one release directory.
type Release struct {
	Name        string     `json:"name"`
	App         string     `json:"app"`
	Commit      string     `json:"commit"`
	Fingerprint string     `json:"fingerprint"`
	State       string     `json:"state"`
	Created     time.Time  `json:"created"`
	Completed   *time.Time `json:"completed,omitempty"`
	Steps       []Step     `json:"steps"`
	Failure     *Failure   `json:"failure,omitempty"`
}

// Step is a step that completed in a release.
type Step struct {
	Name        string        `json:"name"`
	Fingerprint string        `json:"fingerprint"`
	Finished    time.Time     `json:"finished"`
	Duration    time.Duration `json:"duration_ns"`
}

// Failure says why a release failed.
type Failure struct {
	Step  string    `json:"step"`
	Error string    `json:"error"`
	At    time.Time `json:"at"`
}

// Done reports whether the step with this name and fingerprint is recorded.
func (r *Release) Done(name, fingerprint string) bool {
	for _, s := range r.Steps {
		if s.Name == name && s.Fingerprint == fingerprint {
			return true
		}
	}
	return false
}

// ReadRelease reads a release record.
func ReadRelease(path string) (*Release, error) {
	var r Release
	if err := readJSON(path, &r); err != nil {
		return nil, err
	}
	if r.Name == "" || r.Commit == "" || r.Fingerprint == "" {
		return nil, fmt.Errorf("read %s: record lacks name, commit or fingerprint", path)
	}
	switch r.State {
	case Building, Complete, Failed:
	default:
		return nil, fmt.Errorf("read %s: unknown state %q", path, r.State)
	}
	return &r, nil
}

// WriteRelease writes a release record atomically.
func WriteRelease(path string, r *Release) error {
	return writeJSON(path, r)
}

// Host is the record of the link: which release it was switched to, from
// which, and whether the services acted since.
type Host struct {
	Linked       string    `json:"linked"`
	Previous     string    `json:"previous,omitempty"`
	SwitchedAt   time.Time `json:"switched_at"`
	ServicesDone bool      `json:"services_done"`
	// Verified: the health checks passed for Linked since the switch.
	Verified bool `json:"verified"`
}

// ReadHost reads the host record; a missing one is (nil, nil).
func ReadHost(path string) (*Host, error) {
	var h Host
	if err := readJSON(path, &h); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &h, nil
}

// WriteHost writes the host record atomically.
func WriteHost(path string, h *Host) error { return writeJSON(path, h) }

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return fsx.WriteFileAtomic(path, append(b, '\n'), 0o644)
}
