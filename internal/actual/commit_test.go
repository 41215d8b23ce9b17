package actual

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// countingGit is the real cache, counting the questions to the remote.
type countingGit struct {
	*gitcache.Cache
	lsRemotes int
}

func (g *countingGit) LsRemote(ctx context.Context, ref string) (string, error) {
	g.lsRemotes++
	return g.Cache.LsRemote(ctx, ref)
}

var _ Git = (*countingGit)(nil)

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestObserveCommit(t *testing.T) {
	ctx := context.Background()
	repo := testgit.New(t)
	repo.Write("VERSION", "1\n")
	v1 := repo.Commit("v1")
	repo.Git("tag", "production")
	repo.Git("tag", "-a", "-m", "annotated", "release")

	// warm is a cache holding v1, whose remote then moved on to v2.
	warm := &gitcache.Cache{Dir: filepath.Join(t.TempDir(), "repo"), URL: repo.Dir, TmpDir: t.TempDir()}
	if err := warm.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	repo.Write("VERSION", "2\n")
	v2 := repo.Commit("v2")
	repo.Git("tag", "-f", "production")
	repo.Git("tag", "-f", "-a", "-m", "moved", "release")

	cold := func(url string) *gitcache.Cache {
		dir := t.TempDir()
		return &gitcache.Cache{Dir: filepath.Join(dir, "repo"), URL: url, TmpDir: filepath.Join(dir, "tmp")}
	}
	// broken is a cache whose path is a regular file.
	broken := cold(repo.Dir)
	if err := os.WriteFile(broken.Dir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	onDisk := []Release{{Name: "20261125T120000Z-" + v1[:8], Record: &record.Release{Commit: v1}}}
	missing := filepath.Join(t.TempDir(), "nope")
	for _, tt := range []struct {
		name      string
		cache     *gitcache.Cache
		ref       string
		releases  []Release
		sha       string
		inCache   bool
		why       string // a substring of Why
		err       string // a substring of the error; "" for none
		transient bool
		lsRemotes int
	}{
		{name: "cached sha", cache: warm, ref: v1, sha: v1, inCache: true},
		{name: "cached short sha", cache: warm, ref: v1[:8], sha: v1, inCache: true},
		{name: "sha the cache lacks", cache: warm, ref: v2, sha: v2, why: "not in the cache", lsRemotes: 1},
		{name: "sha on disk, no cache, no remote", cache: cold(missing), ref: v1, releases: onDisk, sha: v1, why: "not in the cache"},
		{name: "short sha on disk", cache: cold(missing), ref: v1[:10], releases: onDisk, why: "not in the cache"},
		{name: "sha not in the cache: the remote answers", cache: cold(repo.Dir), ref: v2, sha: v2, why: "not in the cache", lsRemotes: 1},
		{name: "sha not in the cache: no remote", cache: cold(missing), ref: v2, err: `resolve source.commit "` + v2 + `": ls-remote ` + missing + `: repository not found`, lsRemotes: 1},
		{name: "branch not in the cache", cache: cold(repo.Dir), ref: "main", why: "main is not in the cache", lsRemotes: 1},
		{name: "unknown branch", cache: cold(repo.Dir), ref: "nosuch", err: `resolve source.commit "nosuch": ls-remote ` + repo.Dir + `: no such branch or tag on the remote: "nosuch"`, lsRemotes: 1},
		{name: "unreachable remote", cache: cold("http://deploy:s3cret@" + closedPort(t) + "/app.git"), ref: "main", err: `resolve source.commit "main": ls-remote http://deploy:xxxxx@`, transient: true, lsRemotes: 1},
		{name: "damaged cache", cache: broken, ref: "main", why: "the git cache is damaged: ", lsRemotes: 1},
		{name: "branch moved", cache: warm, ref: "main", sha: v2, why: "branch main moved from " + v1[:8] + " to " + v2[:8], lsRemotes: 1},
		{name: "tag moved", cache: warm, ref: "production", sha: v2, why: "tag production moved from " + v1[:8] + " to " + v2[:8], lsRemotes: 1},
		{name: "annotated tag moved", cache: warm, ref: "release", sha: v2, why: "tag release moved from " + v1[:8] + " to " + v2[:8], lsRemotes: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := &countingGit{Cache: tt.cache}
			c, err := observeCommit(ctx, tt.ref, g, tt.releases)
			if g.lsRemotes != tt.lsRemotes {
				t.Errorf("%d ls-remotes; want %d", g.lsRemotes, tt.lsRemotes)
			}
			if tt.err != "" {
				var ge *gitcache.Error
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.As(err, &ge) || ge.Transient != tt.transient {
					t.Fatalf("error %v; want %q (transient %v)", err, tt.err, tt.transient)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("the password shows: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.SHA != tt.sha || c.InCache != tt.inCache || !strings.Contains(c.Why, tt.why) || (tt.why == "" && c.Why != "") {
				t.Errorf("got %+v; want SHA %s, InCache %v, Why ~ %q", c, tt.sha, tt.inCache, tt.why)
			}
		})
	}
}
