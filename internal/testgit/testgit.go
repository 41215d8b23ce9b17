// Package testgit builds real git repositories in temporary directories for
// tests, with the git command and a fixed identity and clock.
package testgit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Repo is a git repository with a work tree, made for one test.
type Repo struct {
	t    testing.TB
	Dir  string
	n    int
	Env  []string
	last string
}

// Env is the environment git commands run with in tests: no user or system
// configuration, a fixed identity.
func Env(home string) []string {
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.invalid",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.invalid",
		"GIT_AUTHOR_DATE=2026-11-25T12:00:00Z", "GIT_COMMITTER_DATE=2026-11-25T12:00:00Z",
	}
}

// New makes an empty repository on branch main.
func New(t testing.TB) *Repo {
	t.Helper()
	dir := t.TempDir()
	r := &Repo{t: t, Dir: dir, Env: Env(t.TempDir())}
	r.Git("init", "-q", "-b", "main")
	return r
}

// Git runs git in the repository and returns its trimmed output.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.Dir
	cmd.Env = r.Env
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Write writes a file of the work tree, creating its folders.
func (r *Repo) Write(path, content string) {
	r.WriteMode(path, content, 0o644)
}

// WriteMode writes a file with a mode.
func (r *Repo) WriteMode(path, content string, mode os.FileMode) {
	r.t.Helper()
	p := filepath.Join(r.Dir, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		r.t.Fatal(err)
	}
}

// Commit commits everything in the work tree and returns the full SHA.
func (r *Repo) Commit(msg string) string {
	r.t.Helper()
	r.n++
	r.Git("add", "-A")
	r.Git("commit", "-q", "--allow-empty", "-m", msg)
	r.last = r.Git("rev-parse", "HEAD")
	return r.last
}
