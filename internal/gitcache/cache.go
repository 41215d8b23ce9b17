package gitcache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/transport"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

// Kind says how a ref resolved, which decides whether it can move.
type Kind string

const (
	KindCommit Kind = "commit" // written as a SHA: never moves
	KindTag    Kind = "tag"    // treated as immutable once cached
	KindBranch Kind = "branch" // moves: the remote is asked where it points
)

// ErrDamaged marks a cache that cannot be read: objects missing, a ref
// file empty or a stale lock. Fetch repairs it by cloning afresh.
var ErrDamaged = errors.New("the git cache is damaged")

// ErrNotFound is returned by Resolve when the cache does not have the ref
// (or there is no cache yet): a fetch is needed.
var ErrNotFound = errors.New("not in the cache")

// Error is a failed operation on the cache or the remote. Transient errors
// (the network, a remote that did not answer) may pass on a later try;
// the others need a person (a wrong URL, refused credentials, a missing
// commit).
type Error struct {
	Op        string
	Err       error
	Transient bool
	// Remote: the remote refused (not found, authentication); the cache
	// is not at fault.
	Remote bool
}

func (e *Error) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// objectCacheSize bounds go-git's decoded-object cache. Its default, 96 MiB,
// would alone take most of the memory budget of an export.
const objectCacheSize = 16 * cache.MiByte

// Cache is the bare repository at Dir mirroring URL.
type Cache struct {
	Dir    string // <root>/repo
	URL    string
	SSHKey string // private key file for ssh remotes; "" for the agent or none
	TmpDir string // same filesystem as Dir, for the first clone
	// Writers is how many goroutines write exported files; 0 means
	// DefaultWriters.
	Writers int
	// Repaired is set when the last Fetch found the cache damaged and
	// cloned it afresh: why.
	Repaired string
}

// open opens the cache. The caller must call close. Pack files stay open
// until then: without KeepDescriptors go-git opens the pack file again for
// every object it reads, which doubled the time of an export.
func (c *Cache) open() (r *git.Repository, close func(), err error) {
	if _, err := os.Stat(filepath.Join(c.Dir, "HEAD")); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, ErrNotFound
		}
		return nil, nil, &Error{Op: "open cache " + c.Dir, Err: err}
	}
	st := filesystem.NewStorageWithOptions(osfs.New(c.Dir), cache.NewObjectLRU(objectCacheSize), filesystem.Options{KeepDescriptors: true})
	r, err = git.Open(st, nil)
	if err != nil {
		st.Close()
		return nil, nil, &Error{Op: "open cache " + c.Dir, Err: fmt.Errorf("%w: %v", ErrDamaged, err)}
	}
	return r, func() { st.Close() }, nil
}

// streamThreshold is the size above which an export worker's go-git
// streams a blob from the pack instead of decoding it whole into memory.
const streamThreshold = 1 << 20

// openStreaming opens the cache for an export worker: blobs are read once,
// so the object cache stays small, and large blobs are streamed, so memory
// is bounded by workers × streamThreshold whatever the repository holds.
func (c *Cache) openStreaming() (*git.Repository, func(), error) {
	st := filesystem.NewStorageWithOptions(osfs.New(c.Dir), cache.NewObjectLRU(cache.MiByte),
		filesystem.Options{KeepDescriptors: true, LargeObjectThreshold: streamThreshold})
	r, err := git.Open(st, nil)
	if err != nil {
		st.Close()
		return nil, nil, &Error{Op: "open cache " + c.Dir, Err: err}
	}
	return r, func() { st.Close() }, nil
}

// Exists reports whether the cache has been created.
func (c *Cache) Exists() bool {
	_, err := os.Stat(filepath.Join(c.Dir, "HEAD"))
	return err == nil
}

