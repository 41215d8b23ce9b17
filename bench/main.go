// Command bench measures the reconciler against its performance targets and
// prints each figure beside a baseline measured in the same run:
//
//	go run ./bench [-quick] [-only NAME]
//
// converged: `reconciler apply` on a converged root with 20 releases,
// median process wall time, against `reconciler version` (process start).
// rollback: apply that switches to a release on disk (no service commands),
// against the converged apply.
// export: the commit of a generated 10,000-file, ~100 MB repository written
// into a directory, against `git archive | tar -x`; and the peak RSS.
// clone: the first fetch into the cache, against `git clone --mirror`.
// health: a health check refusing a deterministic 500, against the old
// behaviour (retried until its 30 s timeout).
// history: the first apply's fetch + export on a repository with history
// (releases of a real module, deep synthetic history), against `git fetch
// --depth 1` + `git archive | tar -x`; an upgrade's fetch against `git
// fetch` (see fetch.go).
// django: issue 10's figures on the e2e Django stack, against the
// article's bash deploy on the same stack (bench/django.go).
// fleet: issue 12's simulation, 50 agents and one etcd on this machine
// rolling out a release and halting a broken one (bench/fleet.go);
// -agents N runs N instead.
//
// BENCH_KEEP=1 keeps the temporary directory (the agents' logs, roots
// and the etcd data) for a look afterwards.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reconciler-dev/reconciler/internal/gitcache"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		os.Exit(child(os.Args[2:]))
	}
	quick := flag.Bool("quick", false, "fewer runs and a smaller repository, for a smoke test")
	only := flag.String("only", "", "run one benchmark: converged, startup, rollback, export, clone, daemon, health, history, django, fleet")
	agents := flag.Int("agents", 0, "fleet: how many agents (default 50, 10 with -quick)")
	flag.Parse()
	b := &bench{runs: 21, files: 10000, fileSize: 10 << 10, quick: *quick, agents: *agents}
	if *quick {
		b.runs, b.files = 5, 1000
	}
	dir, err := os.MkdirTemp("", "reconciler-bench-")
	check(err)
	if os.Getenv("BENCH_KEEP") == "" {
		atExit(func() { os.RemoveAll(dir) })
	}
	defer exit(0)
	b.dir = dir
	b.bin = filepath.Join(dir, "reconciler")
	// Built as the release is (.goreleaser.yaml: CGO_ENABLED=0): a static
	// binary, which does not pay for the dynamic loader at start-up (about
	// 60 page faults, 3 ms here).
	build := exec.Command("go", "build", "-o", b.bin, "./cmd/reconciler")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		check(fmt.Errorf("go build: %v\n%s", err, out))
	}
	fmt.Printf("reconciler benchmarks (%d runs each; median)\n\n", b.runs)
	for _, name := range []string{"converged", "startup", "rollback", "export", "clone", "daemon", "health", "history", "django", "fleet"} {
		if *only != "" && *only != name {
			continue
		}
		map[string]func(){"converged": b.converged, "rollback": b.rollback, "export": b.export, "clone": b.clone, "daemon": b.daemon, "health": b.health, "startup": b.startup, "history": b.history, "django": b.django, "fleet": b.fleet}[name]()
	}
}

type bench struct {
	dir, bin        string
	runs            int
	files, fileSize int
	bigRepo         string
	quick           bool
	agents          int // fleet's, when not the default
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		exit(1)
	}
}

var exits struct {
	sync.Mutex
	fns  []func()
	once sync.Once
}

// atExit registers f to run when the program ends, through exit, in
// reverse order: the processes a benchmark started are stopped even when
// a check fails. f must not call check or exit.
func atExit(f func()) {
	exits.Lock()
	defer exits.Unlock()
	exits.fns = append(exits.fns, f)
}

// exit runs the functions atExit registered, then exits with code. A
// second caller (another goroutine's failed check) waits for the first.
func exit(code int) {
	exits.once.Do(func() {
		exits.Lock()
		fns := exits.fns
		exits.Unlock()
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
		os.Exit(code)
	})
}

func gitEnv() []string {
	// gc.auto=0: a background auto-gc after the big commit would collide
	// with the explicit gc and skew the timings.
	return append(os.Environ(), "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=gc.auto", "GIT_CONFIG_VALUE_0=0", "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@example.invalid", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@example.invalid")
}

func run(name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Env = gitEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		check(fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out))
	}
	return strings.TrimSpace(string(out))
}

