package gitcache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

// Kind says how a ref resolved, which decides whether it can move.
type Kind string

const (
	KindCommit Kind = "commit" // written as a SHA: never moves
	KindTag    Kind = "tag"    // moves when retagged: the remote is asked
	KindBranch Kind = "branch" // moves: the remote is asked where it points
)

// objectCacheSize bounds go-git's decoded-object cache. Its default, 96 MiB,
// would alone take most of the memory budget of an export.
const objectCacheSize = 16 * cache.MiByte

// Marker is the file a cache made by the reconciler carries at its top.
// Only a repository with it (or something that is no readable repository
// at all) is ever deleted to clone afresh: a repository a person put at
// the cache's path is left to them.
const Marker = "reconciler-cache"

const markerText = "This bare repository is the reconciler's git cache. The reconciler may delete it and clone it afresh.\n"

// Cache is the bare repository at Dir mirroring URL.
type Cache struct {
	Dir    string // <root>/repo
	URL    string
	SSHKey string // private key file for ssh remotes; "" for the agent or none
	TmpDir string // same filesystem as Dir, for the first clone
	// Writers is how many goroutines write exported files; 0 means
	// DefaultWriters.
	Writers int
	// AllowExternalSymlinks lets Export write symlinks that lead out of
	// the release (source.allow_external_symlinks); refused otherwise.
	AllowExternalSymlinks bool
	// Verify is whose signature a commit must carry to be exported; the
	// zero Verifier exports any commit.
	Verify Verifier
	// Ref is the source.commit deploys need: a branch, a tag or a SHA.
	// With it, Fetch brings that commit alone, shallow (depth 1), and a
	// later Fetch of a new target stays shallow; see shallow.go. Empty,
	// Fetch mirrors every branch and tag with their whole history.
	Ref string
	// Log hears what Fetch and Repair do beyond the ordinary, such as a
	// cache fetched afresh after a failed update; nil for nowhere.
	Log *zap.Logger
}

func (c *Cache) log() *zap.Logger {
	if c.Log == nil {
		return zap.NewNop()
	}
	return c.Log
}

// url is the remote for messages: never with its password.
func (c *Cache) url() string { return Redact(c.URL) }

// open opens the cache. The caller must call close. Pack files stay open
// until then: without KeepDescriptors go-git opens the pack file again for
// every object it reads, which doubled the time of an export.
func (c *Cache) open() (r *git.Repository, close func(), err error) {
	return c.openWith(filesystem.Options{KeepDescriptors: true}, objectCacheSize)
}

// streamThreshold is the size above which an export worker's go-git
// streams a blob from the pack instead of decoding it whole into memory.
const streamThreshold = 1 << 20

// openStreaming opens the cache for an export worker: blobs are read once,
// so the object cache stays small, and large blobs are streamed, so memory
// is bounded by workers × streamThreshold whatever the repository holds.
func (c *Cache) openStreaming() (*git.Repository, func(), error) {
	return c.openWith(filesystem.Options{KeepDescriptors: true, LargeObjectThreshold: streamThreshold}, cache.MiByte)
}

