package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/reconciler-dev/reconciler/internal/gitcache"
)

// historyModule is the history benchmark's source of real releases: about
// 2,000 Go files a release, twenty minor releases whose deltas are a
// year of Kubernetes changes each. Downloads stay in the module cache, so
// a rerun does not download again.
const historyModule = "k8s.io/client-go"

// historyVersions are the releases committed one after another; the last
// one is the upgrade, committed after the first apply was measured.
func (b *bench) historyVersions() []string {
	first, last := 18, 37
	if b.quick {
		first = 35
	}
	var vs []string
	for i := first; i <= last; i++ {
		vs = append(vs, fmt.Sprintf("v0.%d.0", i))
	}
	return vs
}

// historyCommits is the deep synthetic history before the releases.
func (b *bench) historyCommits() int {
	if b.quick {
		return 300
	}
	return 5000
}

// history measures what a deploy fetches from a repository with history,
// closer to real ones than the one big commit of export and clone:
// synthetic small commits, then releases of historyModule committed one
// after another (a delta-heavy pack), gc'd as a server's would be.
//
// first apply: the cache fetch of the last release but one and its export,
// against `git fetch --depth 1` + `git archive | tar -x`; and the same with
// the old full mirror (Cache.Ref unset), for the figure before.
// upgrade: the fetch of the next release into the cache the first apply
// left, against `git fetch --depth 1` into git's shallow repository.
func (b *bench) history() {
	repo, files, dirs := b.historyRepository()
	vs := b.historyVersions()
	target, next := vs[len(vs)-2], vs[len(vs)-1]
	url := "file://" + repo
	self, err := os.Executable()
	check(err)
	runs := max(3, b.runs/4)
	dir := func(name string) string {
		d := filepath.Join(b.dir, "history-"+name)
		check(os.RemoveAll(d))
		check(os.RemoveAll(d + ".tmp"))
		return d
	}
	gitFirst := func(cache, out string) []string {
		return []string{"sh", "-c", fmt.Sprintf("git init -q --bare %[1]s && git -C %[1]s fetch -q --depth 1 %[2]s refs/tags/%[3]s:refs/tags/%[3]s && mkdir %[4]s && git -C %[1]s archive %[3]s | tar -x -C %[4]s",
			cache, url, target, out)}
	}

	// First apply, interleaved so that both sides run under the same
	// conditions; the last run of each is kept for the upgrade.
	var gits, ours, fulls []time.Duration
	var gitRSS, ourRSS, fullRSS int64
	for i := 0; i < runs; i++ {
		sh := gitFirst(dir("git"), dir("git-out"))
		d, rss := timeOnce(sh[0], sh[1:]...)
		gits, gitRSS = append(gits, d), max(gitRSS, rss)
		d, rss = timeOnce(self, "child", "history-apply", url, dir("ours"), target, dir("ours-out"))
		ours, ourRSS = append(ours, d), max(ourRSS, rss)
		if i < min(runs, 3) {
			d, rss = timeOnce(self, "child", "history-apply", url, dir("full"), "", dir("full-out"))
			fulls, fullRSS = append(fulls, d), max(fullRSS, rss)
		}
	}
	size := du(filepath.Join(b.dir, "history-ours-out"))

	// The upgrade: the next release appears on the remote.
	commitRelease(repo, next, dirs[next])
	run("git", "-C", repo, "repack", "-q", "-d")
	var gitUp, ourUp, fullUp []time.Duration
	var ourUpRSS int64
	copyOf := func(name string) string {
		d := dir(name + "-up")
		run("cp", "-a", filepath.Join(b.dir, "history-"+name), d)
		return d
	}
	for i := 0; i < runs; i++ {
		g := copyOf("git")
		d, _ := timeOnce("git", "-C", g, "fetch", "-q", "--depth", "1", url, "refs/tags/"+next+":refs/tags/"+next)
		gitUp = append(gitUp, d)
		o := copyOf("ours")
		d, rss := timeOnce(self, "child", "history-fetch", url, o, next)
		ourUp, ourUpRSS = append(ourUp, d), max(ourUpRSS, rss)
		if i < min(runs, 3) {
			d, _ = timeOnce(self, "child", "history-fetch", url, copyOf("full"), "")
			fullUp = append(fullUp, d)
		}
	}

	git, our, full := median(gits), median(ours), median(fulls)
	tr := float64(our) / float64(git)
	mr := float64(ourRSS) / float64(gitRSS)
	fmt.Printf("history repository: %s %s..%s (%d releases, ~%d files, %s exported), after %d synthetic commits\n",
		historyModule, vs[0], next, len(vs), files, size, b.historyCommits())
	fmt.Printf("first apply (fetch %s + export):  %9s   baseline git fetch --depth 1 + git archive | tar -x %s   ratio %.2f (target <= 1.2: %s)\n",
		target, ms(our), ms(git), tr, verdict(tr <= 1.2))
	fmt.Printf("first apply peak memory:                %6d MB   baseline git %d MB   ratio %.2f (target <= 1.5: %s)\n",
		ourRSS>>20, gitRSS>>20, mr, verdict(mr <= 1.5))
	fmt.Printf("first apply, full mirror (before):      %9s   peak %d MB\n", ms(full), fullRSS>>20)
	gu, ou, fu := median(gitUp), median(ourUp), median(fullUp)
	fmt.Printf("upgrade fetch %s -> %s:      %9s   baseline git fetch --depth 1 %s   ratio %.2f; peak %d MB; full mirror (before) %s\n",
		target, next, ms(ou), ms(gu), float64(ou)/float64(gu), ourUpRSS>>20, ms(fu))
}

