package gitcache

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/format/packfile"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// deltaRepo makes a repository whose files change a little from commit
// to commit, so that its packs hold chains of deltas, with a file larger
// than a copy buffer, an empty one, an executable and a symlink.
func deltaRepo(t *testing.T) (*testgit.Repo, []string) {
	t.Helper()
	r := testgit.New(t)
	rng := rand.New(rand.NewSource(1))
	words := make([]string, 30000)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", rng.Intn(1e6))
	}
	var shas []string
	for v := 0; v < 6; v++ {
		for f := 0; f < 5; f++ {
			var b strings.Builder
			for l := 0; l < 400; l++ {
				fmt.Fprintf(&b, "file %d line %d %s\n", f, l, words[(f*400+l)%len(words)])
				if l%(50+v*7) == 0 {
					fmt.Fprintf(&b, "version %d\n", v)
				}
			}
			r.Write(fmt.Sprintf("src/d%d/f%d.txt", f%2, f), b.String())
		}
		// Above the 64 KiB copy buffer and the 16 KiB read buffer.
		r.Write("big.txt", strings.Join(words[:20000+v*100], " ")+"\n")
		r.Write("empty", "")
		r.WriteMode("bin/run.sh", fmt.Sprintf("#!/bin/sh\necho %d\n", v), 0o755)
		shas = append(shas, r.Commit(fmt.Sprintf("v%d", v)))
	}
	if err := os.Symlink("src/d0/f0.txt", filepath.Join(r.Dir, "link")); err != nil {
		t.Fatal(err)
	}
	shas = append(shas, r.Commit("link"))
	return r, shas
}

// gitCache makes a cache of r the way prepare says, with git: a
// different pack layout than go-git's fetch writes.
func gitCache(t *testing.T, r *testgit.Repo, prepare func(dir string, git func(...string))) *Cache {
	t.Helper()
	c := newCache(t, r.Dir)
	cmd := exec.Command("git", "clone", "-q", "--mirror", "--no-local", r.Dir, c.Dir)
	cmd.Env = r.Env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", c.Dir}, args...)...)
		cmd.Env = r.Env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	prepare(c.Dir, git)
	return c
}

// packTypes counts the objects of the cache's packs by their type in
// the pack.
func packTypes(t *testing.T, dir string) map[byte]int {
	t.Helper()
	set, err := openPacks(dir)
	if err != nil {
		t.Fatal(err)
	}
	pr := newPackReader(set)
	defer pr.Close()
	n := map[byte]int{}
	for i, p := range set.packs {
		entries, err := p.idx.Entries()
		if err != nil {
			t.Fatal(err)
		}
		for {
			e, err := entries.Next()
			if err != nil {
				break
			}
			h, err := pr.at(i, int64(e.Offset))
			if err != nil {
				t.Fatal(err)
			}
			n[h.typ]++
		}
		entries.Close()
	}
	return n
}

// archive is what `git archive | tar -x` writes for commit sha of the
// repository at dir.
func archive(t *testing.T, dir, sha string) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("git -C %s archive %s | tar -x -C %s", dir, sha, out))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git archive: %v\n%s", err, b)
	}
	return out
}

// sameTree reports the first difference between the files under a and
// b: names, kinds, executable bits, contents and link targets.
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		q := filepath.Join(got, rel)
		wi, _ := os.Lstat(p)
		gi, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%s: missing from the export", rel)
			return nil
		}
		switch {
		case wi.Mode().Type() != gi.Mode().Type():
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		case wi.Mode().IsRegular():
			if wi.Mode().Perm()&0o100 != gi.Mode().Perm()&0o100 {
				t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
			}
			wb, _ := os.ReadFile(p)
			gb, _ := os.ReadFile(q)
			if !bytes.Equal(wb, gb) {
				t.Errorf("%s: %d bytes differ from git's %d", rel, len(gb), len(wb))
			}
		case wi.Mode().Type() == fs.ModeSymlink:
			wl, _ := os.Readlink(p)
			gl, _ := os.Readlink(q)
			if wl != gl {
				t.Errorf("%s: link to %q, want %q", rel, gl, wl)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if rel, _ := filepath.Rel(got, p); err == nil && !seen[rel] {
			t.Errorf("%s: in the export, not in git's archive", rel)
		}
		return nil
	})
}

