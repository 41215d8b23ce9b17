package actual

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
)

const (
	sha1 = "1111111111111111111111111111111111111111"
	sha2 = "2222222222222222222222222222222222222222"
)

func adoptRoot(t *testing.T) (*desired.State, layout.Layout) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "host")
	d := &desired.State{App: "site", Root: root, Link: "current", File: "desired.yaml"}
	return d, layout.New(root, "current")
}

func mkRelease(t *testing.T, l layout.Layout, name, revision string) {
	t.Helper()
	if err := os.MkdirAll(l.ReleaseDir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if revision != "" {
		if err := os.WriteFile(filepath.Join(l.ReleaseDir(name), "REVISION"), []byte(revision), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// What adopt finds: the releases with a commit, oldest first, the linked
// one marked; the rest left alone with a reason; another tool's git
// mirror at repo/ named. REVISION is read as Capistrano writes it (hash
// and newline) or without the newline; never through a symlink.
func TestObserveAdoption(t *testing.T) {
	d, l := adoptRoot(t)
	mkRelease(t, l, "20261102090000", sha2+"\n")
	mkRelease(t, l, "20261101090000", sha1)
	mkRelease(t, l, "20261103090000", "")
	mkRelease(t, l, "20261104090000", "")
	if err := os.Symlink("../20261101090000/REVISION", filepath.Join(l.ReleaseDir("20261104090000"), "REVISION")); err != nil {
		t.Fatal(err)
	}
	mkRelease(t, l, "20261105090000", strings.Repeat("a", 2000))
	if err := os.Symlink("releases/20261102090000", l.LinkPath()); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(l.RepoDir(), "objects"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.RepoDir(), "HEAD"), []byte("ref: refs/heads/main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := ObserveAdoption(d)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range a.Releases {
		got = append(got, r.Name+" "+r.Commit[:4]+" "+r.Created.Format(time.RFC3339)+" "+map[bool]string{true: "linked", false: "-"}[r.Linked])
	}
	want := []string{"20261101090000 1111 2026-11-01T09:00:00Z -", "20261102090000 2222 2026-11-02T09:00:00Z linked"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("releases:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var skipped []string
	for _, s := range a.Skipped {
		skipped = append(skipped, s.Name+": "+s.Why)
	}
	wantSkipped := []string{
		"20261103090000: no REVISION file",
		"20261104090000: REVISION is a symlink (the reconciler follows no link it did not make)",
		"20261105090000: REVISION does not hold a full commit hash",
	}
	if strings.Join(skipped, "\n") != strings.Join(wantSkipped, "\n") {
		t.Errorf("skipped:\n%s\nwant:\n%s", strings.Join(skipped, "\n"), strings.Join(wantSkipped, "\n"))
	}
	if a.Tool != ToolCapistrano || len(a.Notes) != 1 || !strings.Contains(a.Notes[0], "move it away before the first apply") {
		t.Errorf("tool %s, notes %q", a.Tool, a.Notes)
	}
}

// Once recorded, adopted releases are releases to Observe, ordered by the
// time in their names among the reconciler's own; an adopted-style name
// without a record is still another tool's directory, left alone.
func TestObserveAdoptedReleases(t *testing.T) {
	d, l := adoptRoot(t)
	mkRelease(t, l, "20261101090000", sha1)
	mkRelease(t, l, "20261130090000", sha1) // never adopted: no record
	rec := record.Adopt("20261101090000", "site", sha1, time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC), record.Adoption{At: time.Now(), Tool: ToolCapistrano, Linked: true})
	if err := record.WriteRelease(l.RecordFile("20261101090000"), rec); err != nil {
		t.Fatal(err)
	}
	ours := layout.ReleaseName(time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC), sha2, 0)
	mkRelease(t, l, ours, "")
	if err := record.WriteRelease(l.RecordFile(ours), &record.Release{Name: ours, App: "site", Commit: sha2, Fingerprint: "abc", State: record.Complete,
		Created: time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	s, err := Observe(context.Background(), d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Releases) != 2 || s.Releases[0].Name != "20261101090000" || s.Releases[1].Name != ours {
		t.Fatalf("releases %+v", s.Releases)
	}
	if r := s.Releases[0]; !r.Complete() || r.Record.Adopted == nil || r.Record.HealthyAt == nil {
		t.Errorf("adopted record %+v", r.Record)
	}
	if s.RollbackTarget(ours) != "20261101090000" {
		t.Errorf("rollback target %q; want the adopted linked release", s.RollbackTarget(ours))
	}
	if strings.Join(s.Strays, ",") != "20261130090000" {
		t.Errorf("strays %q", s.Strays)
	}
	_, err = ObserveAdoption(d)
	if ae := (*AdoptError)(nil); !errors.As(err, &ae) {
		t.Errorf("adopt with no link: %v; want an AdoptError", err)
	}
}
