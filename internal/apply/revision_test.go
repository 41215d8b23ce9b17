package apply

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/record"
)

// Every release carries REVISION (the full hash and a newline) and
// REVISION_TIME (the committer time, Unix seconds, and a newline), as
// Capistrano writes them, from the export on: the first build step reads
// them. A REVISION of the commit's own is replaced, a symlink there is
// removed without writing through it, and a directory is refused.
func TestRevisionFiles(t *testing.T) {
	tests := []struct {
		name  string
		plant func(h *host)
		// fails: the apply fails with this in its error.
		fails string
		note  string
	}{
		{name: "plain"},
		{name: "the commit has a REVISION file", note: "the commit's own REVISION is replaced by the release's",
			plant: func(h *host) { h.repo.Write("REVISION", "v9 from the repository\n") }},
		{name: "the commit has a REVISION symlink", note: "the commit's own REVISION is replaced by the release's",
			plant: func(h *host) {
				if err := os.Symlink("VERSION", filepath.Join(h.repo.Dir, "REVISION")); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "the commit has a REVISION_TIME file", note: "the commit's own REVISION_TIME is replaced by the release's",
			plant: func(h *host) { h.repo.Write("REVISION_TIME", "0\n") }},
		{name: "the commit has a REVISION directory", fails: "the commit has a directory REVISION at the top of the release",
			plant: func(h *host) { h.repo.Write("REVISION/keep", "") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			h.build = "  - name: see\n    run: cat REVISION REVISION_TIME > seen.txt\n"
			h.migrate = "true"
			h.repo.Env = append(h.repo.Env, "GIT_COMMITTER_DATE=2026-11-20T08:30:00Z")
			if tt.plant != nil {
				tt.plant(h)
			}
			sha := h.commit("v1")
			ev := &events{}
			res, _, err := h.apply(context.Background(), h.desired(sha), func(o *Options) { o.View = ev })
			if tt.fails != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fails) {
					t.Fatalf("apply: %v; want an error with %q", err, tt.fails)
				}
				if r := h.record(res.Release); r.State != record.Failed || r.Failure == nil || r.Failure.Step != "export" {
					t.Errorf("record: %+v; want failed at export", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rel := h.l.ReleaseDir(h.linked())
			want := sha + "\n" + "1795163400\n" // 2026-11-20T08:30:00Z
			if b, err := os.ReadFile(filepath.Join(rel, "seen.txt")); err != nil || string(b) != want {
				t.Errorf("the build step read %q, %v; want %q", b, err, want)
			}
			for name, text := range map[string]string{"REVISION": sha + "\n", "REVISION_TIME": "1795163400\n"} {
				fi, err := os.Lstat(filepath.Join(rel, name))
				if err != nil || !fi.Mode().IsRegular() {
					t.Fatalf("%s: %v, %v; want a regular file", name, fi, err)
				}
				if b, _ := os.ReadFile(filepath.Join(rel, name)); string(b) != text {
					t.Errorf("%s = %q; want %q", name, b, text)
				}
			}
			if b, _ := os.ReadFile(filepath.Join(rel, "VERSION")); string(b) != "v1\n" {
				t.Errorf("VERSION = %q: written through the REVISION symlink", b)
			}
			if got := strings.Join(ev.notes, "\n"); tt.note != "" && !strings.Contains(got, tt.note) || tt.note == "" && strings.Contains(got, "replaced") {
				t.Errorf("notes %q; want %q", got, tt.note)
			}
		})
	}
}
