package gitcache

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/reconciler-dev/reconciler/internal/layout"
)

// LogEntry is one commit a deploy ships or takes away.
type LogEntry struct {
	SHA     string    `json:"sha"`
	Subject string    `json:"subject"`
	Time    time.Time `json:"time"`
}

// Log is what lies between two commits.
type Log struct {
	// Direction: "forward" (to descends from from: its commits ship),
	// "back" (from descends from to: its commits go away), "same", or
	// "diverged" (neither: a force push, another branch).
	Direction string     `json:"direction"`
	Commits   []LogEntry `json:"commits,omitempty"` // newest first, at most the max asked
	Total     int        `json:"total"`
	// Partial: the cache does not hold all of the history between them
	// (a shallow fetch, or more than the walk's bound), so Total is a
	// lower bound.
	Partial bool `json:"partial,omitempty"`
}

// walkBound bounds each history walk: a plan is never slow because two
// commits are far apart.
const walkBound = 20000

// Between reads the commits between from (what is linked) and to (the
// target), newest first, keeping max of them. Each walk goes back from one
// commit towards the other and prunes commits older than it, and the
// commits it found are then checked against the other's history over the
// same span of time: so the cost is the history between them, not the
// repository's, and commits with equal times (a rebase makes them) are
// counted right.
func (c *Cache) Between(ctx context.Context, from, to string, max int) (*Log, error) {
	if from == to {
		return &Log{Direction: "same"}, nil
	}
	r, done, err := c.open()
	if err != nil {
		return nil, fmt.Errorf("log %s..%s: %w", layout.Short(from), layout.Short(to), err)
	}
	defer done()
	f, err := readCommit(r, from)
	if err != nil {
		return nil, err
	}
	t, err := readCommit(r, to)
	if err != nil {
		return nil, err
	}
	ships, met, cut, err := only(ctx, r, t, f)
	if err != nil {
		return nil, err
	}
	if met {
		return logOf("forward", ships, max, cut), nil
	}
	goes, met, cut2, err := only(ctx, r, f, t)
	if err != nil {
		return nil, err
	}
	if met {
		return logOf("back", goes, max, cut2), nil
	}
	return logOf("diverged", ships, max, cut || cut2), nil
}

// only returns the commits a has and b does not (git log b..a), whether
// b is an ancestor of a, and whether a walk was cut short by a missing
// parent (a shallow cache) or the bound.
func only(ctx context.Context, r *git.Repository, a, b *object.Commit) (out []*object.Commit, met, cut bool, err error) {
	found, met, cut, err := walk(ctx, r, a, b.Hash, b.Committer.When)
	if err != nil {
		return nil, false, false, err
	}
	since := b.Committer.When
	for _, c := range found {
		if c.Committer.When.Before(since) {
			since = c.Committer.When
		}
	}
	// What b reaches over the same span: those are not a's own (an old
	// branch merged into a, commits with b's very time).
	theirs, _, cut2, err := walk(ctx, r, b, plumbing.ZeroHash, since)
	if err != nil {
		return nil, false, false, err
	}
	skip := map[plumbing.Hash]bool{}
	for _, c := range theirs {
		skip[c.Hash] = true
	}
	for _, c := range found {
		if !skip[c.Hash] {
			out = append(out, c)
		}
	}
	return out, met, cut || cut2, nil
}

// walk goes back from start, not entering stop or commits older than
// since; it reports whether it met stop.
func walk(ctx context.Context, r *git.Repository, start *object.Commit, stop plumbing.Hash, since time.Time) (out []*object.Commit, met, cut bool, err error) {
	queue := []*object.Commit{start}
	seen := map[plumbing.Hash]bool{start.Hash: true}
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, false, false, err
		}
		if len(out) == walkBound {
			return out, met, true, nil
		}
		c := queue[0]
		queue = queue[1:]
		out = append(out, c)
		for _, h := range c.ParentHashes {
			if seen[h] {
				continue
			}
			seen[h] = true
			if h == stop {
				met = true
				continue
			}
			p, err := r.CommitObject(h)
			if errors.Is(err, plumbing.ErrObjectNotFound) {
				cut = true // the shallow boundary
				continue
			}
			if err != nil {
				return nil, false, false, readErr("log", err)
			}
			if p.Committer.When.Before(since) {
				continue
			}
			queue = append(queue, p)
		}
	}
	return out, met, cut, nil
}

func readCommit(r *git.Repository, sha string) (*object.Commit, error) {
	c, err := r.CommitObject(plumbing.NewHash(sha))
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return nil, &Error{Op: "log", Err: fmt.Errorf("%w: commit %s", ErrNotFound, layout.Short(sha))}
	}
	if err != nil {
		return nil, readErr("log", err)
	}
	return c, nil
}

func logOf(dir string, cs []*object.Commit, max int, partial bool) *Log {
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].Committer.When.After(cs[j].Committer.When) })
	l := &Log{Direction: dir, Total: len(cs), Partial: partial}
	for i, c := range cs {
		if i == max {
			break
		}
		subject, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
		l.Commits = append(l.Commits, LogEntry{SHA: c.Hash.String(), Subject: subject, Time: c.Committer.When.UTC()})
	}
	return l
}
