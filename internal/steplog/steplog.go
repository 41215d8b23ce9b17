package steplog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// logExt ends the name of every step log.
const logExt = ".log"

// minCommitPrefix is the shortest commit prefix that names a release.
const minCommitPrefix = 4

// Release is a release on disk and its record; Record is nil when the
// record cannot be read.
type Release struct {
	Name   string
	Record *record.Release
}

// Commit is the release's commit, "" when its record cannot be read.
func (r Release) Commit() string {
	if r.Record == nil {
		return ""
	}
	return r.Record.Commit
}

// Failure is the release's recorded failure, or nil.
func (r Release) Failure() *record.Failure {
	if r.Record == nil {
		return nil
	}
	return r.Record.Failure
}

func (r Release) String() string {
	if c := r.Commit(); c != "" {
		return fmt.Sprintf("%s (%s)", r.Name, layout.Short(c))
	}
	return r.Name
}

// Releases lists the releases under l's root, oldest first, as status
// sees them: directories (never symlinks) whose names the reconciler
// makes.
func Releases(l layout.Layout) ([]Release, error) {
	entries, err := os.ReadDir(l.ReleasesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Release
	for _, e := range entries {
		if !e.IsDir() || !layout.IsRecordedName(e.Name()) {
			continue
		}
		r := Release{Name: e.Name()}
		if rec, err := record.ReadRelease(l.RecordFile(e.Name())); err == nil && rec.Name == e.Name() {
			r.Record = rec
		}
		out = append(out, r)
	}
	// Names begin with the creation time: their order is the releases'.
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Find returns the release arg names: its name, a prefix of one name
// only, or a prefix (at least 4 hex digits) of the commit of one release
// only. The error names what is on disk, or the releases arg could mean.
func Find(rels []Release, arg string) (Release, error) {
	var match []Release
	for _, r := range rels {
		if r.Name == arg {
			return r, nil
		}
		if strings.HasPrefix(r.Name, arg) || len(arg) >= minCommitPrefix && isHex(arg) && strings.HasPrefix(r.Commit(), strings.ToLower(arg)) {
			match = append(match, r)
		}
	}
	switch {
	case len(match) == 1:
		return match[0], nil
	case len(match) > 1:
		return Release{}, fmt.Errorf("%q names %d releases: %s; give more of the name or the commit", arg, len(match), list(match))
	case len(rels) == 0:
		return Release{}, fmt.Errorf("no release %q: there are no releases on disk", arg)
	}
	return Release{}, fmt.Errorf("no release %q (a release name, a prefix of one, or of its commit); on disk: %s", arg, list(rels))
}

// LatestFailure is the release whose recorded failure is the newest, and
// false when no release on disk has one. A failure retried with success
// is no longer recorded: what it logged was replaced by the retry's log.
func LatestFailure(rels []Release) (Release, bool) {
	var best Release
	found := false
	for _, r := range rels {
		f := r.Failure()
		if f != nil && (!found || !f.At.Before(best.Failure().At)) {
			best, found = r, true
		}
	}
	return best, found
}

// Logs are the steps the release keeps a log of, in the order they ran as
// far as the record says (its completed steps, then the failed one), the
// others by name.
func Logs(l layout.Layout, r Release) ([]string, error) {
	d, err := openLogs(l, r.Name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Names()
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", r.Name, err)
	}
	var steps []string
	for _, n := range names {
		if s, ok := strings.CutSuffix(n, logExt); ok && s != "" {
			steps = append(steps, s)
		}
	}
	rank := map[string]int{}
	if r.Record != nil {
		for i, s := range r.Record.Steps {
			rank[s.Name] = i + 1
		}
		if f := r.Record.Failure; f != nil {
			if _, ok := rank[f.Step]; !ok {
				rank[f.Step] = len(r.Record.Steps) + 1
			}
		}
	}
	last := len(rank) + 2 // unranked: after the ranked ones
	sort.Slice(steps, func(i, j int) bool {
		ri, rj := cmpRank(rank, steps[i], last), cmpRank(rank, steps[j], last)
		if ri != rj {
			return ri < rj
		}
		return steps[i] < steps[j]
	})
	return steps, nil
}

func cmpRank(rank map[string]int, s string, last int) int {
	if r, ok := rank[s]; ok {
		return r
	}
	return last
}

// MissingError is a step the release keeps no log of.
type MissingError struct {
	Release, Step string
	Has           []string // the steps it keeps logs of
}

func (e *MissingError) Error() string {
	if len(e.Has) == 0 {
		return fmt.Sprintf("release %s has no log for step %s; it has no step logs (none of its steps ran a command)", e.Release, e.Step)
	}
	return fmt.Sprintf("release %s has no log for step %s; it has: %s", e.Release, e.Step, strings.Join(e.Has, ", "))
}

// Open opens the log of step in release r for reading, as a file
// beneath the root, never following a symlink: a log that is a link
// (planted, the reconciler makes none) is refused. A step without a log
// is a *MissingError.
func Open(l layout.Layout, r Release, step string) (*os.File, error) {
	has, err := Logs(l, r)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(has, step) {
		return nil, &MissingError{Release: r.Name, Step: step, Has: has}
	}
	d, err := openLogs(l, r.Name)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.Open(step + logExt)
	if err != nil {
		return nil, fmt.Errorf("log of step %s: %w", step, err)
	}
	return f, nil
}

// Path is where the log of step of release is kept.
func Path(l layout.Layout, release, step string) string { return l.StepLog(release, step) }

// openLogs opens the release's logs directory beneath the root, no
// component of it followed through a symlink.
func openLogs(l layout.Layout, release string) (*fsx.Dir, error) {
	rel, err := filepath.Rel(l.Root, filepath.Dir(l.StepLog(release, "x")))
	if err != nil {
		return nil, err
	}
	d, err := fsx.OpenBeneath(l.Root, rel, false, 0)
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", release, err)
	}
	return d, nil
}

func list(rels []Release) string {
	s := make([]string, len(rels))
	for i, r := range rels {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

func isHex(s string) bool {
	for _, c := range strings.ToLower(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
