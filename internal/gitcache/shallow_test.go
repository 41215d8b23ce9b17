package gitcache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

const refetched = "git cache update failed; re-fetched it into a fresh cache"

// shallowCache is a cache of url for ref whose log the test reads.
func shallowCache(t *testing.T, url, ref string) (*Cache, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	c := newCache(t, url)
	c.Ref = ref
	c.Log = zap.New(core)
	return c, logs
}

// history makes a repository with commits v1..vn on main, each changing
// VERSION and adding a file, and returns their SHAs (index 0 is v1).
func history(t *testing.T, n int) (*testgit.Repo, []string) {
	t.Helper()
	r := testgit.New(t)
	var shas []string
	for i := 1; i <= n; i++ {
		v := "v" + string(rune('0'+i))
		r.Write("VERSION", v+"\n")
		r.Write("files/"+v+".txt", strings.Repeat(v+" ", 200)+"\n")
		shas = append(shas, commit(r, v))
	}
	return r, shas
}

var clock atomic.Int64

// tick dates the next commit of r a minute after the last one of any
// repository: real commits are made one after another, and an
// incremental fetch walks down the history by time.
func tick(r *testgit.Repo) {
	t := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).Add(time.Duration(clock.Add(1)) * time.Minute).Format(time.RFC3339)
	for i, e := range r.Env {
		for _, k := range []string{"GIT_AUTHOR_DATE=", "GIT_COMMITTER_DATE="} {
			if strings.HasPrefix(e, k) {
				r.Env[i] = k + t
			}
		}
	}
}

// commit commits on r, a minute after the commit before.
func commit(r *testgit.Repo, msg string) string {
	tick(r)
	return r.Commit(msg)
}

