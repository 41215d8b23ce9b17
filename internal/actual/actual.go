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
	"github.com/reconciler-dev/reconciler/internal/stepcache"
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
	// Ships is the history between the linked release's commit (ShipsFrom)
	// and Commit: what a deploy ships, or a rollback takes away. Nil when
	// they are the same, or the cache cannot say.
	Ships     *gitcache.Log
	ShipsFrom string
	// Applied is the snapshot of the desired state the last successful
	// apply reconciled (desired.State.Snapshot); nil before the first.
	Applied map[string]string
	// Suspended is set while a person has suspended deploys.
	Suspended *record.Suspension
	// Migrations is the record of applied migrations and of those each
	// release's code has; nil when none was kept (MigrationsProblem says
	// why, when it exists and cannot be read).
	Migrations        *record.Migrations
	MigrationsProblem string
	// Cache is what <root>/cache holds, step by step, keys in order.
	Cache []CacheEntry
	// CacheKeys are the keys the cached build steps of a new release of
	// Commit would have, by step name: read from the commit's tree, and
	// only when no complete release of it is on disk.
	CacheKeys map[string]CacheKey
}

// CacheEntry is one directory of <root>/cache/<step>/.
type CacheEntry struct {
	Step, Key string
	Seal      *stepcache.Seal // nil: an interrupted fill, or Problem
	Problem   string          // a seal that cannot be read
}

// Name is the entry as records and plans name it.
func (e CacheEntry) Name() string { return stepcache.EntryName(e.Step, e.Key) }

// CacheKey is what a cached step's key will be.
type CacheKey struct {
	Key string
	Why string // why Key is not known, when it is not
}

