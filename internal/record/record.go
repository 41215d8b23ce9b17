// Package record defines the durable records the reconciler keeps on the
// host — one per release, and one for the host's link — and the release
// state machine: Release.Apply is the only place a release's state changes.
package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/scrub"
)

// Release states.
const (
	Building = "building" // created; steps still to run
	Complete = "complete" // every build step and the migration succeeded
	Failed   = "failed"   // a build step, the migration, a service action or a health check failed
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
	// HealthyAt is the last time the release was verified serving while
	// linked: its services acted and its health checks passed. The
	// rollback target is the release other than the linked one that was
	// healthy last; a release never healthy is never one.
	HealthyAt *time.Time `json:"healthy_at,omitempty"`
	Steps     []Step     `json:"steps"`
	Failure   *Failure   `json:"failure,omitempty"`
	// Adopted is set on a release another tool built (Capistrano,
	// deploy_helper) that `reconciler adopt` took over.
	Adopted *Adoption `json:"adopted,omitempty"`
}

// Adoption says where an adopted release came from.
type Adoption struct {
	At   time.Time `json:"at"`
	By   string    `json:"by,omitempty"`
	Tool string    `json:"tool"` // "capistrano" or "deploy_helper": whose layout it was
	// Linked: the link pointed at it when it was adopted.
	Linked bool `json:"linked,omitempty"`
}

// AdoptedFingerprint is the fingerprint of an adopted release. Another
// tool built it, by steps the reconciler does not know, so no desired
// build ever matches it: a deploy of its commit builds a release of the
// reconciler's own, while the adopted one stays a rollback target (by
// name: reconciler rollback --to).
const AdoptedFingerprint = "adopted"

// Adopt makes the record of a release another tool built, found on disk
// with its commit. An adopted release is born complete: it is not a
// transition of the state machine, since the reconciler saw none of its
// steps. The one the link points at served when it was adopted, so it is
// recorded healthy then: the rollback target once a new release is linked.
func Adopt(name, app, commit string, created time.Time, a Adoption) *Release {
	at := a.At.UTC()
	a.At = at
	created = created.UTC()
	r := &Release{Name: name, App: app, Commit: commit, Fingerprint: AdoptedFingerprint, State: Complete,
		Created: created, Completed: &created, Steps: []Step{}, Adopted: &a}
	if a.Linked {
		r.HealthyAt = &at
	}
	return r
}

// Step is a step that completed in a release.
type Step struct {
	Name        string        `json:"name"`
	Fingerprint string        `json:"fingerprint"`
	Finished    time.Time     `json:"finished"`
	Duration    time.Duration `json:"duration_ns"`
	// Cache is the cache entry ("<step>/<key>") a cached build step
	// linked into the release; CacheHit: it was on disk already.
	Cache    string `json:"cache,omitempty"`
	CacheHit bool   `json:"cache_hit,omitempty"`
}

// Failure says why a release failed.
type Failure struct {
	Step   string    `json:"step"`
	Error  string    `json:"error"`
	Output string    `json:"output,omitempty"` // the last lines the failing command printed
	At     time.Time `json:"at"`
}

