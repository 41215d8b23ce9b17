package gitcache

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// closedPort returns a loopback address nothing listens on.
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

func TestLsRemoteMovedTag(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	r.Write("VERSION", "1\n")
	v1 := r.Commit("v1")
	r.Git("tag", "production")
	r.Git("tag", "-a", "-m", "annotated", "release")
	c := newCache(t, r.Dir)
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	r.Write("VERSION", "2\n")
	v2 := r.Commit("v2")
	r.Git("tag", "-f", "production")
	r.Git("tag", "-f", "-a", "-m", "moved", "release")

	for _, tag := range []string{"production", "release"} {
		if sha, kind, err := c.Resolve(ctx, tag); err != nil || sha != v1 || kind != KindTag {
			t.Errorf("cached %s = %s, %s, %v; want %s", tag, sha, kind, err, v1)
		}
		if sha, err := c.LsRemote(ctx, tag); err != nil || sha != v2 {
			t.Errorf("LsRemote(%s) = %s, %v; want the peeled %s", tag, sha, err, v2)
		}
	}
	if err := c.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"production", "release"} {
		if sha, _, err := c.Resolve(ctx, tag); err != nil || sha != v2 {
			t.Errorf("after the fetch %s = %s, %v; want %s (the moved tag)", tag, sha, err, v2)
		}
	}
}

func TestLsRemoteErrors(t *testing.T) {
	ctx := context.Background()
	r := testgit.New(t)
	r.Commit("v1")
	keyless := newCache(t, "ssh://git@"+closedPort(t)+"/app.git")
	keyless.SSHKey = filepath.Join(t.TempDir(), "no_such_key")
	for _, tt := range []struct {
		name      string
		c         *Cache
		ref       string
		transient bool
		unknown   bool
		want      string
	}{
		{"unknown branch", newCache(t, r.Dir), "nosuch", false, true, `no such branch or tag on the remote: "nosuch"`},
		{"missing repository", newCache(t, filepath.Join(t.TempDir(), "nope")), "main", false, false, "repository not found"},
		{"closed port", newCache(t, "http://user:s3cret@"+closedPort(t)+"/app.git"), "main", true, false, "connection refused"},
		{"missing ssh key", keyless, "main", false, false, "read source.ssh_key " + keyless.SSHKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c.LsRemote(ctx, tt.ref)
			var ge *Error
			if !errors.As(err, &ge) || ge.Transient != tt.transient || errors.Is(err, ErrUnknownRef) != tt.unknown || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LsRemote: %#v (%v); want transient=%v unknown=%v, %q", err, err, tt.transient, tt.unknown, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the password shows: %v", err)
			}
			if _, err := os.Lstat(tt.c.Dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("ls-remote wrote the cache: %v", err)
			}
			if _, err := os.Lstat(tt.c.TmpDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("ls-remote wrote its scratch folder: %v", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:s3cret@example.com/app.git": "https://user:xxxxx@example.com/app.git",
		"https://example.com/app.git":             "https://example.com/app.git",
		"git@example.com:app.git":                 "git@example.com:app.git",
		"/srv/git/app":                            "/srv/git/app",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q; want %q", in, got, want)
		}
	}
}
