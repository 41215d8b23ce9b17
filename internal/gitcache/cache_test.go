package gitcache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

func newCache(t *testing.T, url string) *Cache {
	dir := t.TempDir()
	return &Cache{Dir: filepath.Join(dir, "repo"), URL: url, TmpDir: filepath.Join(dir, "tmp")}
}

func TestFetchResolveExport(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	r.Write("app/main.py", "print(1)\n")
	r.WriteMode("app/run.sh", "#!/bin/sh\n", 0o755)
	r.Write("README", "readme\n")
	if err := os.Symlink("main.py", filepath.Join(r.Dir, "app", "link.py")); err != nil {
		t.Fatal(err)
	}
	v1 := r.Commit("v1")
	r.Git("tag", "v1")
	c := newCache(t, r.Dir)

	if _, _, err := c.Resolve(ctx, "main"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resolve before any fetch: %v", err)
	}
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(c.TmpDir); len(left) != 0 {
		t.Errorf("the clone left %d entries in its scratch folder", len(left))
	}
	for _, tt := range []struct {
		ref  string
		kind Kind
	}{{v1, KindCommit}, {v1[:7], KindCommit}, {"v1", KindTag}, {"main", KindBranch}} {
		sha, kind, err := c.Resolve(ctx, tt.ref)
		if err != nil || sha != v1 || kind != tt.kind {
			t.Errorf("Resolve(%s) = %s, %s, %v; want %s, %s", tt.ref, sha, kind, err, v1, tt.kind)
		}
	}
	if _, _, err := c.Resolve(ctx, "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown ref: %v", err)
	}

	dest := t.TempDir()
	if err := c.Export(ctx, v1, "", dest); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "app", "main.py")); string(b) != "print(1)\n" {
		t.Errorf("main.py: %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(dest, "app", "run.sh")); fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("run.sh lost its executable bit: %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(dest, "README")); fi.Mode().Perm()&0o100 != 0 {
		t.Errorf("README became executable: %v", fi.Mode())
	}
	if target, err := os.Readlink(filepath.Join(dest, "app", "link.py")); err != nil || target != "main.py" {
		t.Errorf("link.py: %q, %v", target, err)
	}
	if _, err := os.Stat(filepath.Join(dest, ".git")); err == nil {
		t.Error("export wrote .git")
	}

	sub := t.TempDir()
	if err := c.Export(ctx, v1, "app", sub); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sub, "main.py")); err != nil {
		t.Error("source.path export lacks main.py")
	}
	if err := c.Export(ctx, v1, "nope", t.TempDir()); err == nil || !strings.Contains(err.Error(), `source.path "nope" is not a directory`) {
		t.Errorf("missing subpath: %v", err)
	}

	// The branch moves: the cache still says v1, the remote says v2.
	v2 := r.Commit("v2")
	if sha, _, _ := c.Resolve(ctx, "main"); sha != v1 {
		t.Errorf("the cache changed without a fetch")
	}
	if sha, err := c.LsRemote(ctx, "main"); err != nil || sha != v2 {
		t.Errorf("LsRemote = %s, %v; want %s", sha, err, v2)
	}
	if c.HasCommit(v2) {
		t.Error("HasCommit(v2) before the fetch")
	}
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if sha, _, _ := c.Resolve(ctx, "main"); sha != v2 || !c.HasCommit(v2) {
		t.Errorf("after fetch main is %s", sha)
	}
}

func TestExportRefuses(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	r.Write(".reconciler/x", "")
	reserved := r.Commit("reserved")
	r.Git("rm", "-rq", ".reconciler")
	r.Write("a", "")
	r.Commit("a")
	// A submodule entry (a gitlink) without a real submodule repository.
	r.Git("update-index", "--add", "--cacheinfo", "160000,"+reserved+",vendor/lib")
	r.Git("commit", "-qm", "submodule")
	sub := r.Git("rev-parse", "HEAD")
	c := newCache(t, r.Dir)
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Export(ctx, reserved, "", t.TempDir()); err == nil || !strings.Contains(err.Error(), "top-level .reconciler") {
		t.Errorf("reserved name: %v", err)
	}
	if err := c.Export(ctx, sub, "", t.TempDir()); !errors.Is(err, ErrSubmodule) || !strings.Contains(err.Error(), "vendor/lib is a submodule") {
		t.Errorf("submodule: %v", err)
	}
}

func TestFetchErrors(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, filepath.Join(t.TempDir(), "missing"))
	err := c.Fetch(ctx)
	var ge *Error
	if !errors.As(err, &ge) || ge.Transient || !strings.Contains(err.Error(), "repository not found") {
		t.Errorf("missing repository: %v", err)
	}
	if c.Exists() {
		t.Error("a failed first clone left a cache behind")
	}
	// A port nothing listens on: the network failed, a later try may pass.
	c = newCache(t, "http://127.0.0.1:1/app.git")
	err = c.Fetch(ctx)
	if !errors.As(err, &ge) || !ge.Transient {
		t.Errorf("connection refused should be transient: %#v", err)
	}
}
