package fsx

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// UnsafeDirError is a directory the reconciler will not write in: it is
// not a real directory, or someone other than the running user (or root)
// could change what is in it.
type UnsafeDirError struct {
	Path string
	Why  string
}

func (e *UnsafeDirError) Error() string {
	return fmt.Sprintf("refusing to write in %s: %s", e.Path, e.Why)
}

// CheckDir reports whether path is a directory the reconciler may write
// in: a real directory — a symlink is never followed, so a link planted
// where a directory belongs cannot steer writes and deletes elsewhere —
// owned by the running user or root, and not writable by group or others,
// who could otherwise swap what is in it between a check and its use.
func CheckDir(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	return checkInfo(path, fi)
}

func checkInfo(path string, fi fs.FileInfo) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := os.Readlink(path)
		return &UnsafeDirError{Path: path, Why: fmt.Sprintf("it is a symlink (to %s), not a directory; a directory the reconciler writes in is never followed through a link", target)}
	}
	if !fi.IsDir() {
		return &UnsafeDirError{Path: path, Why: "it is not a directory"}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil // not a unix filesystem: nothing to check
	}
	uid := int(st.Uid)
	if euid := os.Geteuid(); uid != euid && uid != 0 {
		return &UnsafeDirError{Path: path, Why: fmt.Sprintf("it is owned by %s, mode %s; it must be owned by %s or root", userName(uid), fi.Mode(), userName(euid))}
	}
	perm := fi.Mode().Perm()
	if perm&0o020 != 0 && perm&0o002 == 0 && fi.Mode()&fs.ModeSetgid != 0 {
		// g+ws: a shared-group directory set up on purpose (chmod 2775):
		// the operator opted in to trusting that group.
		return nil
	}
	if perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return &UnsafeDirError{Path: path, Why: fmt.Sprintf("it is writable by group or others (owner %s, mode %s); run chmod go-w on it (or chmod 2775 to trust its group)", userName(uid), fi.Mode())}
	}
	if perm&0o022 != 0 {
		// Sticky (like /tmp): others may add entries, and so plant one
		// where the reconciler expects its own.
		return &UnsafeDirError{Path: path, Why: fmt.Sprintf("others may create entries in it (owner %s, mode %s); use a directory only %s can write in", userName(uid), fi.Mode(), userName(os.Geteuid()))}
	}
	return nil
}

// EnsureDir makes path, a directory the reconciler writes in, when it does
// not exist, with its missing parents, then checks it (CheckDir).
func EnsureDir(path string, perm os.FileMode) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		// Mkdir, not MkdirAll: it fails on anything already there,
		// including a symlink made meanwhile.
		if err := os.Mkdir(path, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		fi, err = os.Lstat(path)
	}
	if err != nil {
		return err
	}
	return checkInfo(path, fi)
}

// FileMode is the mode of a file the reconciler keeps in dir: 0600, or
// 0640 when the operator made dir readable by a group (chgrp adm dir;
// chmod 2750 dir) — a group the user names may then read records, history
// and logs. The umask still applies; nothing is ever made wider than that.
func FileMode(dir string) os.FileMode {
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o040 != 0 {
		return 0o640
	}
	return 0o600
}

// CheckDirIfExists is CheckDir for a directory that may not be there yet.
func CheckDirIfExists(path string) error {
	err := CheckDir(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return "uid " + strconv.Itoa(uid)
}
