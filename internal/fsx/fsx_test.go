package fsx

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestSwitchLinkIsAtomic switches a link back and forth while readers
// resolve it as fast as they can: every read must see one target or the
// other, never a missing link. Remove-then-symlink fails this test.
func TestSwitchLinkIsAtomic(t *testing.T) {
	dir := t.TempDir()
	for _, r := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(dir, "releases", r), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "current")
	if err := SwitchLink(link, filepath.Join(dir, "releases", "a")); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads, broken atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				reads.Add(1)
				if _, err := os.Stat(link); err != nil {
					broken.Add(1)
				}
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		target := []string{"a", "b"}[i%2]
		if err := SwitchLink(link, filepath.Join(dir, "releases", target)); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if broken.Load() != 0 {
		t.Fatalf("%d of %d reads found no link", broken.Load(), reads.Load())
	}
	target, _ := os.Readlink(link)
	if target != "releases/b" {
		t.Errorf("link holds %q, want the relative releases/b", target)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".current.tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary links left: %v", left)
	}
	t.Logf("%d reads during 2000 switches, none broken", reads.Load())
}

func TestSwitchLinkRefusesDirectory(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "current")
	os.MkdirAll(filepath.Join(link, "important"), 0o755)
	if err := SwitchLink(link, "releases/a"); err == nil {
		t.Fatal("a directory was replaced by a link")
	}
	if _, err := os.Stat(filepath.Join(link, "important")); err != nil {
		t.Fatal("the directory's content is gone")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rec.json")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if string(b) != content {
			t.Errorf("got %q", b)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}
