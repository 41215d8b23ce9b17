// Package source is where the daemon gets the desired state: a file on
// disk, or a file in a git repository at the tip of a branch. Each source
// loads the current content and watches for changes.
package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

// Snapshot is one version of the desired file.
type Snapshot struct {
	Data []byte
	Name string // for messages: the path, or repo:path@commit
	Rev  string // what identifies this version: a content hash, or the config commit
	// Commit is the config repository's commit, "" for a plain file.
	Commit string
	// Dir anchors a relative root or repo path in the file.
	Dir string
}

// Source loads the desired file and reports when it may have changed.
type Source interface {
	Load(ctx context.Context) (*Snapshot, error)
	// Watch calls changed whenever the source may have changed, until
	// ctx is done. It returns nil then.
	Watch(ctx context.Context, changed func(why string)) error
}

// debounce is how long a watcher waits for a burst of events (an editor's
// write, rename and chmod; a commit's several ref updates) to end.
var debounce = 100 * time.Millisecond

// File is a desired file on disk.
type File struct {
	Path string
	Log  *zap.Logger
}

func hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// Load reads the file.
func (f *File) Load(ctx context.Context) (*Snapshot, error) {
	abs, err := filepath.Abs(f.Path)
	if err != nil {
		return nil, err
	}
	r, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("desired file: %w", err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, desired.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("desired file: %w", err)
	}
	return &Snapshot{Data: b, Name: f.Path, Rev: hash(b), Dir: filepath.Dir(abs)}, nil
}

// Watch watches the file's folder, not the file: editors save by writing a
// new file and renaming it over the old one, and Kubernetes-style mounts
// swap a symlink, and either loses a watch on the file itself. Events are
// filtered by name and debounced; a change is reported only when the
// content hash differs, so a touch does nothing.
func (f *File) Watch(ctx context.Context, changed func(string)) error {
	abs, err := filepath.Abs(f.Path)
	if err != nil {
		return err
	}
	dir, base := filepath.Dir(abs), filepath.Base(abs)
	rev := func() string {
		if s, err := f.Load(ctx); err == nil {
			return s.Rev
		}
		return "missing"
	}
	// The file itself, or a symlink swap (..data) in a config mount.
	interesting := func(name string) bool { b := filepath.Base(name); return b == base || b == "..data" }
	w := watcher{log: f.Log, what: dir, dirs: func() []string { return []string{dir} }, interesting: interesting,
		rev: rev, changed: func() { changed("file") }}
	return w.run(ctx)
}

// watcher is the one fsnotify loop of the sources: an event on an
// interesting path starts the debounce timer; when it fires, the watches
// are brought in line with dirs (folders deleted and created again are
// watched anew: a watch follows an inode, not a path), then rev is
// compared with the last one seen and changed called if they differ.
type watcher struct {
	log  *zap.Logger
	what string // for the logs: the file's folder or the repository
	// dirs are the folders to watch now; those that do not exist are
	// watched once they do.
	dirs        func() []string
	interesting func(path string) bool
	// present reports whether what is watched exists; nil for always.
	// Its changes are logged.
	present func() bool
	// rev identifies the current version; "" means none can be read
	// now, which is not reported as a change.
	rev     func() string
	changed func()

	added map[string]bool // the folders sync watched
}

func (wt *watcher) run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer w.Close()
	wt.added = make(map[string]bool)
	ds := wt.dirs()
	// The first folder must be there to start: the file's folder, or
	// the parent of the repository.
	if err := w.Add(ds[0]); err != nil {
		return fmt.Errorf("watch %s: %w", ds[0], err)
	}
	wt.added[ds[0]] = true
	wt.sync(w)
	// lost: a watched folder went away, and what is watched has not
	// been seen whole since.
	lost := wt.present != nil && !wt.present()
	if lost {
		wt.log.Warn("watched path is missing; waiting for it to be created", zap.String("path", wt.what))
	}
	last := wt.rev()
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				// A watched folder deleted or moved away: its
				// watch is stale; sync adds the path again once it
				// exists.
				// fsnotify may have dropped the watch already
				// (IN_DELETE_SELF): ask which were added.
				dropped := false
				for d := range wt.added {
					if d == ev.Name || strings.HasPrefix(d, ev.Name+string(filepath.Separator)) {
						w.Remove(d)
						delete(wt.added, d)
						dropped = true
					}
				}
				if dropped && !lost {
					lost = true
					wt.log.Warn("watched path vanished; waiting for it to be created again", zap.String("path", wt.what), zap.String("removed", ev.Name))
				}
			}
			if wt.interesting(ev.Name) {
				timer = time.After(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			wt.log.Warn("watch error", zap.String("path", wt.what), zap.Error(err))
		case <-timer:
			timer = nil
			wt.sync(w)
			if lost && (wt.present == nil || wt.present()) {
				lost = false
				wt.log.Info("watched path is back; watching it again", zap.String("path", wt.what))
			}
			if r := wt.rev(); r != "" && r != last {
				last = r
				wt.changed()
			}
		}
	}
}

// sync watches the folders of dirs that exist and are not watched yet.
// Watches of folders that went away were dropped by fsnotify or by the
// event loop.
func (wt *watcher) sync(w *fsnotify.Watcher) {
	watched := make(map[string]bool)
	for _, d := range w.WatchList() {
		watched[d] = true
	}
	for _, d := range wt.dirs() {
		if watched[d] {
			continue
		}
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		err := w.Add(d)
		switch {
		case err == nil:
			wt.added[d] = true
		case !errors.Is(err, fs.ErrNotExist):
			wt.log.Warn("watch failed", zap.String("dir", d), zap.Error(err))
		}
	}
}
