package gitcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"

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
	// target is a symlink's, read by the walk, which checks it.
	target string
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
// blobs and write the files, a directory's files at a time. Each worker
// inflates blobs from the packs with its own reader (packread.go), so
// reading is spread over the cores instead of bounding the export on one;
// a blob in no pack it reads through a go-git repository of its own, as
// go-git's is not safe for use from several goroutines (go-git issues
// #48, #773).
func (c *Cache) Export(ctx context.Context, sha, subpath, dest string) (err error) {
	defer func() {
		if errors.Is(err, ErrDamaged) {
			err = &commitError{sha: sha, err: err}
		}
	}()
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

	x := &exporter{r: r, dest: dest, prefix: filepath.ToSlash(subpath), allowOut: c.AllowExternalSymlinks, links: map[string]string{}}
	if err := x.attributesAbove(commit, subpath); err != nil {
		return fmt.Errorf("export %s: %w", sha, err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan []job, 64)
	x.jobs = jobs
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
	packs, err := openPacks(c.Dir)
	if err != nil {
		return readErr("export "+sha, err)
	}
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &writer{c: c, pr: newPackReader(packs)}
			defer w.close()
			for batch := range jobs {
				for _, j := range batch {
					if ctx.Err() != nil {
						break // drain
					}
					if err := w.write(j); err != nil {
						setErr(fmt.Errorf("%s: %w", j.path, err))
					}
				}
			}
		}()
	}
	rerr := x.walk(ctx, tree, "")
	if rerr == nil {
		rerr = x.checkLinks()
	}
	close(jobs)
	wg.Wait()
	switch {
	case rerr != nil && !errors.Is(rerr, context.Canceled):
		// A refused tree says so, whatever a worker stopped on after the
		// cancel.
		return fmt.Errorf("export %s: %w", sha, rerr)
	case werr != nil:
		return fmt.Errorf("export %s: %w", sha, werr)
	case rerr != nil:
		return fmt.Errorf("export %s: %w", sha, rerr)
	}
	return nil
}

// exporter walks the tree being exported: it makes the directories, sends
// files and symlinks to the workers, leaves out what .gitattributes marks
// export-ignore and notes every symlink for checkLinks.
type exporter struct {
	r        *git.Repository
	dest     string
	prefix   string // source.path: attributes match the path in the whole tree
	allowOut bool
	jobs     chan<- []job
	attrs    attrStack
	links    map[string]string // dest-relative name -> target
	order    []string          // the symlinks in walk order, for a stable message
}

// walk exports tree, found at rel under dest ("" for dest itself), parents
// before children.
func (x *exporter) walk(ctx context.Context, tree *object.Tree, rel string) error {
	n := x.attrs.len()
	defer x.attrs.truncate(n)
	if err := x.readAttributes(tree, x.full(rel), rel == "" && x.prefix == ""); err != nil {
		return err
	}
	// The files of a directory go to one worker together: workers
	// creating files in the same directory wait on its lock in the
	// kernel, in different ones they do not.
	var batch []job
	add := func(j job) error {
		batch = append(batch, j)
		if len(batch) < maxBatch {
			return nil
		}
		b := batch
		batch = nil
		return x.send(ctx, b)
	}
	for _, e := range tree.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := path.Join(rel, e.Name)
		// Tree entry names can't hold "/" or be "..", but the tree is
		// input: check rather than trust.
		if e.Name == "" || strings.Contains(e.Name, "/") || strings.ContainsRune(e.Name, 0) || e.Name == ".." || e.Name == "." || e.Name == ".git" {
			return fmt.Errorf("tree entry %q is not allowed", name)
		}
		if x.attrs.exportIgnore(splitPath(x.full(name)), e.Mode == filemode.Dir) {
			continue
		}
		dst := filepath.Join(x.dest, name)
		switch e.Mode {
		case filemode.Dir:
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
			sub, err := x.r.TreeObject(e.Hash)
			if err != nil {
				return readErr("read tree "+name, err)
			}
			if err := x.walk(ctx, sub, name); err != nil {
				return err
			}
		case filemode.Submodule:
			return fmt.Errorf("%w: %s is a submodule", ErrSubmodule, name)
		case filemode.Symlink:
			target, err := x.linkTarget(e.Hash)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			x.links[name] = target
			x.order = append(x.order, name)
			if err := add(job{path: dst, mode: e.Mode, hash: e.Hash, target: target}); err != nil {
				return err
			}
		case filemode.Regular, filemode.Executable, filemode.Deprecated:
			if err := add(job{path: dst, mode: e.Mode, hash: e.Hash}); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s has unsupported mode %s", name, e.Mode)
		}
	}
	return x.send(ctx, batch)
}