// The export reads blobs from the packs itself: whatever git stored
// (deltas on an offset or on a hash, several packs, loose objects), it
// writes what `git archive` does.
func TestExportReadsPacks(t *testing.T) {
	ctx := context.Background()
	r, shas := deltaRepo(t)
	for _, tt := range []struct {
		name    string
		prepare func(dir string, git func(...string))
		check   func(t *testing.T, n map[byte]int)
	}{
		{"offset deltas", func(dir string, git func(...string)) { git("repack", "-q", "-a", "-d", "-f") },
			func(t *testing.T, n map[byte]int) {
				if n[packOfsDelta] == 0 {
					t.Fatalf("no offset deltas in the pack: %v", n)
				}
			}},
		{"hash deltas", func(dir string, git func(...string)) {
			git("-c", "repack.useDeltaBaseOffset=false", "repack", "-q", "-a", "-d", "-f")
		}, func(t *testing.T, n map[byte]int) {
			if n[packRefDelta] == 0 || n[packOfsDelta] != 0 {
				t.Fatalf("want only hash deltas: %v", n)
			}
		}},
		{"loose objects", func(dir string, git func(...string)) {
			// unpack-objects leaves out what the repository has:
			// the pack goes away first.
			packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.pack"))
			for _, p := range packs {
				aside := filepath.Join(t.TempDir(), "p.pack")
				if err := os.Rename(p, aside); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(strings.TrimSuffix(p, ".pack") + ".idx"); err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(aside)
				if err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command("git", "-C", dir, "unpack-objects", "-q")
				cmd.Stdin = f
				out, err := cmd.CombinedOutput()
				f.Close()
				if err != nil {
					t.Fatalf("unpack-objects: %v\n%s", err, out)
				}
			}
		}, func(t *testing.T, n map[byte]int) {
			if len(n) != 0 {
				t.Fatalf("objects left in packs: %v", n)
			}
		}},
		{"several packs", func(dir string, git func(...string)) {
			// The first commits in one pack, the others in another.
			git("repack", "-q", "-a", "-d", "-f")
			cmd := exec.Command("sh", "-c", fmt.Sprintf("git -C %[1]s rev-list --objects %[2]s..%[3]s | git -C %[1]s pack-objects -q %[1]s/objects/pack/pack", dir, shas[2], shas[len(shas)-1]))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("pack-objects: %v\n%s", err, out)
			}
		}, func(t *testing.T, n map[byte]int) {}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := gitCache(t, r, tt.prepare)
			tt.check(t, packTypes(t, c.Dir))
			if tt.name == "several packs" {
				if packs, _ := filepath.Glob(filepath.Join(c.Dir, "objects", "pack", "*.pack")); len(packs) < 2 {
					t.Fatalf("%d packs", len(packs))
				}
			}
			for _, sha := range shas {
				dest := t.TempDir()
				if err := c.Export(ctx, sha, "", dest); err != nil {
					t.Fatalf("export %s: %v", sha, err)
				}
				sameTree(t, archive(t, c.Dir, sha), dest)
			}
		})
	}
}

// An export streams blobs from the pack into their files: what it
// allocates does not grow with what it writes. go-git's object layer
// held each blob whole in memory, and the copy allocated a buffer per
// file: more than the tree itself.
func TestExportAllocatesLessThanTheTree(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	rng := rand.New(rand.NewSource(2))
	total := 0
	for i := 0; i < 200; i++ {
		b := make([]byte, 16<<10+rng.Intn(32<<10))
		rng.Read(b)
		total += len(b)
		r.Write(fmt.Sprintf("d%d/f%d", i%10, i), string(b))
	}
	sha := r.Commit("v1")
	c := gitCache(t, r, func(string, func(...string)) {})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := c.Export(ctx, sha, "", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	got := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KB", got>>10)
	if got > uint64(total)/4 {
		t.Errorf("the export of %d MB allocated %d MB", total>>20, got>>20)
	}
}

// FuzzApplyDelta checks applyDelta against go-git's PatchDelta: the same
// result for a delta both take, and an error for one PatchDelta refuses.
func FuzzApplyDelta(f *testing.F) {
	base := []byte("the quick brown fox jumps over the lazy dog\n")
	for _, d := range [][]byte{
		{44, 10, 0x90, 10},        // copy 10 bytes at 0
		{44, 3, 3, 'a', 'b', 'c'}, // insert
		{44, 13, 0x91, 4, 5, 0x93, 1, 0, 4, 'x', 'y', 'z', 'w', 0x80}, // copies, an insert, an empty copy (0x10000)
		{44, 5, 0x90, 10},     // copies more than the target
		{43, 1, 1, 'a'},       // wrong base size
		{44, 2, 0, 'a'},       // command 0
		{44, 4, 0x91, 250, 4}, // copy past the base
		{44},                  // truncated
	} {
		f.Add(base, d)
	}
	f.Fuzz(func(t *testing.T, base, delta []byte) {
		got, err := applyDelta(base, delta)
		want, werr := packfile.PatchDelta(base, delta)
		switch {
		case err == nil && werr == nil:
			if !bytes.Equal(got, want) {
				t.Fatalf("applyDelta = %q, PatchDelta = %q", got, want)
			}
		case err == nil && len(base) > 0:
			t.Fatalf("applyDelta took a delta PatchDelta refuses (%v): %q", werr, got)
		case werr == nil && len(delta) >= 4:
			// Shorter, git refuses it too (DELTA_SIZE_MIN).
			t.Fatalf("applyDelta refused a delta PatchDelta takes: %v", err)
		}
	})
}
