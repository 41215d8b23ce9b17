package fsx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotBeneath marks a path Beneath refuses: a component of it is a
// symlink, or something other than a directory where one is needed.
var ErrNotBeneath = errors.New("not a plain directory path")

// BeneathError names the component of a root-relative path that Beneath
// refused. Target is the symlink's target; "" when the component is not a
// symlink but some other non-directory.
type BeneathError struct {
	Path   string // the refused component, relative to the root
	Target string
}

func (e *BeneathError) Error() string {
	if e.Target != "" {
		return fmt.Sprintf("%s is a symlink (to %s): refusing to follow it", e.Path, e.Target)
	}
	return fmt.Sprintf("%s is not a directory", e.Path)
}

func (e *BeneathError) Unwrap() error { return ErrNotBeneath }

// Dir is a directory opened beneath a root without following a symlink.
// It stays the same directory whatever is renamed or replaced along its
// path afterwards: every operation on it is relative to its descriptor.
type Dir struct {
	f   *os.File
	rel string // relative to the root; "." for the root
}

// OpenBeneath opens the directory rel (relative to root, "." for root
// itself), one component at a time, each relative to its parent's
// descriptor with O_NOFOLLOW|O_DIRECTORY: no symlink anywhere under root
// is followed, whatever its target. (openat2's RESOLVE_NO_SYMLINKS would
// do the walk in the kernel, but the walk here must name the component it
// refuses and the symlink's target, and it works on every kernel.) With
// create, missing components are made with perm. root itself is opened
// as given: it is the reconciler's own path.
//
// A refused component gives a *BeneathError (errors.Is ErrNotBeneath).
func OpenBeneath(root, rel string, create bool, perm os.FileMode) (*Dir, error) {
	parts, err := split(rel)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	for i, name := range parts {
		next, err := openChild(fd, name, create, perm)
		if err != nil {
			unix.Close(fd)
			p := filepath.Join(parts[:i+1]...)
			var be *BeneathError
			if errors.As(err, &be) {
				be.Path = p
				return nil, be
			}
			return nil, &os.PathError{Op: "open", Path: p, Err: err}
		}
		unix.Close(fd)
		fd = next
	}
	return &Dir{f: os.NewFile(uintptr(fd), filepath.Join(root, rel)), rel: filepath.Join(append([]string{"."}, parts...)...)}, nil
}

// CheckBeneath reports whether rel could be walked under root without
// following a symlink: every component that exists must be a directory,
// not a symlink. A missing component ends the check (nothing under it
// exists to follow), so a path still to be created passes.
func CheckBeneath(root, rel string) error {
	parts, err := split(rel)
	if err != nil {
		return err
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer func() { unix.Close(fd) }()
	for i, name := range parts {
		next, err := openChild(fd, name, false, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			p := filepath.Join(parts[:i+1]...)
			var be *BeneathError
			if errors.As(err, &be) {
				be.Path = p
				return be
			}
			return &os.PathError{Op: "open", Path: p, Err: err}
		}
		unix.Close(fd)
		fd = next
	}
	return nil
}

// split checks that rel is relative and climbs nowhere, and returns its
// components.
func split(rel string) ([]string, error) {
	rel = filepath.Clean(rel)
	if rel == "." {
		return nil, nil
	}
	if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("%s is not a path inside the directory", rel)
	}
	return strings.Split(rel, "/"), nil
}

// openChild opens directory name in dirfd, never following a symlink;
// with create it makes it when missing. A symlink or a non-directory is a
// *BeneathError without its path, which the caller knows.
func openChild(dirfd int, name string, create bool, perm os.FileMode) (int, error) {
	for attempt := 0; ; attempt++ {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		switch {
		case err == unix.ENOENT && create && attempt == 0:
			// EEXIST: made by someone else meanwhile; opened (and checked)
			// on the next round all the same.
			if err := unix.Mkdirat(dirfd, name, uint32(perm.Perm())); err != nil && err != unix.EEXIST {
				return -1, err
			}
			continue
		case err == unix.ELOOP || err == unix.ENOTDIR:
			// O_NOFOLLOW gives ELOOP for a symlink (ENOTDIR on some
			// systems, with O_DIRECTORY): look at what is there.
			return -1, describe(dirfd, name)
		}
		return -1, err
	}
}

// describe says what the non-directory name in dirfd is.
func describe(dirfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return &BeneathError{}
	}
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return err
	}
	return &BeneathError{Target: string(buf[:n])}
}

// Close closes the directory.
func (d *Dir) Close() error { return d.f.Close() }

// Path is where the directory was opened, for messages.
func (d *Dir) Path() string { return d.f.Name() }

// RemoveAll removes the entry name of the directory and, when it is a
// directory, everything under it, never following a symlink: a symlink is
// removed, not what it points at. A missing entry is no error.
func (d *Dir) RemoveAll(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := removeAt(int(d.f.Fd()), name); err != nil {
		return &os.PathError{Op: "remove", Path: filepath.Join(d.rel, name), Err: err}
	}
	return nil
}

func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return err
	}
	for _, n := range names {
		if err := removeAt(fd, n); err != nil {
			f.Close()
			return err
		}
	}
	f.Close()
	err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// Symlink makes the entry name of the directory a symlink to target.
func (d *Dir) Symlink(target, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := unix.Symlinkat(target, int(d.f.Fd()), name); err != nil {
		return &os.LinkError{Op: "symlink", Old: target, New: filepath.Join(d.rel, name), Err: err}
	}
	return nil
}

// checkName refuses an entry name that is not one component.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("%q is not a directory entry name", name)
	}
	return nil
}

// Open opens the entry name of the directory for reading, never following
// a symlink: a symlink gives a *BeneathError naming its target. Anything
// but a regular file is refused (a FIFO planted there would block the
// reader forever).
func (d *Dir) Open(name string) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	rel := filepath.Join(d.rel, name)
	// O_NONBLOCK: opening a FIFO returns at once, to be refused below; it
	// changes nothing for a regular file.
	fd, err := unix.Openat(int(d.f.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == unix.ELOOP {
		err = describe(int(d.f.Fd()), name)
		var be *BeneathError
		if errors.As(err, &be) {
			be.Path = rel
			return nil, be
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.f.Name(), name))
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s)", rel, fi.Mode().Type())
	}
	return f, nil
}

// Names lists the entries of the directory, in no order.
func (d *Dir) Names() ([]string, error) {
	// A fresh descriptor: reading the directory moves its offset, and d
	// may be read again.
	fd, err := unix.Openat(int(d.f.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.f.Name())
	defer f.Close()
	return f.Readdirnames(-1)
}
