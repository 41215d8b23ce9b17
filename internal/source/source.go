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
	"os"
	"path/filepath"
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
	interesting := func(name string) bool { return name == base || name == "..data" }
	return watchDirs(ctx, f.Log, []string{dir}, interesting, rev, func() { changed("file") })
}

// watchDirs is the one fsnotify loop of the sources: an event on an
// interesting name starts the debounce timer; when it fires, rev is
// compared with the last one seen and changed called if they differ.
func watchDirs(ctx context.Context, log *zap.Logger, dirs []string, interesting func(name string) bool, rev func() string, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer w.Close()
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			return fmt.Errorf("watch %s: %w", d, err)
		}
	}
	last := rev()
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if interesting(filepath.Base(ev.Name)) {
				timer = time.After(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("watch error", zap.Strings("dirs", dirs), zap.Error(err))
		case <-timer:
			timer = nil
			if r := rev(); r != last {
				last = r
				changed()
			}
		}
	}
}

var errNoFile = errors.New("no such file in the commit")
