package gitcache

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// plant makes, at cache, a clone of evil whose origin is evil: what a
// local user could leave where the daemon keeps its config clone.
func plant(t *testing.T, evil *testgit.Repo, cache string) {
	t.Helper()
	cmd := exec.Command("git", "clone", "-q", "--bare", evil.Dir, cache)
	cmd.Env = evil.Env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

func configRepos(t *testing.T) (good, evil *testgit.Repo) {
	good, evil = testgit.New(t), testgit.New(t)
	good.Write("hosts/web1.yaml", "app: good\n")
	good.Commit("good")
	evil.Write("hosts/web1.yaml", "app: evil\nbuild: [{name: own, run: 'id > /tmp/owned'}]\n")
	evil.Commit("evil")
	return good, evil
}

// Issue 9, attack 1: a clone made first by someone else, with an origin of
// their own, chose what the daemon deployed. A clone of ours whose origin
// differs is reset to the configured URL; one owned by someone else is
// refused, naming its owner.
func TestConfigCacheFetchesTheConfiguredRepository(t *testing.T) {
	ctx := context.Background()
	good, evil := configRepos(t)
	cache := filepath.Join(t.TempDir(), "state", "config-x")
	os.MkdirAll(filepath.Dir(cache), 0o700)
	plant(t, evil, cache)

	c := &ConfigRepo{URL: "file://" + good.Dir, Branch: "main", CacheDir: cache}
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	sha, err := c.Head(ctx)
	if err != nil || sha != good.Git("rev-parse", "HEAD") {
		t.Fatalf("head %s, %v; want the configured repository's %s", sha, err, good.Git("rev-parse", "HEAD"))
	}
	b, err := c.ReadFile(ctx, sha, "hosts/web1.yaml", 1<<20)
	if err != nil || strings.Contains(string(b), "evil") {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestConfigCacheOwnedByAnotherUserIsRefused(t *testing.T) {
	uid, _ := testgit.Attacker(t)
	ctx := context.Background()
	good, evil := configRepos(t)
	cache := filepath.Join(t.TempDir(), "config-x")
	plant(t, evil, cache)
	if err := os.Chown(cache, uid, -1); err != nil {
		t.Fatal(err)
	}
	c := &ConfigRepo{URL: "file://" + good.Dir, Branch: "main", CacheDir: cache}
	err := c.Fetch(ctx)
	var ue *fsx.UnsafeDirError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "owned by rcattacker") {
		t.Fatalf("fetch into a clone the attacker owns: %v", err)
	}
	if _, err := c.Head(ctx); err == nil {
		t.Fatal("the attacker's clone was read")
	}
}