// CacheEntries are the cache entries the release links: it keeps them.
func (r *Release) CacheEntries() []string {
	var out []string
	for _, s := range r.Steps {
		if s.Cache != "" {
			out = append(out, s.Cache)
		}
	}
	return out
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

// Event is a named transition of the release state machine:
//
//	building --StepDone (last step)--> complete
//	building --Built-----------------> complete   (every step already recorded: a record write was lost)
//	building --BuildFailed-----------> failed
//	failed   --Rebuild---------------> building   (apply --retry of a build failure)
//	complete --SwitchFailed----------> failed     (a service action or health check failed while linked)
//	failed   --SwitchFailed----------> failed     (failed again after apply --retry: the failure is updated)
//	failed   --Relink----------------> complete   (apply --retry of a built release: linked again, judged anew)
//	complete, failed --Healthy-------> complete   (verified serving while linked)
//	complete, failed --MigrateFailed-> failed     (a migrate run again, or a reverse of its migrations, failed)
type Event string

const (
	StepDone     Event = "step-done"
	Built        Event = "built"
	BuildFailed  Event = "build-failed"
	Rebuild      Event = "rebuild"
	SwitchFailed Event = "switch-failed"
	Relink       Event = "relink"
	Healthy      Event = "healthy"
	// MigrateFailed: a complete release failed at a migration step run
	// for it before its switch: its migrate run again (going forward
	// after a reverse), or the reverse of migrations it lacks.
	MigrateFailed Event = "migrate-failed"
)

// Change is one event with what it carries.
type Change struct {
	Event Event
	At    time.Time
	// StepDone: the step that completed, and whether it is the release's
	// last (the plan knows: it lists what remains).
	Step      *Step
	Completes bool
	// BuildFailed, SwitchFailed: why.
	Failure *Failure
}

var from = map[Event][]string{
	StepDone:      {Building},
	Built:         {Building},
	BuildFailed:   {Building},
	Rebuild:       {Failed},
	SwitchFailed:  {Complete, Failed}, // failed: a retry that failed again updates the failure
	Relink:        {Failed},
	Healthy:       {Complete, Failed},
	MigrateFailed: {Complete, Failed},
}

// TransitionError is an event that does not apply in the release's state.
type TransitionError struct {
	Release, State string
	Event          Event
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("release %s is %s: %s does not apply", e.Release, e.State, e.Event)
}

// Apply performs c on r. It is the only place a release's state changes.
func (r *Release) Apply(c Change) error {
	ok := false
	for _, s := range from[c.Event] {
		ok = ok || r.State == s
	}
	if !ok {
		return &TransitionError{Release: r.Name, State: r.State, Event: c.Event}
	}
	at := c.At.UTC()
	switch c.Event {
	case StepDone:
		if c.Step == nil {
			return fmt.Errorf("release %s: step-done without a step", r.Name)
		}
		r.Steps = append(r.Steps, *c.Step)
		if c.Completes {
			r.State, r.Completed = Complete, &at
		}
	case BuildFailed, SwitchFailed, MigrateFailed:
		if c.Failure == nil {
			return fmt.Errorf("release %s: %s without a failure", r.Name, c.Event)
		}
		f := *c.Failure
		f.At = at
		// Stored cleaned and bounded, as the history stores it: no
		// password in a URL, no terminal escapes.
		f.Error, f.Output = scrub.Bound(scrub.Text(f.Error), 2048), scrub.Tail(scrub.Text(f.Output), 4096)
		r.State, r.Failure = Failed, &f
	case Rebuild:
		r.State, r.Failure = Building, nil
	case Built:
		r.State, r.Completed = Complete, &at
	case Relink:
		r.State, r.Failure = Complete, nil
	case Healthy:
		if r.Completed == nil {
			r.Completed = &at
		}
		r.State, r.Failure, r.HealthyAt = Complete, nil, &at
	}
	return nil
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

// Update reads the release record at path, performs c and writes it back
// atomically: each transition is one durable write.
func Update(path string, c Change) (*Release, error) {
	r, err := ReadRelease(path)
	if err != nil {
		return nil, err
	}
	if err := r.Apply(c); err != nil {
		return nil, err
	}
	if err := WriteRelease(path, r); err != nil {
		return nil, err
	}
	return r, nil
}

// Host is the record of the link: which release it was switched to and
// whether its services acted and its health was verified since. Which
// release is the rollback target is not kept here: it is derived from the
// release records (HealthyAt), so it can never disagree with them.
type Host struct {
	Linked       string    `json:"linked"`
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
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Records hold failure output, which may hold secrets: 0600.
	return fsx.WriteFileAtomic(path, append(b, '\n'), fsx.FileMode(filepath.Dir(path)))
}