// Sealed returns the sealed entry of step with key, or nil.
func (s *State) Sealed(step, key string) *CacheEntry {
	for i, e := range s.Cache {
		if e.Step == step && e.Key == key && e.Seal != nil {
			return &s.Cache[i]
		}
	}
	return nil
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

		if err := observeCache(l, s); err != nil {
			return nil, err
		}
		s.Applied = record.ReadApplied(l.AppliedFile())
		if s.Suspended, err = record.ReadSuspension(l.SuspendFile()); err != nil {
			return nil, err
		}
		if s.Migrations, err = record.ReadMigrations(l.MigrationsFile()); err != nil {
			s.MigrationsProblem = err.Error()
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
	if c, ok := linkedCommit(d, s); ok {
		s.Commit = c
	} else {
		c, err := observeCommit(ctx, d.Source.Commit, git, s.Releases)
		if err != nil {
			return nil, err
		}
		s.Commit = c
	}
	if err := observeCacheKeys(ctx, d, git, s); err != nil {
		return nil, err
	}
	observeShips(ctx, git, s)
	return s, nil
}

// Historian reads the history between two commits; the git cache does.
type Historian interface {
	Between(ctx context.Context, from, to string, max int) (*gitcache.Log, error)
}

// ShipsMax is how many commit subjects a plan lists.
const ShipsMax = 20

// observeShips reads what the target ships relative to the linked
// release. A converged host never pays for it: the commits are the same.
func observeShips(ctx context.Context, git Git, s *State) {
	h, ok := git.(Historian)
	r := s.Release(s.Link.Release)
	if !ok || r == nil || r.Record == nil || s.Commit.SHA == "" || !s.Commit.InCache || r.Record.Commit == s.Commit.SHA {
		return
	}
	l, err := h.Between(ctx, r.Record.Commit, s.Commit.SHA, ShipsMax)
	if err != nil {
		return // what ships is information; the plan does not depend on it
	}
	s.Ships, s.ShipsFrom = l, r.Record.Commit
}

// Lister lists the files of a commit's tree; the git cache does.
type Lister interface {
	Files(ctx context.Context, sha, subpath string, want, descend func(rel string) bool) ([]gitcache.TreeFile, error)
}

func observeCache(l layout.Layout, s *State) error {
	steps, err := os.ReadDir(l.CacheDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("observe cache: %w", err)
	}
	for _, st := range steps {
		if !st.IsDir() {
			continue
		}
		entries, err := os.ReadDir(l.CacheStepDir(st.Name()))
		if err != nil {
			return fmt.Errorf("observe cache: %w", err)
		}
		for _, e := range entries {
			if !e.IsDir() || !stepcache.IsKey(e.Name()) {
				continue
			}
			ce := CacheEntry{Step: st.Name(), Key: e.Name()}
			seal, err := stepcache.ReadSeal(l.CacheSeal(ce.Step, ce.Key))
			switch {
			case errors.Is(err, fs.ErrNotExist):
			case err != nil:
				ce.Problem = "unreadable seal: " + err.Error()
			case seal.Step != ce.Step || seal.Key != ce.Key:
				ce.Problem = "the seal names another entry"
			default:
				ce.Seal = seal
			}
			s.Cache = append(s.Cache, ce)
		}
	}
	return nil
}

// observeCacheKeys reads the keys a new release of the commit would give
// its cached steps, from the commit's tree: what the plan needs to say
// whether each will run. A converged host, or one with a release of the
// commit on disk, never pays for the walk.
func observeCacheKeys(ctx context.Context, d *desired.State, git Git, s *State) error {
	lister, ok := git.(Lister)
	var cached []int
	for i, b := range d.Build {
		if b.Cache != nil {
			cached = append(cached, i)
		}
	}
	if !ok || len(cached) == 0 || s.Commit.SHA == "" {
		return nil
	}
	fp := d.Fingerprint()
	for _, r := range s.Releases {
		if r.Record != nil && r.Record.Commit == s.Commit.SHA && r.Record.Fingerprint == fp && r.Record.State == record.Complete {
			return nil
		}
	}
	s.CacheKeys = map[string]CacheKey{}
	if !s.Commit.InCache {
		for _, i := range cached {
			s.CacheKeys[d.Build[i].Name] = CacheKey{Why: "known after the fetch"}
		}
		return nil
	}
	secret, err := stepcache.ReadSecret(layout.New(d.Root, d.Link).CacheSecretFile())
	if err != nil || secret == nil {
		why := "known at the first fill: the host has no cache secret yet"
		if err != nil {
			why = err.Error()
		}
		for _, i := range cached {
			s.CacheKeys[d.Build[i].Name] = CacheKey{Why: why}
		}
		return nil
	}
	for _, i := range cached {
		spec := stepcache.SpecOf(d, i)
		spec.Secret = secret
		files, err := lister.Files(ctx, s.Commit.SHA, d.Source.Path,
			func(rel string) bool { return stepcache.Match(spec.Patterns, rel) },
			func(rel string) bool { return stepcache.MayHold(spec.Patterns, rel) })
		if err != nil {
			// The export will say what is wrong with the tree.
			s.CacheKeys[spec.Step] = CacheKey{Why: "the commit's tree cannot be read: " + err.Error()}
			continue
		}
		if len(files) == 0 {
			s.CacheKeys[spec.Step] = CacheKey{Why: "no file of the commit matches the key " + strings.Join(spec.Patterns, ", ")}
			continue
		}
		in := make([]stepcache.Input, len(files))
		for j, f := range files {
			in[j] = stepcache.Input{Path: f.Path, Mode: f.Mode, Hash: f.Hash}
		}
		s.CacheKeys[spec.Step] = CacheKey{Key: stepcache.Key(spec, in)}
	}
	return nil
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
		if !e.IsDir() || !layout.IsRecordedName(name) {
			s.Strays = append(s.Strays, name)
			continue
		}
		if layout.IsAdoptedName(name) {
			// Capistrano's and deploy_helper's names: a release once
			// adopt recorded it, until then another tool's directory.
			if _, err := os.Lstat(l.RecordFile(name)); errors.Is(err, fs.ErrNotExist) {
				s.Strays = append(s.Strays, name)
				continue
			}
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

// linkedCommit is the commit of a host that already runs what d asks for:
// source.commit a full SHA, the linked release complete, built from it with
// d's fingerprint, and no cached build step (whose keys are read from the
// commit's tree). Nothing is then asked of the git cache: a converged apply
// opens no pack (with twenty packs, a fifth of its start-up). The cache
// held the commit when the release was built; a plan that builds reads it
// through observeCommit.
func linkedCommit(d *desired.State, s *State) (Commit, bool) {
	ref := d.Source.Commit
	if !desired.IsFullHash(ref) || s.Link.Release == "" {
		return Commit{}, false
	}
	for _, b := range d.Build {
		if b.Cache != nil {
			return Commit{}, false
		}
	}
	for _, r := range s.Releases {
		if r.Name == s.Link.Release && r.Complete() && strings.EqualFold(r.Record.Commit, ref) && r.Record.Fingerprint == d.Fingerprint() {
			return Commit{Ref: ref, SHA: r.Record.Commit, Kind: gitcache.KindCommit, InCache: true}, true
		}
	}
	return Commit{}, false
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