// openWith opens the cache: ErrNotFound when nothing is at Dir, ErrDamaged
// when what is there is no repository (a file, an empty or broken folder).
func (c *Cache) openWith(opts filesystem.Options, objCache cache.FileSize) (*git.Repository, func(), error) {
	op := "open cache " + c.Dir
	if _, err := os.Lstat(c.Dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil, ErrNotFound
	}
	fi, err := os.Stat(filepath.Join(c.Dir, "HEAD"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, &Error{Op: op, Err: fmt.Errorf("%w: %s is not a git repository (no HEAD)", ErrDamaged, c.Dir)}
	case err != nil:
		return nil, nil, readErr(op, err)
	case fi.IsDir():
		return nil, nil, &Error{Op: op, Err: fmt.Errorf("%w: %s/HEAD is a directory", ErrDamaged, c.Dir)}
	}
	st := filesystem.NewStorageWithOptions(idxFS{osfs.New(c.Dir)}, cache.NewObjectLRU(objCache), opts)
	r, err := git.Open(st, nil)
	if err != nil {
		st.Close()
		return nil, nil, readErr(op, err)
	}
	return r, func() { st.Close() }, nil
}

// Exists reports whether the cache has been created.
func (c *Cache) Exists() bool {
	_, err := os.Stat(filepath.Join(c.Dir, "HEAD"))
	return err == nil
}

// Resolve finds ref in the cache without touching the network or the disk
// beyond reading. It returns ErrNotFound when the cache lacks it, and an
// error wrapping ErrDamaged when the cache cannot be read.
func (c *Cache) Resolve(ctx context.Context, ref string) (sha string, kind Kind, err error) {
	r, done, err := c.open()
	if err != nil {
		return "", "", err
	}
	defer done()
	op := "resolve " + ref
	if desired.IsHash(ref) {
		h, err := r.ResolveRevision(plumbing.Revision(ref))
		if err == nil {
			_, err = r.CommitObject(*h)
		}
		switch {
		case err == nil:
			return h.String(), KindCommit, nil
		case errors.Is(err, plumbing.ErrReferenceNotFound), errors.Is(err, plumbing.ErrObjectNotFound):
			// Not here, or a hex string naming a branch or tag:
			// fall through.
		default:
			return "", "", readErr(op, err)
		}
	}
	for _, k := range []struct {
		name plumbing.ReferenceName
		kind Kind
	}{{plumbing.NewTagReferenceName(ref), KindTag}, {plumbing.NewBranchReferenceName(ref), KindBranch}} {
		rf, err := r.Reference(k.name, true)
		if errors.Is(err, plumbing.ErrReferenceNotFound) {
			continue
		}
		if err != nil {
			return "", "", readErr(op, fmt.Errorf("read %s: %w", k.name, err))
		}
		h, err := r.ResolveRevision(plumbing.Revision(k.name))
		if err == nil {
			_, err = r.CommitObject(*h)
		}
		if err != nil {
			return "", "", readErr(op, fmt.Errorf("%s points at %s, which it cannot read: %w", k.name, rf.Hash(), err))
		}
		return h.String(), k.kind, nil
	}
	return "", "", ErrNotFound
}

// HasCommit reports whether the cache holds the commit sha, readable.
func (c *Cache) HasCommit(sha string) bool {
	r, done, err := c.open()
	if err != nil {
		return false
	}
	defer done()
	_, err = r.CommitObject(plumbing.NewHash(sha))
	return err == nil
}

// LsRemote asks the remote where ref points, without fetching or writing
// anything: a tag first (an annotated one peeled to its commit), then a
// branch, as Resolve looks them up in the cache. A remote without that
// name gives an error wrapping ErrUnknownRef; one that cannot be reached,
// a transient *Error.
func (c *Cache) LsRemote(ctx context.Context, ref string) (string, error) {
	op := "ls-remote " + c.url()
	refs, err := c.listRemote(ctx)
	if err != nil {
		return "", translate(op, err)
	}
	byName := make(map[string]string, len(refs))
	for _, rf := range refs {
		if rf.Type() == plumbing.HashReference {
			byName[rf.Name().String()] = rf.Hash().String()
		}
	}
	tag := plumbing.NewTagReferenceName(ref).String()
	for _, name := range []string{tag + "^{}", tag, plumbing.NewBranchReferenceName(ref).String()} {
		if sha, ok := byName[name]; ok {
			return sha, nil
		}
	}
	return "", translate(op, fmt.Errorf("%w: %q", ErrUnknownRef, ref))
}

// listRemote lists the remote's refs with peeled tags, on a remote held in
// memory: nothing is written anywhere.
func (c *Cache) listRemote(ctx context.Context) ([]*plumbing.Reference, error) {
	auth, err := c.auth()
	if err != nil {
		return nil, err
	}
	rem := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{c.URL}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: auth, PeelingOption: git.AppendPeeled})
	return refs, explainAuth(err, auth)
}

// refSpecs mirror the remote's branches and tags. The + forces the update
// of a tag moved upstream (git tag -f), as of a rewound branch.
var refSpecs = []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}

