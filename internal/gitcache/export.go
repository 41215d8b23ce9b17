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

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrSubmodule is returned by Export for a tree that contains a submodule.
var ErrSubmodule = errors.New("submodules are not supported yet")

// Reserved is a top-level name Export refuses to write, because the
// release's record lives there.
const Reserved = ".reconciler"

// inlineMax is the largest blob handed to a writer goroutine in memory;
// larger blobs are streamed to disk by the reader itself, so memory stays
// bounded by writers × inlineMax whatever the repository holds.
const inlineMax = 1 << 20

type file struct {
	path string
	mode os.FileMode
	data []byte
}

// Export writes the tree of commit sha (or its subdirectory subpath) into
// dest, which must exist: regular files with their executable bit, and
// symlinks; no .git. go-git's object reads are not safe from several
// goroutines (go-git issues #48, #773), so one goroutine walks the tree and
// reads the blobs while the writes, which dominate, go to one writer per
// core.
func (c *Cache) Export(ctx context.Context, sha, subpath, dest string) error {
	r, done, err := c.open()
	if err != nil {
		return fmt.Errorf("export %s: %w", sha, err)
	}
	defer done()
	commit, err := r.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return &Error{Op: "export " + sha, Err: fmt.Errorf("read commit: %w", err)}
	}
	tree, err := commit.Tree()
	if err != nil {
		return &Error{Op: "export " + sha, Err: fmt.Errorf("read tree: %w", err)}
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
	work := make(chan file, 64)
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		werr    error
	)
	setErr := func(err error) {
		errOnce.Do(func() { werr = err; cancel() })
	}
	writers := runtime.GOMAXPROCS(0)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if err := writeFile(f.path, f.mode, f.data); err != nil {
					setErr(err)
				}
			}
		}()
	}
	rerr := c.walk(ctx, r, tree, dest, work)
	close(work)
	wg.Wait()
	if rerr != nil {
		if errors.Is(rerr, context.Canceled) && werr != nil {
			return fmt.Errorf("export %s: %w", sha, werr)
		}
		return fmt.Errorf("export %s: %w", sha, rerr)
	}
	if werr != nil {
		return fmt.Errorf("export %s: %w", sha, werr)
	}
	return nil
}

func (c *Cache) walk(ctx context.Context, r interface {
	BlobObject(plumbing.Hash) (*object.Blob, error)
}, tree *object.Tree, dest string, work chan<- file) error {
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
			return fmt.Errorf("walk tree: %w", err)
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
		case filemode.Symlink:
			b, err := readBlob(r, e.Hash)
			if err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			if err := os.Symlink(string(b), path); err != nil {
				return err
			}
		case filemode.Regular, filemode.Executable, filemode.Deprecated:
			mode := os.FileMode(0o644)
			if e.Mode == filemode.Executable {
				mode = 0o755
			}
			blob, err := r.BlobObject(e.Hash)
			if err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			if blob.Size > inlineMax {
				if err := streamBlob(blob, path, mode); err != nil {
					return err
				}
				continue
			}
			b, err := readAll(blob)
			if err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			select {
			case work <- file{path, mode, b}:
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			return fmt.Errorf("%s has unsupported mode %s", name, e.Mode)
		}
	}
}

func readBlob(r interface {
	BlobObject(plumbing.Hash) (*object.Blob, error)
}, h plumbing.Hash) ([]byte, error) {
	blob, err := r.BlobObject(h)
	if err != nil {
		return nil, err
	}
	return readAll(blob)
}

func readAll(blob *object.Blob) ([]byte, error) {
	rd, err := blob.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	b := make([]byte, blob.Size)
	if _, err := io.ReadFull(rd, b); err != nil {
		return nil, err
	}
	return b, nil
}

func streamBlob(blob *object.Blob, path string, mode os.FileMode) error {
	rd, err := blob.Reader()
	if err != nil {
		return err
	}
	defer rd.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rd); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// writeFile creates path exclusively: the release was emptied before the
// export, so an existing file means something is wrong, and O_EXCL never
// follows a symlink planted where a file should go.
func writeFile(path string, mode os.FileMode, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
