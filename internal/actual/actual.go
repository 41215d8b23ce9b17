package actual

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/procs"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// Git is what Observe needs of the git cache: read-only questions.
type Git interface {
	Resolve(ctx context.Context, ref string) (sha string, kind gitcache.Kind, err error)
	HasCommit(sha string) bool
	LsRemote(ctx context.Context, branch string) (string, error)
}

// State is what is on the host.
type State struct {
	Root          string
	RootExists    bool
	Link          Link
	Host          *record.Host // nil before the first switch
	HostProblem   string       // the host record exists but can't be read
	Releases      []Release    // sorted oldest first
	Strays        []string     // entries under releases/ that are not releases
	Commit        Commit
	MissingShared []string // shared.files absent under <root>/shared
}

// Link is the observed link.
type Link struct {
	Path     string
	Exists   bool   // something is at Path
	Target   string // what the symlink holds, as written
	Release  string // the release it points at, when it points at one on disk
	Dangling bool   // a symlink whose target does not exist
	Problem  string // set when Path is not a symlink into releases/
}

// Release is one entry of releases/.
type Release struct {
	Name    string
	Record  *record.Release // nil when Problem is set
	Problem string          // no record, or an unreadable one
}

// Complete reports whether the release is recorded complete.
func (r Release) Complete() bool { return r.Record != nil && r.Record.State == record.Complete }

// Commit is what the desired ref resolves to.
type Commit struct {
	Ref     string
	SHA     string        // full SHA; "" when it can't be known without a fetch
	Kind    gitcache.Kind // "" when unknown
	InCache bool          // the cache holds SHA
	Why     string        // why a fetch is needed, when it is
}

// RollbackTarget is the release to return to when the linked one fails:
// the complete release, other than exclude, that was verified healthy
// while linked most recently. A release that never served healthy, or
// that failed, is never one. "" when there is none.
func (s *State) RollbackTarget(exclude string) string {
	best := ""
	var at time.Time
	for _, r := range s.Releases {
		if r.Name == exclude || !r.Complete() || r.Record.HealthyAt == nil {
			continue
		}
		if best == "" || r.Record.HealthyAt.After(at) {
			best, at = r.Name, *r.Record.HealthyAt
		}
	}
	return best
}

// Release returns the release called name, or nil.
func (s *State) Release(name string) *Release {
	for i := range s.Releases {
		if s.Releases[i].Name == name {
			return &s.Releases[i]
		}
	}
	return nil
}

