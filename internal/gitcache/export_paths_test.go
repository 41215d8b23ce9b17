package gitcache

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// archiveFiles lists what `git archive` puts in its tar for args, with
// the first strip components of each name taken off, as
// `tar -x --strip-components` does: directories end in "/".
func archiveFiles(t *testing.T, r *testgit.Repo, strip int, args ...string) []string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"archive", "--format=tar"}, args...)...)
	cmd.Dir, cmd.Env = r.Dir, r.Env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git archive %v: %v", args, err)
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		parts := strings.Split(strings.TrimSuffix(h.Name, "/"), "/")
		if len(parts) <= strip {
			continue
		}
		name := strings.Join(parts[strip:], "/")
		if h.Typeflag == tar.TypeDir {
			name += "/"
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// exported lists what is under dir, in archiveFiles' form.
func exported(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			rel += "/"
		}
		names = append(names, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// TestExportIgnoreLikeGitArchive exports trees with .gitattributes and
// compares the files with what git archive writes: the whole tree, and a
// subdirectory as Capistrano exports it (git archive <commit> <path> |
// tar -x --strip-components).
func TestExportIgnoreLikeGitArchive(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	for _, f := range []string{
		"README.md", "keep.txt", "docs/a.txt", "docs/deeper/b.txt", "a/b/c.tmp", "a/b/d.txt",
		"app/README.md", "app/keep.txt", "app/docs/b.txt", "app/deep/x/y.md", "app/deep/x/z.txt",
		"app/local.log", "app/other.log", "app/tests/t.py", "app/src/tests/u.py", "app/src/main.py",
		"app/build/out", "app/build.txt", "app/vendor/v/LICENSE.md", "app/notes/n.txt",
		"app/ci/ci.yml", "app/ci/keep.yml",
	} {
		r.Write(f, f+"\n")
	}
	r.Write(".gitattributes", "# exported as git archive does\n"+
		"docs/ export-ignore\n"+ // a directory, at any depth
		"*.md export-ignore\n"+ // a file glob, at any depth
		"*.tmp export-ignore\n"+
		"/app/tests export-ignore\n"+ // anchored: app/src/tests stays
		"[attr]private export-ignore\n"+ // a macro
		"app/notes private\n"+
		"!keep.txt export-ignore\n"+ // negative patterns are ignored
		"\"\"\n"+ // a line go-git cannot parse alone
		"build/ export-ignore\n") // directories only: app/build.txt stays
	r.Write("app/.gitattributes", "*.log export-ignore\n"+
		"other.log -export-ignore\n"+ // unset overrides set
		"keep.txt export-ignore\n"+
		"vendor/**/*.md !export-ignore\n"+ // unspecified overrides *.md
		"ci/* export-ignore\n"+
		"ci/keep.yml -export-ignore\n"+
		".gitattributes export-ignore\n")
	sha := r.Commit("attrs")
	c := newCache(t, r.Dir)
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, sub string
		strip     int
		args      []string
	}{
		{"whole tree", "", 0, []string{sha}},
		{"source.path", "app", 1, []string{sha, "app"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dest := t.TempDir()
			if err := c.Export(ctx, sha, tt.sub, dest); err != nil {
				t.Fatal(err)
			}
			want := archiveFiles(t, r, tt.strip, tt.args...)
			got := exported(t, dest)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("exported:\n  %s\ngit archive:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			t.Logf("git archive: %v", want)
			if len(want) < 5 {
				t.Fatalf("git archive exported only %v", want)
			}
		})
	}
	// The patterns did something: compare with the tree without them.
	for _, gone := range []string{"README.md", "docs", "app/docs", "app/tests", "app/notes", "app/build", "a/b/c.tmp"} {
		dest := t.TempDir()
		if err := c.Export(ctx, sha, "", dest); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(dest, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s was exported", gone)
		}
	}
}

// TestExportIgnoredSourcePath refuses a source.path that .gitattributes
// leaves out, rather than deploying an empty release.
func TestExportIgnoredSourcePath(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	r.Write("app/a", "")
	r.Write(".gitattributes", "app export-ignore\n")
	sha := r.Commit("v1")
	c := newCache(t, r.Dir)
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Export(ctx, sha, "app", t.TempDir()); err == nil || !strings.Contains(err.Error(), "source.path app is marked export-ignore") {
		t.Fatalf("export: %v", err)
	}
}

// TestExportSymlinks refuses a tree with a symlink that leaves the
// release, naming it and its target, unless AllowExternalSymlinks.
func TestExportSymlinks(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		links map[string]string // name -> target
		sub   string
		bad   string // the link refused; "" when the export succeeds
	}{
		{"absolute", map[string]string{"static": "/etc"}, "", "static -> /etc"},
		{"climbs out", map[string]string{"a/up": "../../x"}, "", "a/up -> ../../x"},
		{"climbs to the top", map[string]string{"a/up": "../b"}, "", ""},
		{"the top itself", map[string]string{"a/up": ".."}, "", ""},
		{"through another link", map[string]string{"a/up": "..", "esc": "a/up/.."}, "", "esc -> a/up/.."},
		{"through a chain", map[string]string{"a/l1": "../b/l2", "b/l2": "/etc/passwd"}, "", "a/l1 -> ../b/l2"},
		{"out of source.path", map[string]string{"app/up": "../README"}, "app", "up -> ../README"},
		{"inside source.path", map[string]string{"app/x/up": "../y"}, "app", ""},
		{"a loop", map[string]string{"loop1": "loop2", "loop2": "loop1", "self": "self"}, "", ""},
		{"a loop that climbs", map[string]string{"a/l": "../a/l/.."}, "", ""},
		{"dot dot in a name", map[string]string{"a/l": "..b"}, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := testgit.New(t)
			r.Write("README", "")
			r.Write("app/README", "")
			for name, target := range tt.links {
				p := filepath.Join(r.Dir, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.Symlink(target, p); err != nil {
					t.Fatal(err)
				}
			}
			sha := r.Commit("links")
			c := newCache(t, r.Dir)
			if err := c.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			err := c.Export(ctx, sha, tt.sub, t.TempDir())
			if tt.bad == "" {
				if err != nil {
					t.Fatalf("export: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrSymlinkOut) || !strings.Contains(err.Error(), tt.bad+" points outside the release") {
				t.Fatalf("export: %v; want %s refused", err, tt.bad)
			}
			c.AllowExternalSymlinks = true
			dest := t.TempDir()
			if err := c.Export(ctx, sha, tt.sub, dest); err != nil {
				t.Fatalf("export with AllowExternalSymlinks: %v", err)
			}
			name, target, _ := strings.Cut(tt.bad, " -> ")
			if got, err := os.Readlink(filepath.Join(dest, name)); err != nil || got != target {
				t.Errorf("readlink %s: %q, %v", name, got, err)
			}
		})
	}
}