// Fetch brings the cache up to date with the remote for Ref (every
// branch and tag without it), creating it on first use. The first clone
// is made in TmpDir and renamed into place, so an interrupted clone never
// leaves a half cache at Dir. A cache the update fails on — damaged, or
// one of go-git's failures to update a shallow repository (go-git#305,
// #1443) — is fetched afresh into a new cache that replaces it (see
// Repair for what may be replaced): the deploy goes on.
func (c *Cache) Fetch(ctx context.Context) error {
	auth, err := c.auth()
	if err != nil {
		return err
	}
	if _, err := os.Lstat(c.Dir); errors.Is(err, fs.ErrNotExist) {
		return c.clone(ctx, auth, nil)
	}
	err = c.fetch(ctx, auth)
	if err == nil || transient(err) {
		return err
	}
	// Anything else is the cache's own fault (a stale lock, a truncated
	// ref, missing objects, a shallow update go-git got wrong): do what
	// git-sync does, start afresh.
	return c.repair(ctx, auth, nil, err)
}

func (c *Cache) fetch(ctx context.Context, auth transport.AuthMethod) error {
	r, done, err := c.open()
	if err != nil {
		return err
	}
	defer done()
	// A repository the reconciler did not make is never adopted: the
	// fetch would rewrite its origin and prune its branches.
	if _, err := os.Lstat(filepath.Join(c.Dir, Marker)); err != nil {
		return &Error{Op: "fetch into " + c.Dir, Err: fmt.Errorf("it is a repository the reconciler did not make (no marker file %s); refusing to adopt it", Marker)}
	}
	if err := c.setURL(r); err != nil {
		return err
	}
	if err := c.get(ctx, r, auth, nil); err != nil {
		return err
	}
	// A fetch that found nothing new says nothing of the objects the
	// refs point at: check that every tip can be read.
	return checkTips(r)
}

// get fetches into r what the cache is for: Ref and the commits extra,
// shallow; or, without Ref, every branch and tag with their history.
func (c *Cache) get(ctx context.Context, r *git.Repository, auth transport.AuthMethod, extra []string) error {
	if c.Ref != "" {
		return c.fetchTarget(ctx, r, auth, c.Ref, extra)
	}
	return c.fetchSpecs(ctx, r, auth, refSpecs, 0, true)
}

// checkTips reads the commit every branch and tag points at.
func checkTips(r *git.Repository) error {
	refs, err := r.References()
	if err != nil {
		return readErr("check cache", err)
	}
	defer refs.Close()
	return refs.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() != plumbing.HashReference {
			return nil
		}
		if _, err := r.CommitObject(ref.Hash()); err == nil {
			return nil
		}
		if tag, err := r.TagObject(ref.Hash()); err == nil {
			if _, err := tag.Commit(); err == nil {
				return nil
			}
		}
		return &Error{Op: "check cache", Err: fmt.Errorf("%w: %s points at %s, which it cannot read", ErrDamaged, ref.Name(), ref.Hash())}
	})
}

// Repair clones the cache afresh, for damage Fetch cannot see: a blob
// missing behind readable refs. Whatever is at Dir is replaced if it is
// the reconciler's cache (it carries Marker) or clearly no readable
// repository (a file, a folder without HEAD, refs pointing at nothing);
// a readable repository without the marker is left alone, with an error
// that needs a person.
//
// A shallow cache holds little but Ref: when cause is an export's, the
// commit that export read is fetched too.
func (c *Cache) Repair(ctx context.Context, cause error) error {
	auth, err := c.auth()
	if err != nil {
		return err
	}
	var extra []string
	var ce *commitError
	if errors.As(cause, &ce) {
		extra = []string{ce.sha}
	}
	if _, err := os.Lstat(c.Dir); errors.Is(err, fs.ErrNotExist) {
		return c.clone(ctx, auth, extra)
	}
	return c.repair(ctx, auth, extra, cause)
}