// Observe reads the host under d.Root. It never writes. With a nil git it
// leaves Commit empty and asks neither the cache nor the remote.
func Observe(ctx context.Context, d *desired.State, git Git) (*State, error) {
	l := layout.New(d.Root, d.Link)
	s := &State{Root: d.Root}
	fi, err := os.Stat(d.Root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("observe %s: %w", d.Root, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("observe: root %s is not a directory", d.Root)
	default:
		s.RootExists = true
	}
	if s.RootExists {
		if err := observeReleases(l, s); err != nil {
			return nil, err
		}
		if err := observeLink(l, s); err != nil {
			return nil, err
		}

		h, err := record.ReadHost(l.HostFile())
		if err != nil {
			s.HostProblem = err.Error()
		}
		s.Host = h
	}
	for _, f := range d.Shared.Files {
		if _, err := os.Stat(filepath.Join(l.SharedDir(), f)); err != nil {
			s.MissingShared = append(s.MissingShared, f)
		}
	}
	if git == nil {
		return s, nil // status: the host only, no questions to git
	}
	c, err := observeCommit(ctx, d.Source.Commit, git, s.Releases)
	if err != nil {
		return nil, err
	}
	s.Commit = c
	return s, nil
}

// ObserveInUse reads from /proc which releases live processes run from:
// a map from release name to the pids whose working directory is inside
// it. It scans every process, so it is asked only when a release is about
// to be pruned, never on the path of a converged apply.
func ObserveInUse(d *desired.State) map[string][]int {
	dir := layout.New(d.Root, d.Link).ReleasesDir()
	// Processes report resolved paths: resolve the root's too.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return procs.InUse(dir)
}

func observeReleases(l layout.Layout, s *State) error {
	entries, err := os.ReadDir(l.ReleasesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("observe releases: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !layout.IsReleaseName(name) {
			s.Strays = append(s.Strays, name)
			continue
		}
		r := Release{Name: name}
		rec, err := record.ReadRelease(l.RecordFile(name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			r.Problem = "no record"
		case err != nil:
			r.Problem = "unreadable record: " + err.Error()
		case rec.Name != name:
			r.Problem = fmt.Sprintf("record names another release (%s)", rec.Name)
		default:
			r.Record = rec
		}
		s.Releases = append(s.Releases, r)
	}
	// Oldest first. Names start with the creation time, but only to the
	// second; the record's time orders releases made in the same second.
	sort.SliceStable(s.Releases, func(i, j int) bool {
		a, b := s.Releases[i], s.Releases[j]
		if a.Record != nil && b.Record != nil && !a.Record.Created.Equal(b.Record.Created) {
			return a.Record.Created.Before(b.Record.Created)
		}
		return a.Name < b.Name
	})
	return nil
}

func observeLink(l layout.Layout, s *State) error {
	lk := Link{Path: l.LinkPath()}
	fi, err := os.Lstat(lk.Path)
	if errors.Is(err, fs.ErrNotExist) {
		s.Link = lk
		return nil
	}
	if err != nil {
		return fmt.Errorf("observe link: %w", err)
	}
	lk.Exists = true
	if fi.Mode()&os.ModeSymlink == 0 {
		kind := "a file"
		if fi.IsDir() {
			kind = "a directory"
		}
		lk.Problem = fmt.Sprintf("%s is %s, not a symlink", lk.Path, kind)
		s.Link = lk
		return nil
	}
	target, err := os.Readlink(lk.Path)
	if err != nil {
		return fmt.Errorf("observe link: %w", err)
	}
	lk.Target = target
	abs := target
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(l.Root, target)
	}
	if _, err := os.Stat(abs); err != nil {
		lk.Dangling = true
	}
	rel, err := filepath.Rel(l.ReleasesDir(), filepath.Clean(abs))
	switch {
	case err != nil || strings.HasPrefix(rel, "..") || strings.Contains(rel, "/") || rel == ".":
		// A dangling link holds nothing (the everyday slip `ln -sfn
		// root/releases/X root/current`, relative to the wrong
		// directory): it is drift, repaired like a deleted link. A link
		// to something that exists outside releases/ may be a hand
		// deployment a person still needs.
		if !lk.Dangling {
			lk.Problem = fmt.Sprintf("%s points at %s, which exists outside %s: it may be a deployment made by hand", lk.Path, target, l.ReleasesDir())
		}
	case !lk.Dangling:
		lk.Release = rel
	}
	s.Link = lk
	return nil
}

// observeCommit resolves ref. A SHA the cache holds, or one a release on
// disk was built from, needs no network (invariants 8 and 9). A branch or
// a tag can move, so the remote is asked where it points: one ls-remote,
// read-only. A ref the cache lacks is checked against the remote the same
// way, so that plan, not only apply, finds an unreachable repository, a
// missing key or an unknown branch.
func observeCommit(ctx context.Context, ref string, git Git, releases []Release) (Commit, error) {
	c := Commit{Ref: ref}
	sha, kind, err := git.Resolve(ctx, ref)
	switch {
	case err == nil:
		c.SHA, c.Kind, c.InCache = sha, kind, true
		if kind == gitcache.KindCommit {
			return c, nil
		}
		remote, err := git.LsRemote(ctx, ref)
		if err != nil {
			return c, fmt.Errorf("resolve source.commit %q: %w", ref, err)
		}
		if remote != sha {
			c.SHA = remote
			c.InCache = git.HasCommit(remote)
			if !c.InCache {
				c.Why = fmt.Sprintf("%s %s moved from %s to %s", kind, ref, layout.Short(sha), layout.Short(remote))
			}
		}
		return c, nil
	case errors.Is(err, gitcache.ErrDamaged):
		c.Why = fmt.Sprintf("%v; the fetch clones it afresh", err) // err says the cache is damaged
	case errors.Is(err, gitcache.ErrNotFound):
		c.Why = fmt.Sprintf("%s is not in the cache", ref)
	default:
		return c, fmt.Errorf("observe commit %s: %w", ref, err)
	}
	if desired.IsFullHash(ref) {
		c.SHA = ref
	}
	if desired.IsHash(ref) && builtFrom(releases, ref) {
		// A rollback to a release on disk needs neither the cache nor
		// the remote.
		return c, nil
	}
	// Servers advertise branches and tags, not every commit: for a SHA
	// the ls-remote only shows the remote answers.
	if _, err := git.LsRemote(ctx, ref); err != nil && !(desired.IsHash(ref) && errors.Is(err, gitcache.ErrUnknownRef)) {
		return c, fmt.Errorf("resolve source.commit %q: %w", ref, err)
	}
	return c, nil
}

// builtFrom reports whether a release on disk records a commit that the
// SHA (full or short) names.
func builtFrom(releases []Release, sha string) bool {
	for _, r := range releases {
		if r.Record != nil && strings.HasPrefix(r.Record.Commit, strings.ToLower(sha)) {
			return true
		}
	}
	return false
}
