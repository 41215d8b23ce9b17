package fsx

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// WriteFileAtomic replaces path with data so that a reader, or a crash at
// any instant, sees either the old content or the new, never a mix: write a
// temporary file in the same directory, fsync it, rename it over path, fsync
// the directory so the rename itself is durable.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm &^ umask()); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so that entries created, renamed or removed in
// it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// SwitchLink points the symlink link at target, atomically.
//
// This is git-sync's switch: a symlink can't be overwritten in place, and
// removing then re-creating it leaves an instant with no link at all, when
// a web server or a process start would fail. Instead a temporary link is
// made in the same directory (so the rename stays within one filesystem)
// and rename(2) replaces the old link in one step: every reader sees the old
// target or the new one. The target is written relative to the link's
// directory so the root can be moved or bind-mounted elsewhere. The
// directory is fsynced so that a crash after SwitchLink returns cannot bring
// the old link back.
func SwitchLink(link, target string) error {
	dir := filepath.Dir(link)
	rel := target
	if filepath.IsAbs(target) {
		r, err := filepath.Rel(dir, target)
		if err != nil {
			return fmt.Errorf("switch %s: %w", link, err)
		}
		rel = r
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("switch %s: %w", link, err)
	}
	tmp := tempLinkPrefix(link) + hex.EncodeToString(b[:])
	if err := os.Symlink(rel, tmp); err != nil {
		return fmt.Errorf("switch %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switch %s: %w", link, err)
	}
	return SyncDir(dir)
}

// tempLinkPrefix is where SwitchLink makes its temporary link: beside the
// link, hidden, so one left by a crash is never taken for the link.
func tempLinkPrefix(link string) string {
	return filepath.Join(filepath.Dir(link), "."+filepath.Base(link)+".tmp-")
}

// TempLinkGlob matches the temporary links SwitchLink makes for link.
func TempLinkGlob(link string) string { return tempLinkPrefix(link) + "*" }

// umask is the process's file mode creation mask. It is read by setting it
// and putting it back, once: the reconciler never changes it.
var umask = sync.OnceValue(func() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
})
