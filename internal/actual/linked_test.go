package actual

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// refusingGit answers nothing and counts the questions.
type refusingGit struct{ asked int }

var errAsked = errors.New("asked the git cache")

func (g *refusingGit) Resolve(context.Context, string) (string, gitcache.Kind, error) {
	g.asked++
	return "", "", errAsked
}
func (g *refusingGit) HasCommit(string) bool { g.asked++; return false }
func (g *refusingGit) LsRemote(context.Context, string) (string, error) {
	g.asked++
	return "", errAsked
}

// A host that runs what desired.yaml asks for — a full SHA, the linked
// release complete, built from it with the same fingerprint — is observed
// without a question to the git cache; any difference asks it.
func TestConvergedHostAsksNothingOfGit(t *testing.T) {
	const name = "20261126T000000Z-11111111"
	tests := []struct {
		name   string
		commit string
		edit   func(d *desired.State)
		asks   bool
	}{
		{"converged", sha1, nil, false},
		{"another commit", sha2, nil, true},
		{"a branch", "main", nil, true},
		{"another build", sha1, func(d *desired.State) { d.Build = []desired.Step{{Name: "deps", Run: "make"}} }, true},
		{"a cached step", sha1, func(d *desired.State) {
			d.Build = []desired.Step{{Name: "deps", Run: "make", Cache: &desired.StepCache{Key: []string{"go.sum"}, Paths: []string{"vendor"}}}}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, l := adoptRoot(t)
			d.Source.Commit = sha1
			if tt.edit != nil && tt.name == "a cached step" {
				tt.edit(d) // the release was built with it
			}
			fp := d.Fingerprint()
			if err := os.MkdirAll(filepath.Dir(l.RecordFile(name)), 0o755); err != nil {
				t.Fatal(err)
			}
			rec := &record.Release{Name: name, App: d.App, Commit: sha1, Fingerprint: fp, State: record.Complete, Created: time.Now().UTC()}
			if err := record.WriteRelease(l.RecordFile(name), rec); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join("releases", name), l.LinkPath()); err != nil {
				t.Fatal(err)
			}
			d.Source.Commit = tt.commit
			if tt.edit != nil && tt.name != "a cached step" {
				tt.edit(d)
			}
			g := &refusingGit{}
			s, err := Observe(context.Background(), d, g)
			if tt.asks {
				if g.asked == 0 {
					t.Errorf("observed without asking the git cache: %+v", s.Commit)
				}
				return
			}
			if err != nil || g.asked != 0 {
				t.Fatalf("asked the git cache %d times: %v", g.asked, err)
			}
			if s.Commit.SHA != sha1 || s.Commit.Kind != gitcache.KindCommit || !s.Commit.InCache {
				t.Errorf("commit %+v; want %s, a commit the cache held", s.Commit, sha1)
			}
		})
	}
}
