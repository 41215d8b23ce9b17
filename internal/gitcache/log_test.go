package gitcache

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// Between lists what a deploy ships or a rollback takes away, newest
// first, over a merge too; two commits on other branches are diverged; a
// shallow cache says its count is partial.
func TestBetween(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	base := r.Commit("base")
	var line []string
	for i := 1; i <= 25; i++ {
		r.Write("f", fmt.Sprint(i))
		line = append(line, r.Commit(fmt.Sprintf("c%d", i)))
	}
	r.Git("checkout", "-q", "-b", "side", base)
	r.Write("side", "s")
	side := r.Commit("side work")
	r.Git("checkout", "-q", "main")
	r.Git("merge", "-q", "--no-ff", "-m", "merge side", "side")
	merged := r.Git("rev-parse", "HEAD")

	c := newCache(t, r.Dir)
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, from, to, dir string
		total               int
		first               string
	}{
		{"forward", base, line[24], "forward", 25, "c25"},
		{"back", line[24], line[19], "back", 5, "c25"},
		{"over a merge", line[24], merged, "forward", 2, "merge side"},
		{"diverged", line[0], side, "diverged", 1, "side work"},
		{"same", base, base, "same", 0, ""},
	}
	for _, tt := range tests {
		l, err := c.Between(ctx, tt.from, tt.to, 20)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if l.Direction != tt.dir || l.Total != tt.total || l.Partial {
			t.Errorf("%s: %s, %d commits, partial %v; want %s, %d", tt.name, l.Direction, l.Total, l.Partial, tt.dir, tt.total)
		}
		if tt.first != "" && (len(l.Commits) == 0 || l.Commits[0].Subject != tt.first) {
			t.Errorf("%s: first %+v; want %q", tt.name, l.Commits, tt.first)
		}
		if len(l.Commits) > 20 {
			t.Errorf("%s: %d subjects; want at most 20", tt.name, len(l.Commits))
		}
	}

	// A shallow cache holds part of the history: what it can see, marked
	// partial, never an error.
	shallow := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command("git", "clone", "-q", "--bare", "--depth", "3", "file://"+r.Dir, shallow).CombinedOutput(); err != nil {
		t.Fatalf("git clone --depth 3: %v\n%s", err, out)
	}
	sc := &Cache{Dir: shallow, URL: r.Dir}
	l, err := sc.Between(ctx, line[24], merged, 20)
	if err != nil || l.Direction != "forward" {
		t.Fatalf("shallow, within depth: %+v, %v", l, err)
	}
	if _, err := sc.Between(ctx, line[0], merged, 20); err == nil {
		t.Error("a commit the shallow cache lacks: no error")
	}
}
