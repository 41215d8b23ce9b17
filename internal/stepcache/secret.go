package stepcache

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/reconciler-dev/reconciler/internal/fsx"
)

// A key is an HMAC under a secret kept on the host, readable by the
// reconciler alone. Keys are public: an entry's directory name, the target
// of every link a release holds into the cache. A plain hash of the step's
// environment would let any local user guess a weak secret value offline,
// one candidate at a time against a key; without the host's secret a key
// says nothing of the values it covers.

// SecretLen is the size of the secret in bytes.
const SecretLen = 32

// ReadSecret reads the secret at path: nil and no error when there is none
// yet (no entry was ever filled on this root), an error when the file is
// not a secret only its owner can read.
func ReadSecret(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cache secret %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cache secret %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cache secret %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cache secret %s: mode %04o lets others read it; remove it (the cache is filled again under a new one)", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, SecretLen+1))
	if err != nil {
		return nil, fmt.Errorf("cache secret %s: %w", path, err)
	}
	if len(b) != SecretLen {
		return nil, fmt.Errorf("cache secret %s: %d bytes, want %d; remove it (the cache is filled again under a new one)", path, len(b), SecretLen)
	}
	return b, nil
}

// EnsureSecret returns the secret at path, making it first if there is
// none. The new file appears whole or not at all (written aside, then
// linked into place), and when two appliers race, both use the one that
// was linked first.
func EnsureSecret(path string) ([]byte, error) {
	if b, err := ReadSecret(path); err != nil || b != nil {
		return b, err
	}
	b := make([]byte, SecretLen)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("cache secret: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("cache secret: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("cache secret: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("cache secret: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("cache secret: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("cache secret: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("cache secret: %w", err)
	}
	if err := fsx.SyncDir(dir); err != nil {
		return nil, fmt.Errorf("cache secret: %w", err)
	}
	return ReadSecret(path)
}
