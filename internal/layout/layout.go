// Package layout names the paths the reconciler owns under a root, so that
// every path is derived in one place and release names never come from input.
package layout

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

// Layout is the on-host layout under one root.
type Layout struct {
	Root string // absolute
	Link string // plain name of the link, e.g. "current"
}

// New returns the layout for root and link. Both come validated from
// package desired.
func New(root, link string) Layout { return Layout{Root: root, Link: link} }

func (l Layout) LinkPath() string    { return filepath.Join(l.Root, l.Link) }
func (l Layout) ReleasesDir() string { return filepath.Join(l.Root, "releases") }
func (l Layout) SharedDir() string   { return filepath.Join(l.Root, "shared") }
func (l Layout) RepoDir() string     { return filepath.Join(l.Root, "repo") }
func (l Layout) CacheDir() string    { return filepath.Join(l.Root, "cache") }

// CacheStepDir holds the cache entries of the build step called step.
func (l Layout) CacheStepDir(step string) string { return filepath.Join(l.CacheDir(), step) }

// CacheEntry is where a cached step runs and its outputs stay: the path is
// stable, so what the step writes into its outputs (a venv's shebangs)
// stays true in every release that links them.
func (l Layout) CacheEntry(step, key string) string { return filepath.Join(l.CacheStepDir(step), key) }

// CacheSeal is the record that seals a cache entry: an entry without one
// is an interrupted fill.
func (l Layout) CacheSeal(step, key string) string {
	return filepath.Join(l.CacheStepDir(step), key+".json")
}
func (l Layout) StateDir() string    { return filepath.Join(l.Root, ".reconciler") }
func (l Layout) TmpDir() string      { return filepath.Join(l.StateDir(), "tmp") }
func (l Layout) LockFile() string    { return filepath.Join(l.StateDir(), "lock") }
func (l Layout) HistoryFile() string { return filepath.Join(l.StateDir(), "history.jsonl") }
func (l Layout) HostFile() string    { return filepath.Join(l.StateDir(), "host.json") }
func (l Layout) SuspendFile() string { return filepath.Join(l.StateDir(), "suspended.json") }

// CacheSecretFile keys the hashes that name cache entries, so a key gives
// away nothing of the environment values it covers.
func (l Layout) CacheSecretFile() string { return filepath.Join(l.StateDir(), "cache.secret") }

// AppliedFile holds the snapshot of the desired state the last successful
// apply reconciled: field paths and hashes of their values, never values.
func (l Layout) AppliedFile() string { return filepath.Join(l.StateDir(), "applied.json") }

// MigrationsFile holds the database's applied migrations and the
// migrations each release's code has: one database serves every release.
func (l Layout) MigrationsFile() string { return filepath.Join(l.StateDir(), "migrations.json") }

// ReleaseDir is the directory of the release called name.
func (l Layout) ReleaseDir(name string) string { return filepath.Join(l.ReleasesDir(), name) }

// RecordDir holds a release's record and step logs, inside the release so
// that a release and its record come and go together.
func (l Layout) RecordDir(name string) string {
	return filepath.Join(l.ReleaseDir(name), RecordDirName)
}

// RecordFile is the release's record.
func (l Layout) RecordFile(name string) string {
	return filepath.Join(l.RecordDir(name), "release.json")
}

// StepLog is where the full output of a release's step is kept.
func (l Layout) StepLog(name, step string) string {
	return filepath.Join(l.RecordDir(name), "logs", step+".log")
}

// LinkTarget is what the link holds for a release: relative, so the root can
// move.
func LinkTarget(name string) string { return filepath.Join("releases", name) }

// RecordDirName is the folder inside each release that holds its record.
// The same name is the state directory under root.
const RecordDirName = ".reconciler"

// Reserved are the names under root the reconciler keeps for itself: the
// link may not take one, and the exported tree may not have RecordDirName.
var Reserved = []string{"releases", "shared", "repo", "cache", RecordDirName}

// ShortLen is how many hex digits of a commit people see: in release
// names, plans, status and history.
const ShortLen = 8

// Short is the commit as people see it.
func Short(sha string) string {
	if len(sha) > ShortLen {
		return sha[:ShortLen]
	}
	return sha
}

var releaseNameRE = lazyre.New(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}(-[0-9]+)?$`)

// ReleaseName makes the name of a new release of commit created at t. A
// release name is only ever made here; n > 0 disambiguates two releases made
// in the same second.
func ReleaseName(t time.Time, commit string, n int) string {
	name := t.UTC().Format("20060102T150405Z") + "-" + Short(commit)
	if n > 0 {
		name += fmt.Sprintf("-%d", n)
	}
	return name
}

// IsReleaseName reports whether name has the form ReleaseName makes.
func IsReleaseName(name string) bool { return releaseNameRE.MatchString(name) }

var adoptedNameRE = lazyre.New(`^[0-9]{14}$`)

// AdoptedTimeFormat is how Capistrano (in UTC) and Ansible's deploy_helper
// name a release: the time it was made, to the second.
const AdoptedTimeFormat = "20060102150405"

// IsAdoptedName reports whether name has the form Capistrano and
// deploy_helper give their releases (20261126101624). `reconciler adopt`
// records such releases under the names they have: renaming them would
// move the directory the link and running processes point into. They are
// taken from the host, never from desired.yaml, and this strict form
// (digits only) cannot name a path outside releases/.
func IsAdoptedName(name string) bool { return adoptedNameRE.MatchString(name) }

// IsRecordedName reports whether a release called name may carry a
// record: a name the reconciler made, or one adopt took over.
func IsRecordedName(name string) bool { return IsReleaseName(name) || IsAdoptedName(name) }

// NameTime is the creation time a release's name says: the reconciler's
// names and adopted ones both begin with it (adopted ones read as UTC, as
// Capistrano writes them). ok is false for any other name.
func NameTime(name string) (t time.Time, ok bool) {
	var err error
	switch {
	case IsReleaseName(name):
		t, err = time.Parse("20060102T150405Z", name[:16])
	case IsAdoptedName(name):
		t, err = time.Parse(AdoptedTimeFormat, name)
	default:
		return time.Time{}, false
	}
	return t, err == nil
}