// shallowFile is the cache's list of shallow commits ("" when complete).
func shallowFile(t *testing.T, c *Cache) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, "shallow"))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// exportVersion exports sha and returns its VERSION file.
func exportVersion(t *testing.T, c *Cache, sha string) string {
	t.Helper()
	dest := t.TempDir()
	if err := c.Export(context.Background(), sha, "", dest); err != nil {
		t.Fatalf("export %s: %v", sha, err)
	}
	b, err := os.ReadFile(filepath.Join(dest, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func countLogs(logs *observer.ObservedLogs, msg string) int {
	return logs.FilterMessage(msg).Len()
}

// The first fetch brings the target alone: no parent, no other branch.
func TestShallowFirstFetch(t *testing.T) {
	ctx := context.Background()
	r, shas := history(t, 4)
	r.Git("tag", "-a", "-m", "release 2", "v2", shas[1])
	r.Git("branch", "other", shas[0])
	for _, tt := range []struct {
		name, ref string
		want      int // index of the commit the ref names
		kind      Kind
		allowSHA  bool
		// deep: the server would not send the commit by its SHA, so
		// the cache fetched history.
		deep bool
	}{
		{"branch", "main", 3, KindBranch, false, false},
		{"annotated tag", "v2", 1, KindTag, false, false},
		{"SHA at a branch tip", shas[3], 3, KindCommit, false, false},
		{"short SHA at a branch tip", shas[3][:8], 3, KindCommit, false, false},
		{"SHA of a tag", shas[1], 1, KindCommit, false, false},
		{"SHA in history, server sends it", shas[2], 2, KindCommit, true, false},
		{"SHA in history, server refuses", shas[2], 2, KindCommit, false, true},
		{"short SHA in history", shas[2][:8], 2, KindCommit, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r.Git("config", "uploadpack.allowReachableSHA1InWant", map[bool]string{true: "true", false: "false"}[tt.allowSHA])
			c, logs := shallowCache(t, r.Dir, tt.ref)
			if err := c.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			sha, kind, err := c.Resolve(ctx, tt.ref)
			if err != nil || sha != shas[tt.want] || kind != tt.kind {
				t.Fatalf("Resolve(%s) = %s, %s, %v; want %s, %s", tt.ref, sha, kind, err, shas[tt.want], tt.kind)
			}
			if got, want := exportVersion(t, c, sha), "v"+string(rune('1'+tt.want)); got != want {
				t.Errorf("exported VERSION %s, want %s", got, want)
			}
			if tt.deep {
				if !c.HasCommit(shas[0]) || shallowFile(t, c) != "" {
					t.Errorf("a SHA the server will not send by SHA needs history: has v1 %v, shallow %q", c.HasCommit(shas[0]), shallowFile(t, c))
				}
			} else {
				if c.HasCommit(shas[0]) {
					t.Error("a shallow fetch brought history (v1)")
				}
				if !strings.Contains(shallowFile(t, c), sha) {
					t.Errorf("the target %s is not a shallow commit: %q", sha, shallowFile(t, c))
				}
				if _, _, err := c.Resolve(ctx, "other"); !errors.Is(err, ErrNotFound) {
					t.Errorf("another branch was fetched: %v", err)
				}
			}
			if n := countLogs(logs, refetched); n != 0 {
				t.Errorf("the first fetch re-fetched %d times", n)
			}
		})
	}
}

// Updates of a shallow cache, among them the cases of go-git's history of
// `object not found` on fetches into shallow repositories: whatever the
// remote did, the fetch brings the new target shallow, and the cache
// exports it. in-place says go-git updated the cache itself; otherwise
// it was fetched afresh (and the log says so).
func TestShallowUpdate(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		// change changes the remote after the first fetch of ref; it
		// returns the new ref and the SHA it must resolve to.
		ref     string
		change  func(r *testgit.Repo, shas []string) (ref, sha string)
		inPlace bool
	}{
		{"one new commit (go-git#305, src-d/go-git#1143)", "main", func(r *testgit.Repo, shas []string) (string, string) {
			r.Write("VERSION", "v4\n")
			return "main", commit(r, "v4")
		}, true},
		{"several new commits (src-d/go-git#802)", "main", func(r *testgit.Repo, shas []string) (string, string) {
			for _, v := range []string{"v4", "v5", "v6"} {
				r.Write("VERSION", v+"\n")
				commit(r, v)
			}
			return "main", r.Git("rev-parse", "HEAD")
		}, true},
		{"branch force-pushed to an older commit (go-git#1443)", "main", func(r *testgit.Repo, shas []string) (string, string) {
			r.Git("reset", "-q", "--hard", shas[1])
			return "main", shas[1]
		}, true},
		{"history rewritten", "main", func(r *testgit.Repo, shas []string) (string, string) {
			r.Git("checkout", "-q", "--orphan", "new")
			r.Write("VERSION", "v9\n")
			sha := commit(r, "rewritten")
			r.Git("branch", "-M", "new", "main")
			r.Git("gc", "-q", "--prune=now")
			return "main", sha
		}, true},
		{"target moves to an older tag", "main", func(r *testgit.Repo, shas []string) (string, string) {
			r.Git("tag", "-a", "-m", "v1", "v1", shas[0])
			return "v1", shas[0]
		}, true},
		{"tag moved (git tag -f)", "v3", func(r *testgit.Repo, shas []string) (string, string) {
			r.Write("VERSION", "v4\n")
			sha := commit(r, "v4")
			r.Git("tag", "-f", "-a", "-m", "again", "v3")
			return "v3", sha
		}, true},
		{"target pinned to an older SHA", "main", func(r *testgit.Repo, shas []string) (string, string) {
			return shas[0], shas[0]
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, shas := history(t, 3)
			r.Git("tag", "-a", "-m", "v3", "v3")
			r.Git("config", "uploadpack.allowReachableSHA1InWant", "true")
			c, logs := shallowCache(t, r.Dir, tt.ref)
			if err := c.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			if c.HasCommit(shas[1]) {
				t.Fatal("the first fetch was not shallow")
			}
			ref, want := tt.change(r, shas)
			c.Ref = ref
			if err := c.Fetch(ctx); err != nil {
				t.Fatalf("the update failed the deploy: %v", err)
			}
			if sha, _, err := c.Resolve(ctx, ref); err != nil || sha != want {
				t.Fatalf("Resolve(%s) = %s, %v; want %s", ref, sha, err, want)
			}
			if got, w := exportVersion(t, c, want), strings.TrimSpace(r.Git("show", want+":VERSION")); got != w {
				t.Errorf("exported VERSION %s, want %s", got, w)
			}
			if want != shas[0] && c.HasCommit(shas[0]) {
				t.Errorf("the update fetched history: v1 is in the cache (shallow %q)", shallowFile(t, c))
			}
			for _, e := range logs.All() {
				t.Logf("log: %s %v", e.Message, e.ContextMap())
			}
			if n := countLogs(logs, refetched); (n == 0) != tt.inPlace {
				t.Errorf("re-fetched %d times; want in place %v", n, tt.inPlace)
			}
		})
	}
}

// A shallow update that fails, or that says it succeeded without the
// target, is fetched afresh into a new cache: the deploy goes on, and the
// log says the cache was re-fetched.
func TestShallowUpdateFallsBack(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		damage func(t *testing.T, c *Cache, r *testgit.Repo, shas []string) string
		// refetch: the update fails and a fresh cache is fetched;
		// otherwise go-git mends the cache in place.
		refetch bool
	}{
		{"shallow file removed, branch force-pushed to an older commit", func(t *testing.T, c *Cache, r *testgit.Repo, shas []string) string {
			// Without the shallow file go-git offers v3 as a have with
			// its history: the server sends nothing for v2, which the
			// cache never had (the failure of go-git#1443).
			if err := os.Remove(filepath.Join(c.Dir, "shallow")); err != nil {
				t.Fatal(err)
			}
			r.Git("reset", "-q", "--hard", shas[1])
			return shas[1]
		}, true},
		{"shallow file unreadable", func(t *testing.T, c *Cache, r *testgit.Repo, shas []string) string {
			p := filepath.Join(c.Dir, "shallow")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			r.Write("VERSION", "v4\n")
			return commit(r, "v4")
		}, true},
		{"shallow file garbage", func(t *testing.T, c *Cache, r *testgit.Repo, shas []string) string {
			if err := os.WriteFile(filepath.Join(c.Dir, "shallow"), []byte("not a sha\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r.Write("VERSION", "v4\n")
			return commit(r, "v4")
		}, false},
		{"pack removed", func(t *testing.T, c *Cache, r *testgit.Repo, shas []string) string {
			packs, _ := filepath.Glob(filepath.Join(c.Dir, "objects", "pack", "*"))
			for _, p := range packs {
				os.Remove(p)
			}
			r.Write("VERSION", "v4\n")
			return commit(r, "v4")
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, shas := history(t, 3)
			c, logs := shallowCache(t, r.Dir, "main")
			if err := c.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			want := tt.damage(t, c, r, shas)
			if err := c.Fetch(ctx); err != nil {
				t.Fatalf("the deploy's fetch failed: %v", err)
			}
			if n, want := countLogs(logs, refetched), map[bool]int{true: 1}[tt.refetch]; n != want {
				t.Errorf("the log says the cache was re-fetched %d times, want %d", n, want)
			}
			if sha, _, err := c.Resolve(ctx, "main"); err != nil || sha != want {
				t.Fatalf("Resolve(main) = %s, %v; want %s", sha, err, want)
			}
			if got, w := exportVersion(t, c, want), strings.TrimSpace(r.Git("show", want+":VERSION")); got != w {
				t.Errorf("exported VERSION %s, want %s", got, w)
			}
			if c.HasCommit(shas[0]) {
				t.Errorf("the fetch brought history: v1 is in the cache (shallow %q)", shallowFile(t, c))
			}
			if _, err := os.Stat(filepath.Join(c.Dir, Marker)); err != nil {
				t.Errorf("the fresh cache lacks its marker: %v", err)
			}
			if left, _ := os.ReadDir(c.TmpDir); len(left) != 0 {
				t.Errorf("the re-fetch left %d entries in its scratch folder", len(left))
			}
		})
	}
}

// A cache made by an older reconciler (every branch and tag, whole
// history) is updated shallow, in place.
func TestShallowUpdateOfFullCache(t *testing.T) {
	ctx := context.Background()
	r, shas := history(t, 3)
	c, logs := shallowCache(t, r.Dir, "")
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	r.Write("VERSION", "v4\n")
	v4 := commit(r, "v4")
	c.Ref = "main"
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if sha, _, err := c.Resolve(ctx, "main"); err != nil || sha != v4 {
		t.Fatalf("Resolve(main) = %s, %v; want %s", sha, err, v4)
	}
	if got := exportVersion(t, c, v4); got != "v4" {
		t.Errorf("exported VERSION %s", got)
	}
	if !c.HasCommit(shas[0]) {
		t.Error("the update lost the history the cache had")
	}
	if n := countLogs(logs, refetched); n != 0 {
		t.Errorf("re-fetched %d times", n)
	}
}

// source.repo changed to another repository: its history is unrelated to
// the shallow commits the cache has (src-d/go-git#1151).
func TestShallowUpdateOtherRepository(t *testing.T) {
	ctx := context.Background()
	r, _ := history(t, 2)
	c, logs := shallowCache(t, r.Dir, "main")
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	other, shas := history(t, 3)
	c.URL = other.Dir
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if sha, _, err := c.Resolve(ctx, "main"); err != nil || sha != shas[2] {
		t.Fatalf("Resolve(main) = %s, %v; want %s", sha, err, shas[2])
	}
	if got := exportVersion(t, c, shas[2]); got != "v3" {
		t.Errorf("exported VERSION %s", got)
	}
	if n := countLogs(logs, refetched); n != 0 {
		t.Errorf("re-fetched %d times", n)
	}
}

// An export that found the commit missing hands Repair the commit, and
// the fresh shallow cache holds it, not only Ref.
func TestShallowRepairFetchesExportedCommit(t *testing.T) {
	ctx := context.Background()
	for _, allow := range []string{"true", "false"} {
		t.Run("allowReachableSHA1InWant="+allow, func(t *testing.T) {
			r, shas := history(t, 3)
			r.Git("config", "uploadpack.allowReachableSHA1InWant", allow)
			c, logs := shallowCache(t, r.Dir, "main")
			if err := c.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			err := c.Export(ctx, shas[1], "", t.TempDir())
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("export of a commit the cache lacks: %v", err)
			}
			if err := c.Repair(ctx, err); err != nil {
				t.Fatal(err)
			}
			if got := exportVersion(t, c, shas[1]); got != "v2" {
				t.Errorf("exported VERSION %s", got)
			}
			if sha, _, err := c.Resolve(ctx, "main"); err != nil || sha != shas[2] {
				t.Errorf("Resolve(main) = %s, %v", sha, err)
			}
			if n := countLogs(logs, refetched); n != 1 {
				t.Errorf("re-fetched %d times, want 1", n)
			}
		})
	}
}

// A signed commit fetched shallow verifies: the signature covers the
// commit object alone, not its parent.
func TestShallowVerify(t *testing.T) {
	ctx := context.Background()
	alice := testgit.NewSSHKey(t, "alice")
	r, _ := history(t, 2)
	r.Write("VERSION", "v3\n")
	tick(r)
	signed := r.CommitSigned("v3", alice)
	c, _ := shallowCache(t, r.Dir, "main")
	c.Verify = Verifier{AllowedSigners: writeFile(t, "allowed_signers", "test@example.invalid "+alice.Line+"\n")}
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyCommit(ctx, signed); err != nil {
		t.Fatalf("verify a shallow commit: %v", err)
	}
	if got := exportVersion(t, c, signed); got != "v3" {
		t.Errorf("exported VERSION %s", got)
	}
}

// Errors keep their kind through the shallow path: an unknown ref and a
// missing repository need a person, an unreachable remote is transient.
func TestShallowFetchErrors(t *testing.T) {
	ctx := context.Background()
	r, _ := history(t, 1)
	for _, tt := range []struct {
		name, url, ref string
		want           func(*Error) bool
		msg            string
	}{
		{"unknown branch", r.Dir, "nosuch", func(e *Error) bool { return e.Remote && !e.Transient }, "no such branch or tag"},
		{"missing repository", filepath.Join(t.TempDir(), "missing"), "main", func(e *Error) bool { return !e.Transient }, "repository not found"},
		{"connection refused", "http://127.0.0.1:1/app.git", "main", func(e *Error) bool { return e.Transient }, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := shallowCache(t, tt.url, tt.ref)
			err := c.Fetch(ctx)
			var ge *Error
			if !errors.As(err, &ge) || !tt.want(ge) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got %#v (%v)", ge, err)
			}
			if c.Exists() {
				t.Error("a failed first fetch left a cache behind")
			}
		})
	}
}