// repair clones afresh over the damaged cache. The cause is logged once
// the new cache is in place: it was mended, not returned. When the new
// clone fails too, the error says both.
func (c *Cache) repair(ctx context.Context, auth transport.AuthMethod, extra []string, cause error) error {
	if err := c.clone(ctx, auth, extra); err != nil {
		return fmt.Errorf("re-clone the damaged cache (%v): %w", cause, err)
	}
	c.log().Warn("git cache update failed; re-fetched it into a fresh cache", zap.String("repo", c.url()), zap.String("ref", c.Ref), zap.NamedError("cause", cause))
	return nil
}

// clone fetches the remote into a new repository in TmpDir, then puts it
// at Dir in place of whatever replaceable thing is there.
func (c *Cache) clone(ctx context.Context, auth transport.AuthMethod, extra []string) error {
	op := "create cache"
	if err := os.MkdirAll(c.TmpDir, 0o755); err != nil {
		return &Error{Op: op, Err: err}
	}
	tmp, err := os.MkdirTemp(c.TmpDir, "repo-")
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	defer os.RemoveAll(tmp)
	r, err := git.PlainInit(tmp, true)
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	if err := os.WriteFile(filepath.Join(tmp, Marker), []byte(markerText), 0o644); err != nil {
		return &Error{Op: op, Err: err}
	}
	if _, err := r.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{c.URL}, Fetch: refSpecs}); err != nil {
		return &Error{Op: op, Err: err}
	}
	if err := c.get(ctx, r, auth, extra); err != nil {
		return err
	}
	return c.install(tmp)
}

// install renames the new repository at tmp to Dir. What is at Dir is
// first moved aside into TmpDir (and deleted once the new cache is in
// place) if it may be replaced; the rename is of the path itself, so a
// symlink there is moved, never followed.
func (c *Cache) install(tmp string) error {
	op := "create cache"
	fi, err := os.Lstat(c.Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Rename(tmp, c.Dir); err != nil {
			return &Error{Op: op, Err: err}
		}
		return nil
	case err != nil:
		return &Error{Op: op, Err: err}
	}
	if fi.IsDir() {
		if err := c.replaceable(); err != nil {
			return err
		}
	}
	aside, err := os.MkdirTemp(c.TmpDir, "damaged-")
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	defer os.RemoveAll(aside)
	if err := os.Rename(c.Dir, filepath.Join(aside, "repo")); err != nil {
		return &Error{Op: op, Err: err}
	}
	if err := os.Rename(tmp, c.Dir); err != nil {
		return &Error{Op: op, Err: err}
	}
	return nil
}

// replaceable says whether the folder at Dir may be deleted: it carries
// the marker, or it is no repository whose branches and tags can be read.
func (c *Cache) replaceable() error {
	if _, err := os.Lstat(filepath.Join(c.Dir, Marker)); err == nil {
		return nil
	}
	r, done, err := c.open()
	if err != nil {
		return nil // no repository: nothing a person could want from it
	}
	defer done()
	if err := checkTips(r); err != nil {
		return nil
	}
	return &Error{Op: "replace cache " + c.Dir, Err: fmt.Errorf("it is a git repository without the reconciler's marker file %s, so the reconciler will not delete it; move it away, then run again", Marker)}
}

// setURL keeps the cache's remote in step with desired.yaml, so changing
// source.repo needs no manual step.
func (c *Cache) setURL(r *git.Repository) error {
	cfg, err := r.Config()
	if err != nil {
		return readErr("read cache config", err)
	}
	rc, ok := cfg.Remotes["origin"]
	if ok && len(rc.URLs) == 1 && rc.URLs[0] == c.URL {
		return nil
	}
	cfg.Remotes["origin"] = &config.RemoteConfig{Name: "origin", URLs: []string{c.URL}, Fetch: refSpecs}
	if err := r.SetConfig(cfg); err != nil {
		return &Error{Op: "write cache config", Err: err}
	}
	return nil
}

// auth is how to log in to an ssh remote, as git's ssh would (see
// ssh.go); nil for other remotes. A key file that is missing or
// unreadable, or no key at all, needs a person: it is an error before any
// network.
func (c *Cache) auth() (transport.AuthMethod, error) {
	return newSSHAuth(c.URL, c.SSHKey)
}
