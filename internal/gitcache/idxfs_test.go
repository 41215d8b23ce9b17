package gitcache

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// countFS counts the reads of .idx files.
type countFS struct {
	billy.Filesystem
	reads *atomic.Int64
}

func (f countFS) Open(name string) (billy.File, error) {
	file, err := f.Filesystem.Open(name)
	if err != nil || !strings.HasSuffix(name, ".idx") {
		return file, err
	}
	return countFile{file, f.reads}, nil
}

type countFile struct {
	billy.File
	reads *atomic.Int64
}

func (f countFile) Read(p []byte) (int, error) { f.reads.Add(1); return f.File.Read(p) }

// A cache of many packs (one per fetch) finds each commit with a read or
// two per pack index: go-git alone reads an index 4 bytes at a time, some
// 260 read(2) calls for each pack of the cache on each apply.
func TestPackIndexesReadWhole(t *testing.T) {
	app := testgit.New(t)
	const packs = 8
	var shas []string
	for i := range packs {
		app.Write("VERSION", fmt.Sprintf("v%d\n", i))
		shas = append(shas, app.Commit(fmt.Sprintf("v%d", i)))
		app.Git("repack", "-d", "-q") // the new objects into a pack of their own, as a fetch does
	}
	dir := filepath.Join(app.Dir, ".git")
	for _, tt := range []struct {
		name     string
		fs       func(billy.Filesystem) billy.Filesystem
		min, max int64
	}{
		{"go-git alone", func(fs billy.Filesystem) billy.Filesystem { return fs }, 100 * packs, -1},
		{"idxFS", func(fs billy.Filesystem) billy.Filesystem { return idxFS{fs} }, 1, 8 * packs},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var reads atomic.Int64
			st := filesystem.NewStorage(tt.fs(countFS{osfs.New(dir), &reads}), cache.NewObjectLRUDefault())
			defer st.Close()
			r, err := git.Open(st, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, sha := range shas {
				if _, err := r.CommitObject(plumbing.NewHash(sha)); err != nil {
					t.Fatalf("commit %s: %v", sha, err)
				}
			}
			t.Logf("%d reads of %d pack indexes", reads.Load(), packs)
			if n := reads.Load(); n < tt.min || (tt.max >= 0 && n > tt.max) {
				t.Errorf("%d reads of %d pack indexes; want %d to %d", n, packs, tt.min, tt.max)
			}
		})
	}
}

// The cache is opened through idxFS.
func TestCacheOpensThroughIdxFS(t *testing.T) {
	app := testgit.New(t)
	app.Commit("v1")
	c := &Cache{Dir: filepath.Join(app.Dir, ".git")}
	r, done, err := c.open()
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if fs := r.Storer.(*filesystem.Storage).Filesystem(); fmt.Sprintf("%T", fs) != "gitcache.idxFS" {
		t.Errorf("the cache's filesystem is a %T", fs)
	}
}
