package gitcache

import (
	"context"
	"time"
)

// CommitTime is when commit sha was committed: its committer date, the
// time `git log --pretty=%ct` prints and Capistrano's REVISION_TIME holds.
func (c *Cache) CommitTime(ctx context.Context, sha string) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	r, done, err := c.open()
	if err != nil {
		return time.Time{}, err
	}
	defer done()
	commit, err := readCommit(r, sha)
	if err != nil {
		return time.Time{}, err
	}
	return commit.Committer.When, nil
}
