package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
)

// configGit is what Repo needs of git; gitcache.ConfigRepo is the one
// implementation, so that go-git stays in gitcache.
type configGit interface {
	// Fetch updates the clone of a remote repository; nothing for a
	// local one.
	Fetch(ctx context.Context) error
	// Head is the branch's commit in the local repository or the clone.
	Head(ctx context.Context) (string, error)
	// RemoteHead asks the remote where the branch points.
	RemoteHead(ctx context.Context) (string, error)
	// ReadFile reads a file of a commit, at most limit bytes.
	ReadFile(ctx context.Context, sha, path string, limit int64) ([]byte, error)
	// VerifyCommit checks the commit's signature; nil when nothing is
	// to be verified.
	VerifyCommit(ctx context.Context, sha string) error
}

var _ configGit = (*gitcache.ConfigRepo)(nil)

// Repo is a desired file committed to a git repository. Only committed
// content deploys: the file is read from the tip commit of the branch,
// never from a working tree.
type Repo struct {
	URL    string // a local path or a remote URL
	Path   string // of the file inside the repository
	Branch string
	// CacheDir holds the bare clone of a remote repository.
	CacheDir string
	// Poll is how often a remote repository is asked for its branch.
	Poll time.Duration
	Log  *zap.Logger
	// Verify is whose signature the tip commit must carry; the zero
	// Verifier takes any commit.
	Verify gitcache.Verifier
}

// Local reports whether the repository is a path on this host, read in
// place and watched with fsnotify. A file:// URL goes through the git
// transport like any remote: cloned, and polled.
func (r *Repo) Local() bool {
	if strings.Contains(r.URL, "://") {
		return false
	}
	return !strings.Contains(r.URL, ":") || filepath.IsAbs(r.URL)
}

func (r *Repo) localPath() string { return r.URL }

func (r *Repo) git() configGit {
	return &gitcache.ConfigRepo{URL: r.URL, Branch: r.Branch, CacheDir: r.CacheDir, Local: r.Local(), Verify: r.Verify}
}

// Load reads the file at the tip of the branch. With Verify set, a tip
// commit without a signature it accepts is not read: the error wraps a
// *gitcache.SignatureError naming the commit, and needs a person.
func (r *Repo) Load(ctx context.Context) (*Snapshot, error) {
	g := r.git()
	if err := g.Fetch(ctx); err != nil {
		return nil, err
	}
	sha, err := g.Head(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.VerifyCommit(ctx, sha); err != nil {
		return nil, err
	}
	b, err := g.ReadFile(ctx, sha, r.Path, desired.MaxFileSize+1)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(filepath.Join(r.localPath(), r.Path))
	if !r.Local() {
		dir = filepath.Dir(filepath.Join(r.CacheDir, r.Path))
	}
	return &Snapshot{Data: b, Name: fmt.Sprintf("%s@%s:%s", gitcache.Redact(r.URL), sha[:8], r.Path), Rev: sha, Commit: sha, Dir: dir}, nil
}

// Watch reports commits: a local repository's refs are watched with
// fsnotify, so a commit is seen at once; a remote one is polled, cheaply
// (its branch is compared before anything is fetched).
//
// A local repository is followed by its path, not by the folders that
// hold it today: deleted and created again (rm -rf; git init), its new
// folders are watched as they appear, from the parent folder on.
func (r *Repo) Watch(ctx context.Context, changed func(string)) error {
	if !r.Local() {
		return r.poll(ctx, changed)
	}
	path, err := filepath.Abs(r.localPath())
	if err != nil {
		return err
	}
	parent := filepath.Dir(path)
	gitDir := func() string {
		if fi, err := os.Stat(filepath.Join(path, ".git")); err == nil && fi.IsDir() {
			return filepath.Join(path, ".git")
		}
		return path // a bare repository, or none yet
	}
	// A commit rewrites refs/heads/<branch> (by rename), or packed-refs
	// after a gc; a branch with slashes lives in a subfolder. The parent
	// and the repository's own folders are watched for their creation.
	dirs := func() []string {
		g := gitDir()
		ds := []string{parent, path}
		if g != path {
			ds = append(ds, g)
		}
		heads := filepath.Join(g, "refs", "heads")
		ds = append(ds, filepath.Join(g, "refs"), heads)
		for i, b := 0, r.Branch; ; {
			j := strings.IndexByte(b[i:], '/')
			if j < 0 {
				break
			}
			ds = append(ds, filepath.Join(heads, b[:i+j]))
			i += j + 1
		}
		return ds
	}
	interesting := func(name string) bool {
		switch filepath.Dir(name) {
		case parent:
			return name == path
		case path:
			return gitDir() == path || filepath.Base(name) == ".git"
		}
		return true
	}
	present := func() bool {
		_, err := os.Stat(filepath.Join(gitDir(), "HEAD"))
		return err == nil
	}
	w := watcher{log: r.Log, what: path, dirs: dirs, interesting: interesting, present: present,
		rev: func() string { return r.head(ctx) }, changed: func() { changed("commit") }}
	return w.run(ctx)
}

// head is the branch's commit, "" while it can't be read (no repository,
// or no commit on the branch yet).
func (r *Repo) head(ctx context.Context) string {
	sha, err := r.git().Head(ctx)
	if err != nil {
		return ""
	}
	return sha
}

func (r *Repo) poll(ctx context.Context, changed func(string)) error {
	t := time.NewTicker(r.Poll)
	defer t.Stop()
	g := r.git()
	last := r.head(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			remote, err := g.RemoteHead(ctx)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return nil
				}
				r.Log.Warn("config repo poll failed", zap.Error(err))
				continue
			}
			if remote != last {
				last = remote
				changed("commit")
			}
		}
	}
}
