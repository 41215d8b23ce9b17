package gitcache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// CommitTime is the committer date (what `git log --pretty=%ct` prints),
// not the author date; a commit the cache lacks is ErrNotFound.
func TestCommitTime(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	r.Env = append(r.Env, "GIT_AUTHOR_DATE=2020-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2021-02-03T04:05:06+02:00")
	sha := r.Commit("dated")
	c := newCache(t, r.Dir)
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := c.CommitTime(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2021, 2, 3, 2, 5, 6, 0, time.UTC); !got.Equal(want) {
		t.Errorf("CommitTime = %s; want %s", got, want)
	}
	if want := r.Git("log", "-1", "--pretty=%ct", sha); want != "1612317906" || got.Unix() != 1612317906 {
		t.Errorf("CommitTime unix %d, git says %s; want 1612317906", got.Unix(), want)
	}
	if _, err := c.CommitTime(ctx, "0123456789012345678901234567890123456789"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing commit: err %v; want ErrNotFound", err)
	}
}
