package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

func TestRepoLoad(t *testing.T) {
	ctx := context.Background()
	cfg := testgit.New(t)
	cfg.Write("hosts/web1.yaml", "app: a\n")
	v1 := cfg.Commit("v1")
	for _, tt := range []struct {
		name string
		repo *Repo
	}{
		{"local", &Repo{URL: cfg.Dir, Path: "hosts/web1.yaml", Branch: "main"}},
		{"remote", &Repo{URL: "file://" + cfg.Dir, Path: "hosts/web1.yaml", Branch: "main", CacheDir: filepath.Join(t.TempDir(), "cfg")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.repo.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(s.Data) != "app: a\n" || s.Commit != v1 {
				t.Errorf("loaded %q at %s; want v1 %s", s.Data, s.Commit, v1)
			}
			missing := *tt.repo
			missing.Path = "hosts/db1.yaml"
			if _, err := missing.Load(ctx); err == nil || !strings.Contains(err.Error(), "hosts/db1.yaml: no such file in the commit") {
				t.Errorf("a missing file: %v", err)
			}
			branch := *tt.repo
			branch.Branch = "nosuch"
			if _, err := branch.Load(ctx); err == nil || !strings.Contains(err.Error(), "nosuch") {
				t.Errorf("a missing branch: %v", err)
			}
		})
	}
}

// A local config repository deleted and created again at the same path
// is still watched: every later commit is reported, and the loss is
// logged.
func TestRepoWatchFollowsRecreatedRepository(t *testing.T) {
	for _, bare := range []bool{false, true} {
		name := "work tree"
		if bare {
			name = "bare"
		}
		t.Run(name, func(t *testing.T) { testWatchRecreated(t, bare) })
	}
}

func testWatchRecreated(t *testing.T, bare bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	work := testgit.New(t)
	dir := filepath.Join(t.TempDir(), "config")
	url := work.Dir
	if bare {
		url = dir
	}
	// commit commits n into work; a bare config repository gets it by
	// a push.
	commit := func(n string) string {
		t.Helper()
		work.Write("d.yaml", "app: "+n+"\n")
		sha := work.Commit(n)
		if bare {
			work.Git("push", "-q", "-f", dir, "main")
		}
		return sha
	}
	create := func() {
		t.Helper()
		if bare {
			work.Git("init", "-q", "--bare", "-b", "main", dir)
		}
	}
	create()
	commit("v1")

	core, logs := observer.New(zapcore.InfoLevel)
	r := &Repo{URL: url, Path: "d.yaml", Branch: "main", Log: zap.New(core)}
	seen := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		done <- r.Watch(ctx, func(string) {
			s, err := r.Load(ctx)
			if err != nil {
				seen <- "error: " + err.Error()
				return
			}
			seen <- s.Commit
		})
	}()
	wait := func(want string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case got := <-seen:
				if got == want {
					return
				}
			case <-timeout:
				t.Fatalf("commit %s not reported within 10 s", want)
			}
		}
	}
	// A commit seen proves the watch is up.
	wait(commit("v2"))

	// Delete the repository and make it again at the same path.
	if bare {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	} else {
		if err := os.RemoveAll(work.Dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(work.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		work.Git("init", "-q", "-b", "main")
	}
	create()
	wait(commit("v3"))
	wait(commit("v4"))

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessage("watched path vanished; waiting for it to be created again").Len() == 0 {
		t.Errorf("the loss of the repository was not logged: %v", logs.All())
	}
}

// With Verify, only a signed tip commit is read: an unsigned one is an
// error that names it, in place or from a clone.
func TestRepoLoadVerifies(t *testing.T) {
	ctx := context.Background()
	key := testgit.NewSSHKey(t, "ops")
	allowed := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(allowed, []byte("ops@example.com "+key.Line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testgit.New(t)
	cfg.Write("d.yaml", "app: a\n")
	signed := cfg.CommitSigned("signed", key)
	v := gitcache.Verifier{AllowedSigners: allowed}
	for _, tt := range []struct {
		name string
		repo *Repo
	}{
		{"local", &Repo{URL: cfg.Dir, Path: "d.yaml", Branch: "main", Verify: v}},
		{"remote", &Repo{URL: "file://" + cfg.Dir, Path: "d.yaml", Branch: "main", CacheDir: filepath.Join(t.TempDir(), "cfg"), Verify: v}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg.Git("reset", "-q", "--hard", signed)
			s, err := tt.repo.Load(ctx)
			if err != nil || s.Commit != signed {
				t.Fatalf("signed: %+v, %v", s, err)
			}
			cfg.Write("d.yaml", "app: b\n")
			unsigned := cfg.Commit("unsigned")
			s, err = tt.repo.Load(ctx)
			var se *gitcache.SignatureError
			if s != nil || !errors.As(err, &se) || se.Commit != unsigned || se.Reason != gitcache.ReasonUnsigned {
				t.Fatalf("unsigned: %+v, %v", s, err)
			}
		})
	}
}
