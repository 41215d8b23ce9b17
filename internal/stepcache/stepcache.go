// Package stepcache computes the keys of cached build steps and keeps
// their entries: a directory under <root>/cache/<step>/<key>/ filled once by
// the step, then sealed (owned by the reconciler, read-only, recorded with
// its key) and linked into every release whose key is the same.
//
// A key is made of the step's run, run_as, position and environment and of
// its key files, hashed under a secret of the host (see ReadSecret), each named by its path, git mode and git blob hash: the
// same hash whether read from the commit's tree (for the plan) or from the
// release on disk (when the step runs), so the plan can say before the
// export whether the step will run.
package stepcache

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // git's blob hash, to compare with the tree's
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/layout"
)

// Git modes of key files, as in a tree.
const (
	ModeFile    = "100644"
	ModeExec    = "100755"
	ModeSymlink = "120000"
)

// Input is one key file.
type Input struct {
	Path string `json:"path"` // slash-separated, relative to the release
	Mode string `json:"mode"`
	Hash string `json:"hash"` // git blob hash
}

// Spec is what, besides its key files, makes a step's key.
type Spec struct {
	Step     string   `json:"step"`
	Position int      `json:"position"` // index in build:
	Run      string   `json:"run"`
	RunAs    string   `json:"run_as,omitempty"`
	Patterns []string `json:"key"`
	Paths    []string `json:"paths"`
	// Env is desired.yaml's environment as NAME=value: its values may be
	// secrets, so it is never rendered, only hashed into the key.
	Env []string `json:"-"`
	// Secret keys the hash (see ReadSecret): the host's, never rendered.
	Secret []byte `json:"-"`
}

// SpecOf is the spec of d's build step i, which must have a cache.
func SpecOf(d *desired.State, i int) Spec {
	st := d.Build[i]
	s := Spec{Step: st.Name, Position: i, Run: st.Run, RunAs: st.RunAs, Patterns: st.Cache.Key, Paths: st.Cache.Paths}
	for _, e := range d.Env {
		s.Env = append(s.Env, e.Name+"="+e.Value)
	}
	return s
}

// KeyLen is the length of a key in hex digits: 128 bits.
const KeyLen = 32