// historyRepository builds the benchmark's repository: the synthetic
// commits, then every release but the last, each tagged, then gc.
func (b *bench) historyRepository() (repo string, files int, dirs map[string]string) {
	vs := b.historyVersions()
	dirs = b.download(vs)
	repo = filepath.Join(b.dir, "history-repo")
	run("git", "init", "-q", "-b", "main", repo)
	b.syntheticHistory(repo, b.historyCommits())
	for _, v := range vs[:len(vs)-1] {
		commitRelease(repo, v, dirs[v])
	}
	start := time.Now()
	run("git", "-C", repo, "gc", "-q")
	fmt.Printf("(history repository built; gc took %s)\n", time.Since(start).Round(time.Second))
	files = strings.Count(run("git", "-C", repo, "ls-tree", "-r", "--name-only", vs[len(vs)-2]), "\n") + 1
	return repo, files, dirs
}

// download fetches the releases through the module proxy (GOPROXY) into
// the module cache, and returns their directories.
func (b *bench) download(vs []string) map[string]string {
	args := []string{"mod", "download", "-json"}
	for _, v := range vs {
		args = append(args, historyModule+"@"+v)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = b.dir // outside any module: nothing's go.mod changes
	out, err := cmd.Output()
	check(err)
	dirs := map[string]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var m struct{ Version, Dir, Error string }
		check(dec.Decode(&m))
		if m.Error != "" {
			check(fmt.Errorf("go mod download %s@%s: %s", historyModule, m.Version, m.Error))
		}
		dirs[m.Version] = m.Dir
	}
	return dirs
}

// syntheticHistory commits n small changes through git fast-import (a
// commit each through `git commit` would take minutes).
func (b *bench) syntheticHistory(repo string, n int) {
	var s strings.Builder
	for i := 1; i <= n; i++ {
		msg := fmt.Sprintf("change %d", i)
		body := fmt.Sprintf("change %d of note %d\n", i, i%50)
		fmt.Fprintf(&s, "commit refs/heads/main\nmark :%d\ncommitter b <b@example.invalid> %d +0000\ndata %d\n%s\n", i, 1600000000+i*600, len(msg), msg)
		if i > 1 {
			fmt.Fprintf(&s, "from :%d\n", i-1)
		}
		fmt.Fprintf(&s, "M 100644 inline notes/%02d.txt\ndata %d\n%s\n", i%50, len(body), body)
	}
	cmd := exec.Command("git", "-C", repo, "fast-import", "--quiet")
	cmd.Env = gitEnv()
	cmd.Stdin = strings.NewReader(s.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		check(fmt.Errorf("git fast-import: %v\n%s", err, out))
	}
}

// commitRelease commits the module's release v, in dir, as the whole
// tree (what a release of an app is) and tags it.
func commitRelease(repo, v, dir string) {
	git := func(args ...string) {
		run("git", append([]string{"--git-dir", filepath.Join(repo, ".git"), "--work-tree", dir}, args...)...)
	}
	git("add", "-A", ".")
	git("commit", "-q", "-m", "release "+v)
	git("tag", v)
}

// historyChild is the cache's side of the history benchmark, in the
// child process: "history-apply url cache ref out" fetches ref into a
// new cache and exports it; "history-fetch url cache ref" fetches ref
// into the cache there. An empty ref is the old full mirror.
func historyChild(ctx context.Context, args []string) error {
	c := &gitcache.Cache{URL: args[1], Dir: args[2], TmpDir: args[2] + ".tmp", Ref: args[3]}
	defer os.RemoveAll(c.TmpDir)
	if err := c.Fetch(ctx); err != nil {
		return err
	}
	if args[0] != "history-apply" {
		return nil
	}
	ref := args[3]
	if ref == "" {
		ref = "main"
	}
	sha, _, err := c.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(args[4], 0o755); err != nil {
		return err
	}
	return c.Export(ctx, sha, "", args[4])
}
