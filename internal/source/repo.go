package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

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

func (r *Repo) open() (*git.Repository, error) {
	if r.Local() {
		repo, err := git.PlainOpenWithOptions(r.localPath(), &git.PlainOpenOptions{DetectDotGit: false})
		if err != nil {
			return nil, fmt.Errorf("config repo %s: %w", r.URL, err)
		}
		return repo, nil
	}
	repo, err := git.PlainOpen(r.CacheDir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return nil, errNotFetched
	}
	if err != nil {
		return nil, fmt.Errorf("config cache %s: %w", r.CacheDir, err)
	}
	return repo, nil
}

var errNotFetched = errors.New("config repository not fetched yet")

// Load reads the file at the tip of the branch.
func (r *Repo) Load(ctx context.Context) (*Snapshot, error) {
	if !r.Local() {
		if err := r.fetch(ctx); err != nil {
			return nil, err
		}
	}
	repo, err := r.open()
	if err != nil {
		return nil, err
	}
	ref, err := repo.Reference(plumbing.NewBranchReferenceName(r.Branch), true)
	if err != nil {
		return nil, fmt.Errorf("config repo %s: branch %s: %w", r.URL, r.Branch, err)
	}
	commit, err := repo.CommitObject(ref.Hash())
	if err != nil {
		return nil, fmt.Errorf("config repo %s: commit %s: %w", r.URL, ref.Hash(), err)
	}
	f, err := commit.File(r.Path)
	if err != nil {
		return nil, fmt.Errorf("config repo %s at %s: %s: %w", r.URL, ref.Hash().String()[:8], r.Path, errNoFile)
	}
	rd, err := f.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	b, err := io.ReadAll(io.LimitReader(rd, desired.MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(filepath.Join(r.localPath(), r.Path))
	if !r.Local() {
		dir = filepath.Dir(filepath.Join(r.CacheDir, r.Path))
	}
	sha := ref.Hash().String()
	return &Snapshot{Data: b, Name: fmt.Sprintf("%s@%s:%s", r.URL, sha[:8], r.Path), Rev: sha, Commit: sha, Dir: dir}, nil
}

var configRefSpec = config.RefSpec("+refs/heads/*:refs/heads/*")

// fetch brings the remote's branch into the cache when it moved: the
// remote's refs are compared first, so a poll that finds nothing new
// fetches nothing.
func (r *Repo) fetch(ctx context.Context) error {
	repo, err := r.open()
	if errors.Is(err, errNotFetched) {
		if err := os.MkdirAll(filepath.Dir(r.CacheDir), 0o755); err != nil {
			return err
		}
		repo, err = git.PlainInit(r.CacheDir, true)
		if err == nil {
			_, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{r.URL}, Fetch: []config.RefSpec{configRefSpec}})
		}
	}
	if err != nil {
		return err
	}
	remote, err := r.remoteHead(ctx)
	if err != nil {
		return err
	}
	if local, err := repo.Reference(plumbing.NewBranchReferenceName(r.Branch), true); err == nil && local.Hash().String() == remote {
		return nil
	}
	err = repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: []config.RefSpec{configRefSpec}, Force: true, Tags: git.NoTags})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("fetch config repo %s: %w", r.URL, err)
	}
	return nil
}

func (r *Repo) remoteHead(ctx context.Context) (string, error) {
	rem := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{r.URL}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("list refs of config repo %s: %w", r.URL, err)
	}
	for _, ref := range refs {
		if ref.Name() == plumbing.NewBranchReferenceName(r.Branch) {
			return ref.Hash().String(), nil
		}
	}
	return "", fmt.Errorf("config repo %s has no branch %s", r.URL, r.Branch)
}

// Watch reports commits: a local repository's refs are watched with
// fsnotify, so a commit is seen at once; a remote one is polled, cheaply
// (its branch is compared before anything is fetched).
func (r *Repo) Watch(ctx context.Context, changed func(string)) error {
	if !r.Local() {
		return r.poll(ctx, changed)
	}
	gitDir := filepath.Join(r.localPath(), ".git")
	if fi, err := os.Stat(gitDir); err != nil || !fi.IsDir() {
		gitDir = r.localPath() // a bare repository
	}
	// A commit rewrites refs/heads/<branch> (by rename), or packed-refs
	// after a gc; a branch with slashes lives in a subfolder.
	dirs := []string{gitDir, filepath.Join(gitDir, "refs", "heads")}
	if i := strings.LastIndexByte(r.Branch, '/'); i > 0 {
		dirs = append(dirs, filepath.Join(gitDir, "refs", "heads", r.Branch[:i]))
	}
	interesting := func(name string) bool {
		return name == filepath.Base(r.Branch) || name == "packed-refs" || name == "HEAD"
	}
	return watchDirs(ctx, r.Log, dirs, interesting, r.head, func() { changed("commit") })
}

func (r *Repo) head() string {
	repo, err := r.open()
	if err != nil {
		return ""
	}
	ref, err := repo.Reference(plumbing.NewBranchReferenceName(r.Branch), true)
	if err != nil {
		return ""
	}
	return ref.Hash().String()
}

func (r *Repo) poll(ctx context.Context, changed func(string)) error {
	t := time.NewTicker(r.Poll)
	defer t.Stop()
	last := r.head()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			remote, err := r.remoteHead(ctx)
			if err != nil {
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
