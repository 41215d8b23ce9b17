package gitcache

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// packOf is a pack of every object of r, from git pack-objects with
// args (--delta-base-offset for offset deltas, hash deltas without).
func packOf(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "pack-objects", "-q", "--stdout", "--revs"}, args...)...)
	cmd.Stdin = strings.NewReader("main\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("pack-objects: %v\n%s", err, errb.String())
	}
	return out.Bytes()
}

// bareObjects makes the objects/pack folder of a new repository.
func bareObjects(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "objects", "pack"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// indexPack stores the pack as git does: the same pack file, the same
// index as `git index-pack` writes for it.
func TestIndexPackLikeGit(t *testing.T) {
	r, _ := deltaRepo(t)
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"offset deltas", []string{"--delta-base-offset"}},
		{"hash deltas", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pack := packOf(t, r.Dir, tt.args...)
			dir := bareObjects(t)
			if err := indexPack(dir, bytes.NewReader(pack)); err != nil {
				t.Fatal(err)
			}
			n := packTypes(t, dir)
			if n[packOfsDelta]+n[packRefDelta] == 0 {
				t.Fatalf("no deltas in the pack: %v", n)
			}
			got, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*"))
			if len(got) != 2 {
				t.Fatalf("objects/pack holds %v, want a pack and its index", got)
			}
			base := strings.TrimSuffix(got[0], filepath.Ext(got[0]))
			b, _ := os.ReadFile(base + ".pack")
			if !bytes.Equal(b, pack) {
				t.Error("the stored pack differs from the one received")
			}
			for _, f := range got {
				if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o444 {
					t.Errorf("%s: mode %v, want read-only", f, fi.Mode())
				}
			}
			ref := filepath.Join(t.TempDir(), "ref.pack")
			if err := os.WriteFile(ref, pack, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("git", "index-pack", ref).CombinedOutput(); err != nil {
				t.Fatalf("git index-pack: %v\n%s", err, out)
			}
			want, _ := os.ReadFile(strings.TrimSuffix(ref, ".pack") + ".idx")
			ours, _ := os.ReadFile(base + ".idx")
			if !bytes.Equal(ours, want) {
				t.Errorf("the index (%d bytes) differs from git index-pack's (%d bytes)", len(ours), len(want))
			}
		})
	}
}

// A pack that is cut, altered or followed by more data is refused, and
// leaves nothing in objects/pack; nothing at all is no pack.
func TestIndexPackRefuses(t *testing.T) {
	r, _ := deltaRepo(t)
	pack := packOf(t, r.Dir, "--delta-base-offset")
	flip := func(i int) []byte {
		b := bytes.Clone(pack)
		b[i] ^= 0x40
		return b
	}
	for _, tt := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"empty", nil, true},
		{"cut", pack[:len(pack)/2], false},
		{"cut in the trailer", pack[:len(pack)-5], false},
		{"byte changed in an object", flip(len(pack) / 2), false},
		{"checksum changed", flip(len(pack) - 1), false},
		{"count changed", flip(11), false},
		{"not a pack", []byte("<html>hello</html>\n"), false},
		{"data after it", append(bytes.Clone(pack), "more"...), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := bareObjects(t)
			err := indexPack(dir, bytes.NewReader(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("indexPack: %v", err)
			}
			if left, _ := os.ReadDir(filepath.Join(dir, "objects", "pack")); len(left) != 0 {
				t.Errorf("left %d files in objects/pack", len(left))
			}
		})
	}
}