// timeIt runs the command n times and returns the median wall time and the
// largest peak RSS of the runs.
func timeIt(n int, prepare func(), name string, args ...string) (time.Duration, int64) {
	var ds []time.Duration
	var rss int64
	for i := 0; i < n; i++ {
		if prepare != nil {
			prepare()
		}
		cmd := exec.Command(name, args...)
		cmd.Env = gitEnv()
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			check(fmt.Errorf("%s %v: %v\n%s", name, args, err, out))
		}
		ds = append(ds, d)
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss*1024 > rss {
			rss = ru.Maxrss * 1024
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2], rss
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func verdict(ok bool) string {
	if ok {
		return "target met"
	}
	return "TARGET MISSED"
}

// smallHost makes a repository with n commits and a root with a release of
// each, using the real binary.
func (b *bench) smallHost(name string, n int) (root, file string, shas []string) {
	repo := filepath.Join(b.dir, name+"-app")
	check(os.MkdirAll(repo, 0o755))
	run("git", "init", "-q", "-b", "main", repo)
	for i := 0; i < n; i++ {
		check(os.WriteFile(filepath.Join(repo, "VERSION"), []byte(fmt.Sprintf("v%d\n", i)), 0o644))
		run("git", "-C", repo, "add", "-A")
		run("git", "-C", repo, "commit", "-qm", fmt.Sprintf("v%d", i))
		shas = append(shas, run("git", "-C", repo, "rev-parse", "HEAD"))
	}
	root = filepath.Join(b.dir, name+"-host")
	file = filepath.Join(b.dir, name+".yaml")
	for _, sha := range shas {
		b.writeDesired(file, root, repo, sha)
		run(b.bin, "apply", "-f", file)
	}
	return root, file, shas
}

func (b *bench) writeDesired(file, root, repo, commit string) {
	y := fmt.Sprintf("app: bench\nroot: %s\nkeep: 25\nsource: {repo: %s, commit: %s}\nshared: {dirs: [media]}\nbuild:\n  - {name: b, run: \"cat VERSION > built\"}\n", root, repo, commit)
	check(os.WriteFile(file, []byte(y), 0o644))
}

func (b *bench) converged() {
	_, file, _ := b.smallHost("converged", 20)
	base, _ := timeIt(b.runs, nil, b.bin, "version")
	conv, _ := timeIt(b.runs, nil, b.bin, "apply", "-f", file)
	fmt.Printf("converged apply, 20 releases on disk:   %9s   baseline `reconciler version` %s   (target < 20 ms: %s)\n",
		ms(conv), ms(base), verdict(conv < 20*time.Millisecond))
}

func (b *bench) rollback() {
	root, file, shas := b.smallHost("rollback", 2)
	repo := filepath.Join(b.dir, "rollback-app")
	i := 0
	flip := func() { b.writeDesired(file, root, repo, shas[i%2]); i++ }
	roll, _ := timeIt(b.runs, flip, b.bin, "apply", "-f", file)
	conv, _ := timeIt(b.runs, nil, b.bin, "apply", "-f", file)
	fmt.Printf("rollback to a release on disk:          %9s   baseline converged apply %s   (target < 100 ms: %s)\n",
		ms(roll), ms(conv), verdict(roll < 100*time.Millisecond))
}

// bigRepository generates the export and clone benchmarks' repository:
// b.files files of incompressible content in nested folders.
func (b *bench) bigRepository() (repo, sha string) {
	repo = filepath.Join(b.dir, "big")
	if b.bigRepo != "" {
		return repo, b.bigRepo
	}
	rng := rand.New(rand.NewSource(1))
	buf := make([]byte, b.fileSize*2)
	for i := 0; i < b.files; i++ {
		p := filepath.Join(repo, fmt.Sprintf("d%02d/e%02d/f%05d.dat", i%50, (i/50)%20, i))
		check(os.MkdirAll(filepath.Dir(p), 0o755))
		size := b.fileSize/2 + rng.Intn(b.fileSize)
		rng.Read(buf[:size])
		mode := os.FileMode(0o644)
		if i%100 == 0 {
			mode = 0o755
		}
		check(os.WriteFile(p, buf[:size], mode))
	}
	run("git", "init", "-q", "-b", "main", repo)
	run("git", "-C", repo, "add", "-A")
	run("git", "-C", repo, "commit", "-qm", "big")
	run("git", "-C", repo, "gc", "-q")
	b.bigRepo = run("git", "-C", repo, "rev-parse", "HEAD")
	return repo, b.bigRepo
}

func (b *bench) export() {
	repo, sha := b.bigRepository()
	cache := filepath.Join(b.dir, "export-cache")
	run("git", "clone", "-q", "--mirror", repo, cache)
	self, err := os.Executable()
	check(err)
	// Interleaved, each into a fresh directory, deleted only at the end:
	// deleting 100 MB right before a run (ext4 with discard here) slows
	// the run after it, and alternating keeps both sides under the same
	// conditions.
	var gits, ours []time.Duration
	var gitRSS, ourRSS int64
	out := func(kind string, i int) string {
		d := filepath.Join(b.dir, fmt.Sprintf("export-%s-%d", kind, i))
		check(os.MkdirAll(d, 0o755))
		return d
	}
	for i := 0; i < b.runs; i++ {
		d, rss := timeOnce("sh", "-c", fmt.Sprintf("git -C %s archive %s | tar -x -C %s", cache, sha, out("git", i)))
		gits, gitRSS = append(gits, d), max(gitRSS, rss)
		d, rss = timeOnce(self, "child", "export", cache, sha, out("ours", i))
		ours, ourRSS = append(ours, d), max(ourRSS, rss)
	}
	size := du(filepath.Join(b.dir, "export-ours-0"))
	for i := 0; i < b.runs; i++ {
		os.RemoveAll(filepath.Join(b.dir, fmt.Sprintf("export-git-%d", i)))
		os.RemoveAll(filepath.Join(b.dir, fmt.Sprintf("export-ours-%d", i)))
	}
	git, our := median(gits), median(ours)
	ratio := float64(our) / float64(git)
	fmt.Printf("export %d files (%s):          %9s   baseline git archive | tar -x %s   ratio %.2f (target <= 1.1: %s)\n",
		b.files, size, ms(our), ms(git), ratio, verdict(ratio <= 1.1))
	fmt.Printf("export peak memory:                     %6d MB   baseline git archive | tar %d MB   (target < 150 MB: %s)\n",
		ourRSS>>20, gitRSS>>20, verdict(ourRSS < 150<<20))
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func timeOnce(name string, args ...string) (time.Duration, int64) {
	return timeIt(1, nil, name, args...)
}

func du(dir string) string {
	f := strings.Fields(run("du", "-sh", dir))
	return f[0]
}

func (b *bench) clone() {
	repo, _ := b.bigRepository()
	self, err := os.Executable()
	check(err)
	dst := filepath.Join(b.dir, "clone-dst")
	clean := func() { check(os.RemoveAll(dst)) }
	runs := max(3, b.runs/4)
	// --no-local: a plain local clone hardlinks the objects and measures
	// nothing; through the transport, git does what go-git does.
	git, _ := timeIt(runs, clean, "git", "clone", "-q", "--mirror", "--no-local", repo, dst)
	ours, ourRSS := timeIt(runs, clean, self, "child", "clone", repo, dst)
	ratio := float64(ours) / float64(git)
	fmt.Printf("first clone into the cache:             %9s   baseline git clone --mirror %s   ratio %.2f (target <= 1.3: %s); peak %d MB\n",
		ms(ours), ms(git), ratio, verdict(ratio <= 1.3), ourRSS>>20)
}

// child runs one operation of the reconciler in its own process, so that
// its wall time and peak memory are measured like git's.
func child(args []string) int {
	ctx := context.Background()
	var err error
	switch args[0] {
	case "export": // cache sha dest
		c := &gitcache.Cache{Dir: args[1]}
		err = c.Export(ctx, args[2], "", args[3])
	case "clone": // url dest
		c := &gitcache.Cache{Dir: args[2], URL: args[1], TmpDir: args[2] + ".tmp"}
		err = c.Fetch(ctx)
		os.RemoveAll(args[2] + ".tmp")
	case "history-apply", "history-fetch":
		err = historyChild(ctx, args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
