package gitcache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// bigRepo makes a repository whose pack is mostly one large file, so that
// the middle of the cache's pack is inside that file's compressed data.
func bigRepo(t *testing.T) (*testgit.Repo, string) {
	t.Helper()
	r := testgit.New(t)
	var b strings.Builder
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&b, "%d %x\n", i, i*7919)
	}
	r.Write("big.txt", b.String())
	r.Write("VERSION", "1\n")
	return r, r.Commit("v1")
}

// corruptPack overwrites 64 bytes in the middle of every pack of the bare
// repository dir with zeros.
func corruptPack(t *testing.T, dir string) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	if len(packs) == 0 {
		t.Fatalf("no pack under %s", dir)
	}
	for _, p := range packs {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		if _, err := f.WriteAt(make([]byte, 64), fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

func TestDamagedCache(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		damage func(t *testing.T, c *Cache)
		// resolve: Resolve and HasCommit see the damage too (not only
		// the export).
		resolve bool
	}{
		{"corrupt pack", func(t *testing.T, c *Cache) { corruptPack(t, c.Dir) }, false},
		{"repo is a file", func(t *testing.T, c *Cache) {
			if err := os.RemoveAll(c.Dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(c.Dir, []byte("not a repository\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"repo is an empty folder", func(t *testing.T, c *Cache) {
			if err := os.RemoveAll(c.Dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(c.Dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"objects deleted", func(t *testing.T, c *Cache) {
			if err := os.RemoveAll(filepath.Join(c.Dir, "objects")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(c.Dir, "objects"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, v1 := bigRepo(t)
			c := newCache(t, r.Dir)
			if err := c.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			tt.damage(t, c)

			err := c.Export(ctx, v1, "", t.TempDir())
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("export of a damaged cache: %v; want ErrDamaged", err)
			}
			if tt.resolve {
				if _, _, err := c.Resolve(ctx, "main"); !errors.Is(err, ErrDamaged) {
					t.Errorf("Resolve: %v; want ErrDamaged", err)
				}
				// A missing object and one the cache never had look
				// the same: either way the fetch that follows heals.
				if _, _, err := c.Resolve(ctx, v1); !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrNotFound) {
					t.Errorf("Resolve(sha): %v; want ErrDamaged or ErrNotFound", err)
				}
				if c.HasCommit(v1) {
					t.Error("HasCommit in a damaged cache")
				}
			}

			// What the executor does: repair, export again.
			if err := c.Repair(ctx, err); err != nil {
				t.Fatalf("repair: %v", err)
			}
			dest := t.TempDir()
			if err := c.Export(ctx, v1, "", dest); err != nil {
				t.Fatalf("export after the repair: %v", err)
			}
			if b, _ := os.ReadFile(filepath.Join(dest, "VERSION")); string(b) != "1\n" {
				t.Errorf("VERSION after the repair: %q", b)
			}
			if left, _ := os.ReadDir(c.TmpDir); len(left) != 0 {
				t.Errorf("the repair left %d entries in its scratch folder", len(left))
			}
			if _, err := os.Stat(filepath.Join(c.Dir, Marker)); err != nil {
				t.Errorf("the new cache lacks its marker: %v", err)
			}
		})
	}
}

// Fetch finds a cache it cannot open and clones it afresh.
func TestFetchHealsCache(t *testing.T) {
	ctx := context.Background()
	r, _ := bigRepo(t)
	c := newCache(t, r.Dir)
	if err := os.MkdirAll(filepath.Dir(c.Dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Dir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if sha, _, err := c.Resolve(ctx, "main"); err != nil || sha != r.Git("rev-parse", "HEAD") {
		t.Errorf("after the fetch: %s, %v", sha, err)
	}
}

// A readable repository without the marker is not the reconciler's to
// delete, even when an export found it damaged.
func TestRepairKeepsForeignRepository(t *testing.T) {
	ctx := context.Background()
	r, v1 := bigRepo(t)
	c := newCache(t, r.Dir)
	if err := os.MkdirAll(filepath.Dir(c.Dir), 0o755); err != nil {
		t.Fatal(err)
	}
	other := testgit.New(t)
	other.Commit("mine")
	other.Git("clone", "-q", "--bare", other.Dir, c.Dir)
	err := c.Repair(ctx, fmt.Errorf("export %s: %w", v1, ErrDamaged))
	var ge *Error
	if !errors.As(err, &ge) || ge.Transient || !strings.Contains(err.Error(), "without the reconciler's marker") {
		t.Fatalf("repair over a foreign repository: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "HEAD")); err != nil {
		t.Errorf("the foreign repository was touched: %v", err)
	}
}
