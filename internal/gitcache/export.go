package gitcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrSubmodule is returned by Export for a tree that contains a submodule.
var ErrSubmodule = errors.New("submodules are not supported yet")

// Reserved is a top-level name Export refuses to write, because the
// release's record lives there.
const Reserved = ".reconciler"

// DefaultWriters is the number of export workers. Each reads blobs and
// writes files; file creation waits on the kernel, so more workers than
// cores overlap those waits.
func DefaultWriters() int { return 2 * runtime.GOMAXPROCS(0) }

type job struct {
	path string
	mode filemode.FileMode
	hash plumbing.Hash
}

// Export writes the tree of commit sha (or its subdirectory subpath) into
// dest, which must exist: regular files with their executable bit, and
// symlinks; no .git.
//
// With Verify set, a commit without a signature Verify accepts is refused
// before anything is written: a *Error, not transient, wrapping a
// *SignatureError.
//
// One goroutine walks the tree and makes the directories; workers read the
// blobs and write the files. go-git's repository is not safe for use from
// several goroutines (go-git issues #48, #773), so each worker opens its
// own, as the maintainers advise: reading — inflating and hashing every
// object — is then spread over the cores instead of bounding the export on
// one.
func (c *Cache) Export(ctx context.Context, sha, subpath, dest string) error {
	r, done, err := c.open()
	if err != nil {
		return fmt.Errorf("export %s: %w", sha, err)
	}
	defer done()
	commit, err := r.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return readErr("export "+sha, fmt.Errorf("read commit: %w", err))
	}
	if c.Verify.Enabled() {
		if err := c.Verify.check(c.Verify.op(), commit); err != nil {
			return err
		}
	}
	tree, err := commit.Tree()
	if err != nil {
		return readErr("export "+sha, fmt.Errorf("read tree: %w", err))
	}
	if subpath != "" {
		tree, err = tree.Tree(subpath)
		if err != nil {
			return &Error{Op: "export " + sha, Err: fmt.Errorf("source.path %q is not a directory in this commit", subpath)}
		}
	}
	for _, e := range tree.Entries {
		if e.Name == Reserved {
			return &Error{Op: "export " + sha, Err: fmt.Errorf("the tree has a top-level %s, a name the reconciler keeps for its records", Reserved)}
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan job, 256)
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		werr    error
	)
	setErr := func(err error) {
		errOnce.Do(func() { werr = err; cancel() })
	}
	workers := c.Writers
	if workers <= 0 {
		workers = DefaultWriters()
	}
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wr, wdone, err := c.openStreaming()
			if err != nil {
				setErr(err)
				for range jobs {
				}
				return
			}
			defer wdone()
			for j := range jobs {
				if ctx.Err() != nil {
					continue // drain
				}
				if err := writeEntry(wr, j); err != nil {
					setErr(fmt.Errorf("%s: %w", j.path, err))
				}
			}
		}()
	}
	rerr := walk(ctx, tree, dest, jobs)
	close(jobs)
	wg.Wait()
	switch {
	case werr != nil:
		return fmt.Errorf("export %s: %w", sha, werr)
	case rerr != nil:
		return fmt.Errorf("export %s: %w", sha, rerr)
	}
	return nil
}

// walk makes the directories of tree under dest and sends every file and
// symlink to the workers, parents before children.
func walk(ctx context.Context, tree *object.Tree, dest string, jobs chan<- job) error {
	w := object.NewTreeWalker(tree, true, nil)
	defer w.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		name, e, err := w.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return readErr("walk tree", err)
		}
		// Tree entry names can't hold "/" or be "..", but the tree is
		// input: check rather than trust.
		if strings.Contains(e.Name, "/") || e.Name == ".." || e.Name == "." || e.Name == ".git" {
			return fmt.Errorf("tree entry %q is not allowed", name)
		}
		path := filepath.Join(dest, name)
		switch e.Mode {
		case filemode.Dir:
			if err := os.Mkdir(path, 0o755); err != nil {
				return err
			}
		case filemode.Submodule:
			return fmt.Errorf("%w: %s is a submodule", ErrSubmodule, name)
		case filemode.Symlink, filemode.Regular, filemode.Executable, filemode.Deprecated:
			select {
			case jobs <- job{path: path, mode: e.Mode, hash: e.Hash}:
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			return fmt.Errorf("%s has unsupported mode %s", name, e.Mode)
		}
	}
}

func writeEntry(r *git.Repository, j job) error {
	op := "read blob " + j.hash.String()
	blob, err := r.BlobObject(j.hash)
	if err != nil {
		return readErr(op, err)
	}
	brd, err := blob.Reader()
	if err != nil {
		return readErr(op, err)
	}
	defer brd.Close()
	// A corrupt object shows only as it is inflated: its read errors say
	// the cache is damaged, unlike the write errors of the copy (a full
	// disk), which do not.
	rd := &blobReader{r: brd, op: op}
	if j.mode == filemode.Symlink {
		target, err := io.ReadAll(io.LimitReader(rd, 4096))
		if err != nil {
			return err
		}
		return os.Symlink(string(target), j.path)
	}
	perm := os.FileMode(0o644)
	if j.mode == filemode.Executable {
		perm = 0o755
	}
	// O_EXCL: the release was emptied before the export, so an existing
	// file means something is wrong, and it never follows a symlink
	// planted where a file should go.
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rd); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// blobReader marks the read errors of a blob as damage of the cache.
type blobReader struct {
	r  io.Reader
	op string
}

func (b *blobReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = readErr(b.op, err)
	}
	return n, err
}