// IsKey reports whether name has the form of a key.
func IsKey(name string) bool {
	if len(name) != KeyLen {
		return false
	}
	for _, c := range name {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Key is the key of a step with spec s whose key files are in.
func Key(s Spec, in []Input) string {
	sorted := append([]Input(nil), in...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	b, err := json.Marshal(struct {
		V      int
		Spec   Spec
		Env    []string
		Inputs []Input
	}{2, s, s.Env, sorted})
	if err != nil {
		panic(err) // strings and ints only
	}
	mac := hmac.New(sha256.New, s.Secret)
	mac.Write(b)
	return hex.EncodeToString(mac.Sum(nil))[:KeyLen]
}

// Match reports whether the release path rel (slash-separated) is a key
// file of patterns: a pattern matches a path segment by segment
// (path.Match), and a pattern that matches a directory matches everything
// beneath it.
func Match(patterns []string, rel string) bool {
	segs := strings.Split(rel, "/")
	for _, p := range patterns {
		ps := strings.Split(p, "/")
		if len(ps) <= len(segs) && matchSegs(ps, segs[:len(ps)]) {
			return true
		}
	}
	return false
}

// MayHold reports whether a key file of patterns may lie under directory
// rel: the walks of the key files enter no other.
func MayHold(patterns []string, rel string) bool {
	segs := strings.Split(rel, "/")
	for _, p := range patterns {
		ps := strings.Split(p, "/")
		n := min(len(ps), len(segs))
		if matchSegs(ps[:n], segs[:n]) {
			return true
		}
	}
	return false
}

func matchSegs(ps, segs []string) bool {
	for i := range ps {
		if ok, _ := path.Match(ps[i], segs[i]); !ok {
			return false
		}
	}
	return true
}

// BlobHash is git's hash of a blob of size bytes read from r.
func BlobHash(r io.Reader, size int64) (string, error) {
	h := sha1.New() //nolint:gosec // git's object hash
	fmt.Fprintf(h, "blob %d\x00", size)
	n, err := io.Copy(h, r)
	if err != nil {
		return "", err
	}
	if n != size {
		return "", fmt.Errorf("changed while read: %d bytes, expected %d", n, size)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Inputs lists the key files of patterns in the release at dir, without
// following any symlink: a symlink is a key file by its target, as git
// stores it. The release's record directory is never one.
func Inputs(dir string, patterns []string) ([]Input, error) {
	var out []Input
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if e.IsDir() {
			if rel == layout.RecordDirName || !MayHold(patterns, rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if !Match(patterns, rel) {
			return nil
		}
		in, err := input(p, rel)
		if err != nil {
			return fmt.Errorf("key file %s: %w", rel, err)
		}
		out = append(out, in)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no file of the release matches the cache key %s", strings.Join(patterns, ", "))
	}
	return out, nil
}

func input(p, rel string) (Input, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return Input{}, err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(p)
		if err != nil {
			return Input{}, err
		}
		h, _ := BlobHash(strings.NewReader(t), int64(len(t)))
		return Input{Path: rel, Mode: ModeSymlink, Hash: h}, nil
	case fi.Mode().IsRegular():
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return Input{}, err
		}
		defer f.Close()
		h, err := BlobHash(f, fi.Size())
		if err != nil {
			return Input{}, err
		}
		mode := ModeFile
		if fi.Mode()&0o100 != 0 {
			mode = ModeExec
		}
		return Input{Path: rel, Mode: mode, Hash: h}, nil
	}
	return Input{}, fmt.Errorf("is a %s, not a file or a symlink", fi.Mode().Type())
}

// CopyInputs copies the key files in from the release at src into the
// fresh entry at dst, so the step finds them where it runs; each is hashed
// again as it is copied and must be what the key was made of.
func CopyInputs(src, dst string, in []Input) error {
	for _, f := range in {
		rel := filepath.FromSlash(f.Path)
		if err := fsx.CheckBeneath(dst, filepath.Dir(rel)); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		if err := copyInput(filepath.Join(src, rel), filepath.Join(dst, rel), f); err != nil {
			return fmt.Errorf("copy key file %s: %w", f.Path, err)
		}
	}
	return nil
}

func copyInput(src, dst string, f Input) error {
	if f.Mode == ModeSymlink {
		t, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if h, _ := BlobHash(strings.NewReader(t), int64(len(t))); h != f.Hash {
			return errors.New("changed since the key was made")
		}
		return os.Symlink(t, dst)
	}
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	perm := os.FileMode(0o644)
	if f.Mode == ModeExec {
		perm = 0o755
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	h := sha1.New() //nolint:gosec // git's object hash
	fmt.Fprintf(h, "blob %d\x00", fi.Size())
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != f.Hash {
		return errors.New("changed since the key was made")
	}
	return nil
}

// Seal is the record of a sealed entry.
type Seal struct {
	Step     string    `json:"step"`
	Key      string    `json:"key"`
	Release  string    `json:"release"` // the release whose build filled it
	Inputs   []Input   `json:"inputs"`
	Paths    []string  `json:"paths"`
	Size     int64     `json:"size"` // bytes of its files
	Files    int       `json:"files"`
	SealedAt time.Time `json:"sealed_at"`
}

// ReadSeal reads a seal record.
func ReadSeal(p string) (*Seal, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	var s Seal
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if !IsKey(s.Key) || s.Step == "" {
		return nil, fmt.Errorf("%s: the seal names no step or key", p)
	}
	return &s, nil
}

// WriteSeal writes the seal record that makes an entry usable: last, and
// atomically, so an entry is either sealed with all of its files or an
// interrupted fill.
func WriteSeal(p string, s *Seal) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return fsx.WriteFileAtomic(p, append(b, '\n'), 0o644)
}

// Freeze makes the filled entry at dir the reconciler's (uid, gid) and
// read-only for everyone, and counts its files and bytes. Permission bits
// beyond rwx (setuid, setgid, sticky) are dropped.
func Freeze(dir string, uid, gid int) (size int64, files int, err error) {
	// Directories last, deepest first: made read-only before the walk
	// reached inside, they would stop a reconciler that is not root.
	var dirs []string
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return err
		}
		if e.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if e.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is a %s: a cache entry holds files, directories and symlinks", p, fi.Mode().Type())
		}
		size += fi.Size()
		files++
		return os.Chmod(p, fi.Mode().Perm()&^0o222)
	})
	if err != nil {
		return 0, 0, err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(dirs[i], 0o555); err != nil {
			return 0, 0, err
		}
	}
	return size, files, nil
}

// Remove deletes an entry's directory, read-only as it is: it is first
// renamed to trash (a directory on the same filesystem), so a half-deleted
// entry is never taken for one.
func Remove(dir, trash string) error {
	if err := os.Rename(dir, trash); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	_ = filepath.WalkDir(trash, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(trash)
}

// EntryName names an entry in records and plans: "<step>/<key>".
func EntryName(step, key string) string { return step + "/" + key }

// SplitEntry is the inverse of EntryName.
func SplitEntry(name string) (step, key string, ok bool) {
	step, key, ok = strings.Cut(name, "/")
	return step, key, ok && IsKey(key)
}

// Short is a key as people see it.
func Short(key string) string {
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

// FormatSize renders a byte count for people.
func FormatSize(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}
