package fsx

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make directories owned by another user")
	}
	base := t.TempDir()
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, -1); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := mk("good", 0o755, 0)
	link := filepath.Join(base, "link")
	os.Symlink(good, link)
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	for _, tt := range []struct {
		name, path, want string
	}{
		{"a directory of ours", good, ""},
		{"private", mk("private", 0o700, 0), ""},
		{"a symlink to a good directory", link, "it is a symlink (to " + good + ")"},
		{"a file", file, "it is not a directory"},
		{"owned by another user", mk("theirs", 0o755, 65534), "it is owned by "},
		{"writable by others", mk("open", 0o777, 0), "writable by group or others"},
		{"writable by the group", mk("group", 0o775, 0), "writable by group or others"},
		{"sticky, like /tmp", mk("sticky", 0o777|os.ModeSticky, 0), "others may create entries in it"},
		{"a shared-group directory, opted in (2775)", mk("sgid", 0o775|os.ModeSetgid, 0), ""},
		{"setgid but writable by others", mk("sgid-open", 0o777|os.ModeSetgid, 0), "writable by group or others"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckDir(tt.path)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ue *UnsafeDirError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.path) {
				t.Fatalf("got %v; want %q naming %s", err, tt.want, tt.path)
			}
		})
	}
}

// EnsureDir makes a missing directory, and never follows a symlink that
// stands where the directory belongs.
func TestEnsureDir(t *testing.T) {
	base := t.TempDir()
	p := filepath.Join(base, "a", "b")
	if err := EnsureDir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("made %v, %v", fi, err)
	}
	victim := t.TempDir()
	planted := filepath.Join(base, "planted")
	os.Symlink(victim, planted)
	if err := EnsureDir(planted, 0o700); err == nil {
		t.Fatal("a planted symlink was accepted as the directory")
	}
}

// Files the reconciler keeps are 0600, or 0640 in a directory the operator
// made readable by a group; the umask still narrows them.
func TestFileModeFollowsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	if m := FileMode(dir); m != 0o600 {
		t.Errorf("private directory: %s", m)
	}
	os.Chmod(dir, 0o750)
	if m := FileMode(dir); m != 0o640 {
		t.Errorf("group-readable directory: %s", m)
	}
	p := filepath.Join(dir, "r.json")
	if err := WriteFileAtomic(p, []byte("{}"), FileMode(dir)); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if want := 0o640 &^ umask(); fi.Mode().Perm() != want {
		t.Errorf("written %s; want %s (0640 less the umask %s)", fi.Mode().Perm(), want, umask())
	}
}