// maxBatch bounds the files of one batch, so that a large directory is
// still shared by the workers.
const maxBatch = 64

func (x *exporter) send(ctx context.Context, batch []job) error {
	if len(batch) == 0 {
		return nil
	}
	select {
	case x.jobs <- batch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// full is the path of a dest-relative name in the whole tree.
func (x *exporter) full(name string) string {
	return path.Join(x.prefix, name)
}

// maxLinkTarget is the longest symlink target the kernel takes (PATH_MAX
// less the terminating NUL).
const maxLinkTarget = 4095

func (x *exporter) linkTarget(h plumbing.Hash) (string, error) {
	b, err := x.readBlob(h, maxLinkTarget+1)
	if err != nil {
		return "", err
	}
	if len(b) > maxLinkTarget {
		return "", errors.New("the symlink's target is longer than a path can be")
	}
	if len(b) == 0 || bytes.IndexByte(b, 0) >= 0 {
		return "", errors.New("the symlink's target is empty or holds a NUL byte")
	}
	return string(b), nil
}

// readBlob reads up to limit+1 bytes of a blob: a caller sees that it was
// longer than limit by the length.
func (x *exporter) readBlob(h plumbing.Hash, limit int64) ([]byte, error) {
	op := "read blob " + h.String()
	blob, err := x.r.BlobObject(h)
	if err != nil {
		return nil, readErr(op, err)
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, readErr(op, err)
	}
	defer rd.Close()
	return io.ReadAll(io.LimitReader(&blobReader{r: rd, op: op}, limit+1))
}

// writer is an export worker's: it reads blobs from the packs, and
// through go-git those in no pack.
type writer struct {
	c  *Cache
	pr *packReader
	// r is opened on the first blob in no pack.
	r     *git.Repository
	rdone func()
}

func (w *writer) close() {
	w.pr.Close()
	if w.rdone != nil {
		w.rdone()
	}
}

func (w *writer) write(j job) error {
	if j.mode == filemode.Symlink {
		return os.Symlink(j.target, j.path)
	}
	perm := os.FileMode(0o644)
	if j.mode == filemode.Executable {
		perm = 0o755
	}
	// O_EXCL: the release was emptied before the export, so an existing
	// file means something is wrong, and it never follows a symlink
	// planted where a file should go.
	f, err := createFile(j.path, perm)
	if err != nil {
		return err
	}
	err = w.pr.writeBlob(f, j.hash)
	if errors.Is(err, errNotPacked) {
		err = w.writeLoose(f, j.hash)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, ErrDamaged) {
			return readErr("read blob "+j.hash.String(), err)
		}
		return err
	}
	return f.Close()
}

// rawFile is a file written through its descriptor alone. An *os.File
// costs five more system calls a file (fcntl to make it non-blocking,
// epoll_ctl to register it with the poller, which refuses a regular
// file): 12,000 on an export of 2,400 files, which has nothing to wait
// for but the disk.
type rawFile struct {
	fd   int
	path string
}

// createFile creates the file path, which must not exist: O_EXCL also
// never follows a symlink there.
func createFile(path string, perm os.FileMode) (*rawFile, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, uint32(perm))
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return &rawFile{fd: fd, path: path}, nil
	}
}

func (f *rawFile) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := syscall.Write(f.fd, b[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return n, &os.PathError{Op: "write", Path: f.path, Err: err}
		case m == 0:
			return n, &os.PathError{Op: "write", Path: f.path, Err: io.ErrShortWrite}
		}
		n += m
	}
	return n, nil
}

func (f *rawFile) Close() error {
	if err := syscall.Close(f.fd); err != nil {
		return &os.PathError{Op: "close", Path: f.path, Err: err}
	}
	return nil
}

// writeLoose writes a blob that is in no pack, read through go-git.
func (w *writer) writeLoose(f io.Writer, h plumbing.Hash) error {
	if w.r == nil {
		r, done, err := w.c.openStreaming()
		if err != nil {
			return err
		}
		w.r, w.rdone = r, done
	}
	op := "read blob " + h.String()
	blob, err := w.r.BlobObject(h)
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
	_, err = io.CopyBuffer(plainWriter{f}, &blobReader{r: brd, op: op}, w.pr.buf)
	return err
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
