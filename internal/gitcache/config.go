package gitcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/layout"
)

// ErrNoFile is returned by ConfigRepo.ReadFile for a path the commit does
// not have.
var ErrNoFile = errors.New("no such file in the commit")

// ConfigRepo is the daemon's config repository: a repository on this host
// read in place (Local), or a remote one mirrored into a bare clone at
// CacheDir. Only committed content is read, never a work tree.
type ConfigRepo struct {
	URL      string // a local path or a remote URL
	Branch   string
	CacheDir string // the bare clone of a remote repository
	Local    bool
	// Verify is whose signature a commit must carry to be read; see
	// VerifyCommit.
	Verify Verifier
}

var configRefSpec = config.RefSpec("+refs/heads/*:refs/heads/*")

// open opens the local repository, or the clone of a remote one;
// ErrNotFound when the clone was not made yet.
func (c *ConfigRepo) open() (*git.Repository, error) {
	if c.Local {
		r, err := git.PlainOpenWithOptions(c.URL, &git.PlainOpenOptions{DetectDotGit: false})
		if err != nil {
			// Not the damage of a cache: a path a person gave.
			return nil, &Error{Op: "open config repo " + c.URL, Err: err}
		}
		return r, nil
	}
	// The clone decides what deploys: it must be a directory only this
	// user (or root) can change, never one someone else made first.
	if err := fsx.CheckDirIfExists(c.CacheDir); err != nil {
		return nil, &Error{Op: "open config cache", Err: err}
	}
	r, err := git.PlainOpen(c.CacheDir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, translate("open config cache "+c.CacheDir, err)
	}
	return r, nil
}

// Head returns the commit the branch points at, read from the local
// repository or from the clone: no network.
func (c *ConfigRepo) Head(ctx context.Context) (string, error) {
	r, err := c.open()
	if err != nil {
		return "", err
	}
	ref, err := r.Reference(plumbing.NewBranchReferenceName(c.Branch), true)
	if err != nil {
		return "", translate(fmt.Sprintf("config repo %s: branch %s", Redact(c.URL), c.Branch), err)
	}
	return ref.Hash().String(), nil
}

// ReadFile reads path at commit sha, at most limit bytes (the caller
// checks whether more were there by asking for one more).
func (c *ConfigRepo) ReadFile(ctx context.Context, sha, path string, limit int64) ([]byte, error) {
	r, err := c.open()
	if err != nil {
		return nil, err
	}
	op := fmt.Sprintf("config repo %s at %s", Redact(c.URL), layout.Short(sha))
	commit, err := r.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return nil, translate(op, err)
	}
	f, err := commit.File(path)
	if errors.Is(err, object.ErrFileNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
		return nil, &Error{Op: op, Err: fmt.Errorf("%s: %w", path, ErrNoFile)}
	}
	if err != nil {
		return nil, translate(op, err)
	}
	rd, err := f.Reader()
	if err != nil {
		return nil, translate(op, err)
	}
	defer rd.Close()
	b, err := io.ReadAll(io.LimitReader(rd, limit))
	if err != nil {
		return nil, translate(op, err)
	}
	return b, nil
}

// RemoteHead asks the remote where the branch points, read-only.
func (c *ConfigRepo) RemoteHead(ctx context.Context) (string, error) {
	op := "ls-remote config repo " + Redact(c.URL)
	auth, err := newSSHAuth(c.URL, "")
	if err != nil {
		return "", err
	}
	rem := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{c.URL}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		return "", translate(op, explainAuth(err, auth))
	}
	want := plumbing.NewBranchReferenceName(c.Branch)
	for _, ref := range refs {
		if ref.Name() == want {
			return ref.Hash().String(), nil
		}
	}
	return "", translate(op, fmt.Errorf("%w: branch %q", ErrUnknownRef, c.Branch))
}

// Fetch brings the remote's branches into the clone, creating it on first
// use, when the branch moved: the remote's refs are compared first, so a
// poll that finds nothing new fetches nothing. A local repository needs
// no fetch.
func (c *ConfigRepo) Fetch(ctx context.Context) error {
	if c.Local {
		return nil
	}
	r, err := c.open()
	if errors.Is(err, ErrNotFound) {
		if err := fsx.EnsureDir(filepath.Dir(c.CacheDir), 0o700); err != nil {
			return &Error{Op: "create config cache", Err: err}
		}
		r, err = git.PlainInit(c.CacheDir, true)
		if err == nil {
			_, err = r.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{c.URL}, Fetch: []config.RefSpec{configRefSpec}})
		}
		if err != nil {
			return translate("create config cache "+c.CacheDir, err)
		}
	}
	if err != nil {
		return err
	}
	// The clone fetches from the configured URL, whatever its origin
	// says: a clone whose origin was changed (by hand, or a --config-repo
	// changed under the same --config-cache) is reset to it.
	if err := c.resetOrigin(r); err != nil {
		return err
	}
	remote, err := c.RemoteHead(ctx)
	if err != nil {
		return err
	}
	if local, err := r.Reference(plumbing.NewBranchReferenceName(c.Branch), true); err == nil && local.Hash().String() == remote {
		return nil
	}
	auth, err := newSSHAuth(c.URL, "")
	if err != nil {
		return err
	}
	err = r.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: []config.RefSpec{configRefSpec}, Force: true, Tags: git.NoTags, Auth: auth})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return translate("fetch config repo "+Redact(c.URL), explainAuth(err, auth))
	}
	return nil
}

func (c *ConfigRepo) resetOrigin(r *git.Repository) error {
	cfg, err := r.Config()
	if err != nil {
		return readErr("read config cache config", err)
	}
	if rc, ok := cfg.Remotes["origin"]; ok && len(rc.URLs) == 1 && rc.URLs[0] == c.URL {
		return nil
	}
	cfg.Remotes["origin"] = &config.RemoteConfig{Name: "origin", URLs: []string{c.URL}, Fetch: []config.RefSpec{configRefSpec}}
	if err := r.SetConfig(cfg); err != nil {
		return &Error{Op: "reset config cache origin", Err: err}
	}
	// What the old origin put there is not trusted: its refs go, and the
	// fetch below brings the configured repository's.
	refs, err := r.References()
	if err != nil {
		return readErr("list config cache refs", err)
	}
	defer refs.Close()
	var drop []plumbing.ReferenceName
	refs.ForEach(func(ref *plumbing.Reference) error {
		if ref.Name().IsBranch() || ref.Name().IsRemote() || ref.Name().IsTag() {
			drop = append(drop, ref.Name())
		}
		return nil
	})
	for _, name := range drop {
		if err := r.Storer.RemoveReference(name); err != nil {
			return &Error{Op: "reset config cache refs", Err: err}
		}
	}
	return nil
}