// Resolve finds ref in the cache without touching the network or the disk
// beyond reading. It returns ErrNotFound when the cache lacks it.
func (c *Cache) Resolve(ctx context.Context, ref string) (sha string, kind Kind, err error) {
	r, done, err := c.open()
	if err != nil {
		return "", "", err
	}
	defer done()
	if desired.IsHash(ref) {
		h, err := r.ResolveRevision(plumbing.Revision(ref))
		if err == nil {
			return h.String(), KindCommit, nil
		}
		// A hex string may still name a branch or tag; fall through.
	}
	for _, k := range []struct {
		name plumbing.ReferenceName
		kind Kind
	}{{plumbing.NewTagReferenceName(ref), KindTag}, {plumbing.NewBranchReferenceName(ref), KindBranch}} {
		rf, err := r.Reference(k.name, true)
		if err != nil {
			continue
		}
		h, err := r.ResolveRevision(plumbing.Revision(k.name))
		if err != nil {
			return "", "", &Error{Op: fmt.Sprintf("resolve %s", ref), Err: fmt.Errorf("%w: %s points at %s, which it cannot read: %v", ErrDamaged, k.name, rf.Hash(), err)}
		}
		return h.String(), k.kind, nil
	}
	return "", "", ErrNotFound
}

// HasCommit reports whether the cache holds the commit sha.
func (c *Cache) HasCommit(sha string) bool {
	r, done, err := c.open()
	if err != nil {
		return false
	}
	defer done()
	_, err = r.CommitObject(plumbing.NewHash(sha))
	return err == nil
}

// LsRemote asks the remote where branch points, without fetching.
func (c *Cache) LsRemote(ctx context.Context, branch string) (string, error) {
	rem := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{c.URL}})
	auth, err := c.auth()
	if err != nil {
		return "", err
	}
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		return "", translate("list refs of "+c.URL, err)
	}
	want := plumbing.NewBranchReferenceName(branch)
	for _, rf := range refs {
		if rf.Name() == want {
			return rf.Hash().String(), nil
		}
	}
	return "", &Error{Op: "list refs of " + c.URL, Err: fmt.Errorf("branch %q does not exist on the remote", branch)}
}

var refSpecs = []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}

// Fetch brings the cache up to date with the remote, creating it on first
// use. The first clone is made in TmpDir and renamed into place, so an
// interrupted clone never leaves a half cache at Dir.
func (c *Cache) Fetch(ctx context.Context) error {
	auth, err := c.auth()
	if err != nil {
		return err
	}
	if !c.Exists() {
		return c.clone(ctx, auth)
	}
	err = c.fetch(ctx, auth)
	var ge *Error
	if err == nil || (errors.As(err, &ge) && (ge.Transient || ge.Remote)) {
		return err
	}
	// Anything else is the cache's own fault (a stale lock, a truncated
	// ref, missing objects): do what git-sync does, start afresh.
	return c.repair(ctx, auth, err)
}

