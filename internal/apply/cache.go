package apply

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/stepcache"
)

// cacheUse is what a cached build step did: the entry it linked, and
// whether it was on disk already.
type cacheUse struct {
	entry string
	hit   bool
}

// cached runs a cached build step: its key is made from the release's key
// files; a sealed entry of that key is linked into the release, and
// otherwise the step fills a new entry first, which is then sealed.
func (e *executor) cached(ctx context.Context, p *plan.Plan, s plan.Step) (cacheUse, error) {
	c := s.Cache
	rel := e.l.ReleaseDir(s.Release)
	in, err := stepcache.Inputs(rel, c.Spec.Patterns)
	if err != nil {
		return cacheUse{}, fmt.Errorf("cache key: %w", err)
	}
	secret, err := stepcache.EnsureSecret(e.l.CacheSecretFile())
	if err != nil {
		return cacheUse{}, err
	}
	spec := c.Spec
	spec.Secret = secret
	key := stepcache.Key(spec, in)
	if c.Key != "" && key != c.Key {
		e.View.Note(s, fmt.Sprintf("the key is %s…, not %s… as planned: the release's key files differ from the commit's (a shared file, or an earlier step changed them)",
			stepcache.Short(key), stepcache.Short(c.Key)))
	}
	use := cacheUse{entry: stepcache.EntryName(s.Name, key)}
	dir := e.l.CacheEntry(s.Name, key)
	if seal, err := stepcache.ReadSeal(e.l.CacheSeal(s.Name, key)); err == nil && seal.Step == s.Name && seal.Key == key && isDir(dir) {
		use.hit = true
	} else {
		if c.Hit {
			e.View.Note(s, "the planned cache entry is gone; the step runs and fills it again")
		}
		if err := e.fill(ctx, p, s, in, key); err != nil {
			return use, err
		}
	}
	for _, path := range c.Spec.Paths {
		if err := linkInto(rel, path, filepath.Join(dir, path)); err != nil {
			return use, fmt.Errorf("link cached %s: %w", path, err)
		}
	}
	return use, nil
}

// fill runs the step in a new entry holding copies of its key files, and
// seals the entry when it succeeded: owned by the reconciler, read-only,
// its files on disk, then the seal record written. An entry left unsealed
// by an earlier, interrupted fill is discarded first.
func (e *executor) fill(ctx context.Context, p *plan.Plan, s plan.Step, in []stepcache.Input, key string) (err error) {
	stepDir := e.l.CacheStepDir(s.Name)
	for _, d := range []string{e.l.CacheDir(), stepDir, e.l.TmpDir()} {
		if err := fsx.EnsureDir(d, 0o755); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
	}
	dir := e.l.CacheEntry(s.Name, key)
	if err := e.discard(s.Name, key); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer func() {
		// A failed fill is no entry: it goes now, its output is in the
		// step's log. Only a kill leaves one for the next apply to discard.
		if err != nil {
			if derr := e.discard(s.Name, key); derr != nil {
				e.log.Warn("discard failed cache fill", zap.String("entry", stepcache.EntryName(s.Name, key)), zap.Error(derr))
			}
		}
	}()
	if err := stepcache.CopyInputs(e.l.ReleaseDir(s.Release), dir, in); err != nil {
		return err
	}
	uid, gid, err := owner(s.RunAs)
	if err != nil {
		return err
	}
	if err := chownTree(dir, uid, gid, ""); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if err := e.command(ctx, p, s, e.l.StepLog(s.Release, s.Name), dir, true); err != nil {
		return err
	}
	for _, path := range s.Cache.Spec.Paths {
		if err := checkOutput(dir, path); err != nil {
			return err
		}
	}
	size, files, err := stepcache.Freeze(dir, os.Geteuid(), os.Getegid())
	if err != nil {
		return fmt.Errorf("seal cache/%s/%s: %w", s.Name, stepcache.Short(key), err)
	}
	// The step's files reach the disk before the seal says they are there.
	if err := syncFS(dir); err != nil {
		return fmt.Errorf("seal cache/%s/%s: %w", s.Name, stepcache.Short(key), err)
	}
	seal := &stepcache.Seal{Step: s.Name, Key: key, Release: s.Release, Inputs: in, Paths: s.Cache.Spec.Paths,
		Size: size, Files: files, SealedAt: e.Now().UTC()}
	if err := stepcache.WriteSeal(e.l.CacheSeal(s.Name, key), seal); err != nil {
		return fmt.Errorf("seal cache/%s/%s: %w", s.Name, stepcache.Short(key), err)
	}
	return fsx.SyncDir(stepDir)
}

// checkOutput requires the step to have made path in the entry: a real
// file or directory, not a symlink, which could point where the seal does
// not reach.
func checkOutput(dir, path string) error {
	if err := fsx.CheckBeneath(dir, filepath.Dir(path)); err != nil {
		return fmt.Errorf("cache.paths %s: %w", path, err)
	}
	fi, err := os.Lstat(filepath.Join(dir, path))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("cache.paths %s: the step did not make it", path)
	case err != nil:
		return fmt.Errorf("cache.paths %s: %w", path, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("cache.paths %s: the step made a symlink; a cached output must be a file or a directory", path)
	}
	return nil
}

// discard removes an unsealed entry: the seal goes first, so that an entry
// being deleted is never taken for a sealed one.
func (e *executor) discard(step, key string) error {
	if err := os.Remove(e.l.CacheSeal(step, key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cache: %w", err)
	}
	if err := fsx.SyncDir(e.l.CacheStepDir(step)); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	trash, err := os.MkdirTemp(e.l.TmpDir(), "cache-")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if err := stepcache.Remove(e.l.CacheEntry(step, key), filepath.Join(trash, "entry")); err != nil {
		return fmt.Errorf("cache: remove cache/%s/%s: %w", step, stepcache.Short(key), err)
	}
	return os.Remove(trash)
}

// pruneCache deletes a cache entry no kept release links. The records are
// read again first: an entry a release links is never deleted (invariant
// 13), whatever the plan thought.
func (e *executor) pruneCache(s plan.Step) error {
	step, key, ok := stepcache.SplitEntry(s.CacheEntry)
	if !ok {
		return fmt.Errorf("%q is not a cache entry", s.CacheEntry)
	}
	if by := e.linkedBy(s.CacheEntry); by != "" {
		e.View.Note(s, "skipped: release "+by+" links it")
		return nil
	}
	if err := fsx.CheckDir(e.l.CacheStepDir(step)); err != nil {
		return err
	}
	if err := fsx.EnsureDir(e.l.TmpDir(), 0o700); err != nil {
		return err
	}
	return e.discard(step, key)
}

// linkedBy names a release on disk whose record links the entry, or "".
func (e *executor) linkedBy(entry string) string {
	dirs, _ := os.ReadDir(e.l.ReleasesDir())
	for _, d := range dirs {
		if !layout.IsReleaseName(d.Name()) {
			continue
		}
		rec, err := record.ReadRelease(e.l.RecordFile(d.Name()))
		if err != nil {
			// It may link the entry: nothing is deleted on a guess.
			return d.Name() + " (its record cannot be read)"
		}
		for _, c := range rec.CacheEntries() {
			if c == entry {
				return d.Name()
			}
		}
	}
	return ""
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// syncFS flushes the filesystem that holds dir: the files a step wrote
// are many, and fsyncing each would cost more than one syncfs(2).
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
