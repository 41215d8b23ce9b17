package fsx

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// tree makes entries under root: "d/" a directory, "l -> t" a symlink,
// anything else an empty file.
func tree(t testing.TB, root string, entries ...string) {
	t.Helper()
	for _, e := range entries {
		name, target, isLink := strings.Cut(e, " -> ")
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case isLink:
			err = os.Symlink(target, p)
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		default:
			err = os.WriteFile(p, nil, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenBeneath(t *testing.T) {
	outside := t.TempDir()
	tests := []struct {
		name    string
		entries []string
		rel     string
		want    string // the error; "" for none
	}{
		{"made fresh", nil, "a/b/c", ""},
		{"existing", []string{"a/b/"}, "a/b", ""},
		{"the root", nil, ".", ""},
		{"symlink, missing below", []string{"data -> " + outside}, "data/new/uploads", "data is a symlink (to " + outside + "): refusing to follow it"},
		{"symlink, existing below", []string{"data -> " + outside}, "data", "data is a symlink (to " + outside + "): refusing to follow it"},
		{"symlink inside", []string{"real/", "data -> real"}, "data/x", "data is a symlink (to real): refusing to follow it"},
		{"deeper symlink", []string{"a/b -> ../.."}, "a/b/c", "a/b is a symlink (to ../..): refusing to follow it"},
		{"dangling symlink", []string{"a -> nowhere"}, "a/b", "a is a symlink (to nowhere): refusing to follow it"},
		{"symlink loop", []string{"a -> a"}, "a/b", "a is a symlink (to a): refusing to follow it"},
		{"a file", []string{"a/f"}, "a/f/x", "a/f is not a directory"},
		{"climbs", nil, "../x", "../x is not a path inside the directory"},
		{"absolute", nil, "/etc", "/etc is not a path inside the directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			tree(t, root, tt.entries...)
			checkErr := CheckBeneath(root, tt.rel)
			d, err := OpenBeneath(root, tt.rel, true, 0o755)
			if tt.want == "" {
				if err != nil || checkErr != nil {
					t.Fatalf("OpenBeneath: %v; CheckBeneath: %v", err, checkErr)
				}
				defer d.Close()
				if fi, err := os.Lstat(filepath.Join(root, tt.rel)); err != nil || !fi.IsDir() {
					t.Fatalf("%s is not a directory: %v", tt.rel, err)
				}
				return
			}
			for _, err := range []error{err, checkErr} {
				if err == nil || err.Error() != tt.want {
					t.Errorf("got %v; want %s", err, tt.want)
				}
			}
			if strings.Contains(tt.want, "symlink") && !errors.Is(err, ErrNotBeneath) {
				t.Errorf("%v is not ErrNotBeneath", err)
			}
			if left, _ := os.ReadDir(outside); len(left) != 0 {
				t.Fatalf("%d entries appeared outside the root", len(left))
			}
		})
	}
}

// TestRemoveAllNeverFollows removes a directory holding symlinks to a
// directory outside: the links go, what they point at stays.
func TestRemoveAllNeverFollows(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	tree(t, outside, "precious")
	tree(t, root, "a/b/f", "a/out -> "+outside, "a/b/up -> ../..", "link -> "+outside)
	d, err := OpenBeneath(root, ".", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range []string{"a", "link", "missing"} {
		if err := d.RemoveAll(name); err != nil {
			t.Fatalf("RemoveAll(%s): %v", name, err)
		}
	}
	if left, _ := os.ReadDir(root); len(left) != 0 {
		t.Errorf("%d entries left", len(left))
	}
	if _, err := os.Stat(filepath.Join(outside, "precious")); err != nil {
		t.Fatal(err)
	}
	if err := d.Symlink("x", "s"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Readlink(filepath.Join(root, "s")); got != "x" {
		t.Errorf("symlink: %q", got)
	}
	if err := d.RemoveAll("../x"); err == nil {
		t.Error("RemoveAll took a path")
	}
}

// TestDirOpen: a file is opened; a symlink (to a secret outside, or
// inside), a FIFO or a directory is refused, naming what it is.
func TestDirOpen(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	tree(t, root, "logs/ok.log", "logs/out.log -> "+filepath.Join(outside, "secret"), "logs/in.log -> ok.log", "logs/sub/")
	if err := syscall.Mkfifo(filepath.Join(root, "logs", "fifo.log"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := OpenBeneath(root, "logs", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tt := range []struct{ name, want string }{
		{"ok.log", ""},
		{"out.log", "logs/out.log is a symlink (to " + filepath.Join(outside, "secret") + "): refusing to follow it"},
		{"in.log", "logs/in.log is a symlink (to ok.log): refusing to follow it"},
		{"fifo.log", "logs/fifo.log is not a regular file (p---------)"},
		{"sub", "logs/sub is not a regular file (d---------)"},
		{"missing.log", "open logs/missing.log: no such file or directory"},
		{"../x", `"../x" is not a directory entry name`},
	} {
		f, err := d.Open(tt.name)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			} else {
				f.Close()
			}
			continue
		}
		if err == nil {
			f.Close()
		}
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: got %v; want %s", tt.name, err, tt.want)
		}
	}
	names, err := d.Names()
	sort.Strings(names)
	if err != nil || strings.Join(names, " ") != "fifo.log in.log ok.log out.log sub" {
		t.Errorf("Names = %q, %v", names, err)
	}
}