func (c *Cache) fetch(ctx context.Context, auth transport.AuthMethod) error {
	r, done, err := c.open()
	if err != nil {
		return err
	}
	defer done()
	if err := c.setURL(r); err != nil {
		return err
	}
	err = r.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   refSpecs,
		Auth:       auth,
		Tags:       git.NoTags, // the refspecs already take every tag
		Force:      true,
		Prune:      true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return translate("fetch "+c.URL, err)
	}
	// A fetch that found nothing new says nothing of the objects the
	// refs point at: check that every tip can be read.
	refs, err := r.References()
	if err != nil {
		return &Error{Op: "check cache", Err: fmt.Errorf("%w: %v", ErrDamaged, err)}
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
// missing behind readable refs.
func (c *Cache) Repair(ctx context.Context, cause error) error {
	auth, err := c.auth()
	if err != nil {
		return err
	}
	if !c.Exists() {
		return c.clone(ctx, auth)
	}
	return c.repair(ctx, auth, cause)
}

// repair moves the damaged cache aside and clones afresh. The damaged copy
// is deleted once the new cache is in place.
func (c *Cache) repair(ctx context.Context, auth transport.AuthMethod, cause error) error {
	if err := os.MkdirAll(c.TmpDir, 0o755); err != nil {
		return &Error{Op: "repair cache", Err: err}
	}
	aside, err := os.MkdirTemp(c.TmpDir, "damaged-")
	if err != nil {
		return &Error{Op: "repair cache", Err: err}
	}
	if err := os.Rename(c.Dir, filepath.Join(aside, "repo")); err != nil {
		return &Error{Op: "repair cache", Err: err}
	}
	if err := c.clone(ctx, auth); err != nil {
		return fmt.Errorf("re-clone the damaged cache (%v): %w", cause, err)
	}
	os.RemoveAll(aside)
	c.Repaired = cause.Error()
	return nil
}

func (c *Cache) clone(ctx context.Context, auth transport.AuthMethod) error {
	if err := os.MkdirAll(c.TmpDir, 0o755); err != nil {
		return &Error{Op: "create cache", Err: err}
	}
	tmp, err := os.MkdirTemp(c.TmpDir, "repo-")
	if err != nil {
		return &Error{Op: "create cache", Err: err}
	}
	defer os.RemoveAll(tmp)
	r, err := git.PlainInit(tmp, true)
	if err != nil {
		return &Error{Op: "create cache", Err: err}
	}
	if _, err := r.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{c.URL}, Fetch: refSpecs}); err != nil {
		return &Error{Op: "create cache", Err: err}
	}
	err = r.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   refSpecs,
		Auth:       auth,
		Tags:       git.NoTags,
		Force:      true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return translate("clone "+c.URL, err)
	}
	if err := os.Rename(tmp, c.Dir); err != nil {
		return &Error{Op: "create cache", Err: err}
	}
	return nil
}

// setURL keeps the cache's remote in step with desired.yaml, so changing
// source.repo needs no manual step.
func (c *Cache) setURL(r *git.Repository) error {
	cfg, err := r.Config()
	if err != nil {
		return &Error{Op: "read cache config", Err: err}
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

func (c *Cache) auth() (transport.AuthMethod, error) {
	if c.SSHKey == "" {
		return nil, nil
	}
	ep, err := transport.NewEndpoint(c.URL)
	if err != nil {
		return nil, &Error{Op: "parse " + c.URL, Err: err}
	}
	if ep.Protocol != "ssh" {
		return nil, nil
	}
	user := ep.User
	if user == "" {
		user = "git"
	}
	// Host keys are checked against known_hosts: NewPublicKeysFromFile
	// leaves HostKeyCallback unset and go-git then uses the known_hosts
	// files (SSH_KNOWN_HOSTS or ~/.ssh/known_hosts). Never ignored.
	keys, err := gitssh.NewPublicKeysFromFile(user, c.SSHKey, "")
	if err != nil {
		return nil, &Error{Op: "read ssh key " + c.SSHKey, Err: err}
	}
	return keys, nil
}

// translate turns go-git's errors into *Error with a kind, in one place.
func translate(op string, err error) error {
	var ge *Error
	if errors.As(err, &ge) {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &Error{Op: op, Err: err, Transient: true}
	case errors.Is(err, transport.ErrAuthenticationRequired):
		return &Error{Op: op, Remote: true, Err: errors.New("authentication required: set source.ssh_key or credentials for this remote")}
	case errors.Is(err, transport.ErrAuthorizationFailed):
		return &Error{Op: op, Remote: true, Err: errors.New("authorization refused by the remote")}
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return &Error{Op: op, Remote: true, Err: errors.New("repository not found")}
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return &Error{Op: op, Remote: true, Err: errors.New("the remote repository is empty")}
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) || strings.Contains(err.Error(), "connection refused") {
		return &Error{Op: op, Err: err, Transient: true, Remote: true}
	}
	return &Error{Op: op, Err: err}
}
