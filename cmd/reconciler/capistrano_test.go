package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/cli"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// capBin is Debian's capistrano. CI installs it (.ci/run): there, a
// missing one is a failure, not a skip.
const capBin = "/usr/bin/cap"

// capistranoFiles are a Capistrano project deploying repo's main to
// deployTo on this machine. There is no sshd: SSHKit's local backend runs
// every command here (:sshkit_backend is what Capistrano's configure_backend
// hands SSHKit after the stage file is read).
func capistranoFiles(repo, deployTo string) map[string]string {
	return map[string]string{
		"Capfile": `require "capistrano/setup"
require "capistrano/deploy"
require "capistrano/scm/git"
install_plugin Capistrano::SCM::Git
`,
		"config/deploy.rb": `require "sshkit/backends/local"
set :application, "site"
set :repo_url, "` + repo + `"
set :branch, "main"
set :deploy_to, "` + deployTo + `"
set :keep_releases, 5
set :linked_dirs, %w[log]
`,
		"config/deploy/production.rb": `set :sshkit_backend, SSHKit::Backend::Local
server "localhost", roles: %w[app]
`,
	}
}

// A root laid out by the real `cap deploy` (two deploys: two releases with
// REVISION files, current -> the second, shared/, repo/, revisions.log)
// is adopted; then a third commit is planned and applied as a release of
// the reconciler's own, pruning beyond keep, and a rollback returns to the
// adopted release Capistrano linked.
func TestAdoptCapistranoRoot(t *testing.T) {
	if _, err := os.Stat(capBin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("capistrano is missing in CI (%v): .ci/run installs it", err)
		}
		t.Skipf("no capistrano at %s", capBin)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "host")
	repo := testgit.New(t)
	capDir := filepath.Join(dir, "cap")
	for name, text := range capistranoFiles(repo.Dir, root) {
		p := filepath.Join(capDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deploy := func() {
		t.Helper()
		cmd := exec.Command(capBin, "production", "deploy")
		cmd.Dir = capDir
		cmd.Env = append(os.Environ(), repo.Env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cap production deploy: %v\n%s", err, tail(out))
		}
	}
	repo.Write("VERSION", "v1\n")
	v1 := repo.Commit("v1")
	deploy()
	rels := releaseDirs(t, root)
	if len(rels) != 1 {
		t.Fatalf("after the first cap deploy: releases %v", rels)
	}
	// Capistrano names a release by the second it was made: the second
	// deploy must start in a later second, or both would be one directory.
	for time.Now().UTC().Format(layout.AdoptedTimeFormat) <= rels[0] {
		time.Sleep(50 * time.Millisecond)
	}
	repo.Write("VERSION", "v2\n")
	v2 := repo.Commit("v2")
	deploy()
	rels = releaseDirs(t, root)
	if len(rels) != 2 {
		t.Fatalf("after two cap deploys: releases %v", rels)
	}
	capV1, capV2 := rels[0], rels[1]
	// What Capistrano left, as the adopt relies on it.
	for name, want := range map[string]string{capV1: v1 + "\n", capV2: v2 + "\n"} {
		if b, err := os.ReadFile(filepath.Join(root, "releases", name, "REVISION")); err != nil || string(b) != want {
			t.Fatalf("releases/%s/REVISION = %q, %v; want %q", name, b, err, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "current")); err != nil || target != filepath.Join(root, "releases", capV2) {
		t.Fatalf("cap's current -> %q, %v", target, err)
	}
	revisionsLog, err := os.ReadFile(filepath.Join(root, "revisions.log"))
	if err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(dir, "desired.yaml")
	if err := os.WriteFile(file, []byte("app: site\nroot: "+root+"\nkeep: 2\n"+
		"source: {repo: "+repo.Dir+", commit: main}\n"+
		"shared: {dirs: [log]}\n"+
		"services:\n  - {name: web, manager: command, restart: 'echo restarted'}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := cli.Main(append(args, "-f", file), &out, &errb); code != 0 {
			t.Fatalf("reconciler %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
		}
		return out.String()
	}

	// Shown, not recorded; then recorded with --yes.
	out := run("adopt")
	for _, want := range []string{
		"deployed by capistrano: " + filepath.Join(root, "current") + " -> " + filepath.Join(root, "releases", capV2),
		"  " + capV1 + "  " + v1[:8] + "          complete\n",
		"  " + capV2 + "  " + v2[:8] + "  yes     complete, serving",
		"note: " + filepath.Join(root, "repo") + " is a git repository the reconciler did not make (Capistrano's mirror)",
		"Nothing is recorded yet: run `reconciler adopt --yes -f " + file + "` to record 2 releases.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("adopt output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(root, ".reconciler")); !os.IsNotExist(err) {
		t.Fatalf("adopt without --yes wrote the state directory: %v", err)
	}
	run("adopt", "--yes")
	l := layout.New(root, "current")
	for name, commit := range map[string]string{capV1: v1, capV2: v2} {
		r, err := record.ReadRelease(l.RecordFile(name))
		if err != nil {
			t.Fatal(err)
		}
		if r.State != record.Complete || r.Commit != commit || r.Adopted == nil || r.Adopted.Tool != "capistrano" || (r.HealthyAt != nil) != (name == capV2) {
			t.Errorf("record of %s: %+v", name, r)
		}
	}
	if target, _ := os.Readlink(l.LinkPath()); target != filepath.Join(root, "releases", capV2) {
		t.Errorf("adopt moved the link: %q", target)
	}
	// As the adopt's note says: Capistrano's mirror is moved away, and the
	// reconciler clones its own cache.
	if err := os.Rename(l.RepoDir(), l.RepoDir()+".capistrano"); err != nil {
		t.Fatal(err)
	}

	repo.Write("VERSION", "v3\n")
	v3 := repo.Commit("v3")
	out = run("plan")
	for _, want := range []string{"+  create", "~  switch   current -> releases/", "the link points at " + capV2 + " (commit " + v2[:8] + ")",
		"-  prune    release " + capV1, "beyond keep: 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "prune    release "+capV2) {
		t.Errorf("plan prunes the adopted linked release, the rollback target:\n%s", out)
	}
	run("apply")
	ours := filepath.Base(mustReadlink(t, l.LinkPath()))
	if !layout.IsReleaseName(ours) || !strings.HasSuffix(ours, v3[:8]) {
		t.Fatalf("after apply: current -> %s", ours)
	}
	ct := strings.TrimSpace(repo.Git("log", "-1", "--pretty=%ct", v3))
	for name, want := range map[string]string{"VERSION": "v3\n", "REVISION": v3 + "\n", "REVISION_TIME": ct + "\n"} {
		if b, err := os.ReadFile(filepath.Join(l.ReleaseDir(ours), name)); err != nil || string(b) != want {
			t.Errorf("%s of the new release = %q, %v; want %q", name, b, err, want)
		}
	}
	if got := strings.Join(releaseDirs(t, root), " "); got != capV2+" "+ours {
		t.Errorf("releases after apply: %s; want %s %s (keep: 2)", got, capV2, ours)
	}

	// Back to what Capistrano deployed: no build, the adopted release linked.
	out = run("rollback", "--to", capV2)
	if strings.Contains(out, "+  create") || strings.Contains(out, "export") {
		t.Errorf("rollback builds:\n%s", out)
	}
	if b, err := os.ReadFile(filepath.Join(l.LinkPath(), "VERSION")); err != nil || string(b) != "v2\n" {
		t.Errorf("after rollback: VERSION %q, %v", b, err)
	}
	if target := mustReadlink(t, l.LinkPath()); target != "releases/"+capV2 {
		t.Errorf("after rollback: current -> %s", target)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "revisions.log")); !bytes.Equal(b, revisionsLog) {
		t.Errorf("revisions.log changed:\n%s", b)
	}
}

// releaseDirs lists releases/ under root, oldest first (names sort by time).
func releaseDirs(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "releases"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func mustReadlink(t *testing.T, p string) string {
	t.Helper()
	target, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// tail is the end of a command's output, for a failure message.
func tail(b []byte) string {
	const n = 4000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