// packBytes is the size of the cache's packs and loose objects.
func packBytes(t *testing.T, c *Cache) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(c.Dir, "objects"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An upgrade fetches what changed, as `git fetch` does, not the target's
// whole tree again (what a depth-1 fetch without a thin pack gets): the
// next commit of the branch, or the next release's tag.
func TestShallowUpgradeFetchesChanges(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct{ name, first, next string }{
		{"branch moved", "main", "main"},
		{"next release tag", "r1", "r4"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, _ := bigRepo(t) // big.txt: most of the pack
			r.Git("tag", "-a", "-m", "r1", "r1")
			c, logs := shallowCache(t, r.Dir, tt.first)
			if err := c.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			first := packBytes(t, c)
			var want string
			for _, v := range []string{"2", "3", "4"} {
				r.Write("VERSION", v+"\n")
				want = commit(r, "v"+v)
				r.Git("tag", "-a", "-m", "r"+v, "r"+v)
			}
			c.Ref = tt.next
			if err := c.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			if sha, _, err := c.Resolve(ctx, tt.next); err != nil || sha != want {
				t.Fatalf("Resolve(%s) = %s, %v; want %s", tt.next, sha, err, want)
			}
			if got := exportVersion(t, c, want); got != "4" {
				t.Errorf("exported VERSION %s", got)
			}
			if added := packBytes(t, c) - first; added > first/4 {
				t.Errorf("the upgrade added %d bytes to a cache of %d: it fetched the tree again", added, first)
			}
			if n := countLogs(logs, refetched); n != 0 {
				t.Errorf("re-fetched %d times", n)
			}
		})
	}
}

// The shallow cache knows the names of the commits it holds, as the
// mirror did: a rollback to `commit: v1`, first deployed through main,
// resolves without a fetch. A name gone from the remote goes.
func TestShallowCacheNamesWhatItHolds(t *testing.T) {
	ctx := context.Background()
	r, shas := history(t, 1)
	r.Git("tag", "v1")
	r.Git("tag", "-a", "-m", "annotated", "a1")
	r.Git("branch", "old")
	c, _ := shallowCache(t, r.Dir, "main")
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	r.Write("VERSION", "v2\n")
	v2 := commit(r, "v2")
	r.Git("branch", "-D", "old")
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ref  string
		sha  string
		kind Kind
	}{{"main", v2, KindBranch}, {"v1", shas[0], KindTag}, {"a1", shas[0], KindTag}} {
		if sha, kind, err := c.Resolve(ctx, tt.ref); err != nil || sha != tt.sha || kind != tt.kind {
			t.Errorf("Resolve(%s) = %s, %s, %v; want %s, %s", tt.ref, sha, kind, err, tt.sha, tt.kind)
		}
	}
	if _, _, err := c.Resolve(ctx, "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a branch deleted on the remote: %v", err)
	}
}
