package apply

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/gitcache"
)

// TestHostileTrees deploys repositories built to steer the reconciler's
// writes out of the release — symlinks out of it, shared paths through
// symlinks whose parents exist or not, a symlink named like a shared path,
// loops — and checks that each is refused with the path and the symlink's
// target named, as a failure a person must act on, and that nothing
// appeared or changed outside the release. "@" in a target is a directory
// outside the root.
func TestHostileTrees(t *testing.T) {
	tests := []struct {
		name     string
		links    map[string]string // committed symlinks: name -> target
		files    []string          // committed files besides VERSION
		dirs     []string          // shared.dirs
		sfiles   []string          // shared.files
		allowOut bool              // source.allow_external_symlinks
		want     string            // the error; "" when the apply succeeds
	}{
		{
			name:  "symlink out of the release",
			links: map[string]string{"static": "/etc"},
			want:  "a symlink leaves the release: static -> /etc points outside the release",
		},
		{
			name:  "relative symlink climbing out",
			links: map[string]string{"conf/up": "../../../.."},
			files: []string{"conf/a"},
			want:  "conf/up -> ../../../.. points outside the release",
		},
		{
			name:  "symlink out through another symlink",
			links: map[string]string{"a/up": "..", "esc": "a/up/../x"},
			files: []string{"a/f"},
			want:  "esc -> a/up/../x points outside the release",
		},
		{
			name:     "shared path through a symlink with its parent missing",
			links:    map[string]string{"data": "@"},
			dirs:     []string{"data/new/uploads"},
			allowOut: true,
			want:     "shared dir data/new/uploads: in the release: data is a symlink (to @): refusing to follow it",
		},
		{
			name:     "shared path through a symlink with its parent existing",
			links:    map[string]string{"data": "@"},
			dirs:     []string{"data/seed"},
			allowOut: true,
			want:     "shared dir data/seed: in the release: data is a symlink (to @): refusing to follow it",
		},
		{
			name:     "shared file through a deeper symlink",
			links:    map[string]string{"conf/local": "@"},
			files:    []string{"conf/base.py"},
			sfiles:   []string{"conf/local/settings.py"},
			allowOut: true,
			want:     "shared file conf/local/settings.py: in the release: conf/local is a symlink (to @): refusing to follow it",
		},
		{
			name:  "shared path through a symlink inside the release",
			links: map[string]string{"data": "real"},
			files: []string{"real/x"},
			dirs:  []string{"data/uploads"},
			want:  "shared dir data/uploads: in the release: data is a symlink (to real): refusing to follow it",
		},
		{
			name:  "shared path through a symlink loop",
			links: map[string]string{"a": "b", "b": "a"},
			dirs:  []string{"a/uploads"},
			want:  "shared dir a/uploads: in the release: a is a symlink (to b): refusing to follow it",
		},
		{
			name:  "shared path through a file",
			files: []string{"data"},
			dirs:  []string{"data/uploads"},
			want:  "shared dir data/uploads: in the release: data is not a directory",
		},
		{
			// The shared link replaces the committed one; its target is
			// never followed, never emptied.
			name:     "symlink named like a shared path",
			links:    map[string]string{"media": "@", "public/media": "@"},
			dirs:     []string{"media", "public/media"},
			allowOut: true,
		},
		{
			name:  "symlink loops elsewhere",
			links: map[string]string{"l1": "l2", "l2": "l1", "self": "self"},
			dirs:  []string{"media"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			outside := t.TempDir()
			if err := os.WriteFile(filepath.Join(outside, "seed"), []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, outside)
			h.repo.Write("VERSION", "v1\n")
			for _, f := range tt.files {
				h.repo.Write(f, "")
			}
			for name, target := range tt.links {
				p := filepath.Join(h.repo.Dir, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.Symlink(strings.ReplaceAll(target, "@", outside), p); err != nil {
					t.Fatal(err)
				}
			}
			sha := h.repo.Commit("hostile")
			d := h.desired(sha)
			d.Source.AllowExternalSymlinks = tt.allowOut
			d.Shared.Dirs, d.Shared.Files = tt.dirs, append([]string{".env"}, tt.sfiles...)
			for _, f := range tt.sfiles {
				os.MkdirAll(filepath.Join(h.root, "shared", filepath.Dir(f)), 0o755)
				os.WriteFile(filepath.Join(h.root, "shared", f), nil, 0o644)
			}
			_, _, err := h.apply(context.Background(), d, func(o *Options) {
				o.Git = &gitcache.Cache{Dir: h.l.RepoDir(), URL: d.Source.Repo, TmpDir: h.l.TmpDir(), AllowExternalSymlinks: tt.allowOut}
			})
			if got := snapshot(t, outside); got != before {
				t.Errorf("outside the root, before:\n%s\nafter:\n%s", before, got)
			}
			want := strings.ReplaceAll(tt.want, "@", outside)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("apply: %v", err)
				}
				for _, p := range tt.dirs {
					got, err := os.Readlink(filepath.Join(h.l.LinkPath(), p))
					if err != nil || !strings.HasSuffix(got, "shared/"+p) {
						t.Errorf("%s in the release: %q, %v; want the shared link", p, got, err)
					}
				}
				return
			}
			var ae *Error
			if !errors.As(err, &ae) || ae.Kind != NeedsPerson || !strings.Contains(err.Error(), want) {
				t.Fatalf("apply: %v\nwant a needs-person error with %q", err, want)
			}
			if _, err := os.Lstat(h.l.LinkPath()); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the link was made: %v", err)
			}
		})
	}
}
