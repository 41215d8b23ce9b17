package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/procs"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

var (
	kills = flag.Int("kills", 100, "how many applies TestCrashAnyInstant kills")
	soak  = flag.Bool("soak", false, "TestCrashAnyInstant: 1000 kills unless -kills says otherwise")
)

// buildBinary builds the reconciler once per test binary run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "reconciler-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "reconciler")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// TestCrashAnyInstant is invariant 1 under SIGKILL: the real binary applies
// changing targets (new commits, a changed build step, rollbacks, pruning
// with keep 2, a cached build step whose entries are filled, linked and
// pruned, a preflight server on half the targets, migrations tracked) and is killed — half the time at a random instant, half the
// time exactly at a step boundary (when the history file grows by its Nth
// line) — while a reader resolves the link as fast as it can. Every
// observation must find the link pointing at a release recorded complete
// whose cached output is there; after each kill the next apply must
// converge, with the linked release's migrations recorded; at the end,
// every entry a release links is sealed, and no
// process a killed apply started still runs.
func TestCrashAnyInstant(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	repo := testgit.New(t)
	var shas []string
	for i := 0; i < 3; i++ {
		repo.Write("VERSION", fmt.Sprintf("v%d\n", i))
		repo.Write("DEPS", fmt.Sprintf("deps %d\n", i%2)) // v0 and v2 share a cache entry
		repo.Write(fmt.Sprintf("pkg/f%d.txt", i), "content\n")
		shas = append(shas, repo.Commit(fmt.Sprintf("v%d", i)))
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "host")
	file := filepath.Join(dir, "desired.yaml")
	write := func(i int) {
		sha := shas[i%3]
		extra, preflight := "", ""
		if i%4 == 3 { // every fourth target changes the build: a new release of the same commit
			extra = "  - {name: extra, run: \"touch extra\"}\n"
		}
		// Half the targets start their release before the switch, half
		// of those killed at a step boundary and half at random: without
		// a preflight, the migrations listing still runs after the switch.
		if i%4 == 1 || i%4 == 2 {
			preflight = `preflight:
  run: exec /usr/bin/python3 -m http.server --bind 127.0.0.1 ${RECONCILER_PREFLIGHT_PORT}
  health:
    - http: http://127.0.0.1:${RECONCILER_PREFLIGHT_PORT}/out/deps
`
		}
		y := fmt.Sprintf(`app: crash
root: host
keep: 2
source: {repo: %s, commit: %s}
shared: {dirs: [media]}
build:
  - name: deps
    run: "mkdir out; sleep 0.02; cat DEPS > out/deps"
    cache: {key: [DEPS], paths: [out]}
  - {name: one, run: "sleep 0.02; cat VERSION > built"}
  - {name: two, run: "sleep 0.02; echo two > two"}
%smigrate:
  run: "sleep 0.01; test -f built && test -f out/deps; echo app.0001_initial > $RECONCILER_SHARED/db"
  kind: other
  known: "sleep 0.03; echo app.0001_initial"
  applied: "cat $RECONCILER_SHARED/db"
%sservices:
  - {name: web, manager: command, restart: "true"}
`, repo.Dir, sha, extra, preflight)
		if err := os.WriteFile(file, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	apply := func() *exec.Cmd {
		cmd := exec.Command(bin, "apply", "-f", file, "--lock-timeout", "30s")
		cmd.Dir = dir
		cmd.Env = append(testgit.Env(t.TempDir()), "PATH=/usr/bin:/bin")
		return cmd
	}

	// The first deploy, unkilled, so that a link exists to observe.
	write(0)
	if out, err := apply().CombinedOutput(); err != nil {
		t.Fatalf("first apply: %v\n%s", err, out)
	}

	var observations, broken atomic.Int64
	var firstBroken atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		link := filepath.Join(root, "current")
		for {
			select {
			case <-stop:
				return
			default:
			}
			observations.Add(1)
			if msg := checkLink(link); msg != "" {
				if broken.Add(1) == 1 {
					firstBroken.Store(msg)
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()

	n := *kills
	if *soak && !flagSet("kills") {
		n = 1000
	}
	hist := filepath.Join(root, ".reconciler", "history.jsonl")
	lines := func() int {
		b, _ := os.ReadFile(hist)
		return bytes.Count(b, []byte("\n"))
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	killed, atBoundary, failedConverge, inFill, inPreflight, inListing := 0, 0, 0, 0, 0, 0
	for i := 1; i <= n; i++ {
		write(i)
		base := lines()
		cmd := apply()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			time.Sleep(time.Duration(rng.Intn(160)) * time.Millisecond)
		} else {
			// Right after the Nth step of this apply was recorded.
			want := base + 1 + rng.Intn(11)
			deadline := time.Now().Add(2 * time.Second)
			for lines() < want && time.Now().Before(deadline) {
				time.Sleep(200 * time.Microsecond)
			}
			atBoundary++
		}
		if cmd.Process.Signal(syscall.SIGKILL) == nil {
			killed++
		}
		cmd.Wait()
		fill, pre := killedInside(root)
		if fill {
			inFill++
		}
		if pre {
			inPreflight++
		}
		if !migrationsRecorded(root) {
			inListing++
		}
		// The next apply converges: it succeeds, and a plan then has
		// nothing to do.
		if out, err := apply().CombinedOutput(); err != nil {
			failedConverge++
			t.Errorf("apply after kill %d: %v\n%s", i, err, out)
			continue
		}
		plan := exec.Command(bin, "plan", "-f", file, "--detailed-exitcode")
		plan.Dir = dir
		if out, err := plan.CombinedOutput(); err != nil {
			failedConverge++
			t.Errorf("not converged after kill %d: %v\n%s", i, err, out)
		} else if !migrationsRecorded(root) {
			failedConverge++
			b, _ := os.ReadFile(filepath.Join(root, ".reconciler", "migrations.json"))
			t.Errorf("after kill %d the migrations record lacks the linked release or the applied set:\n%s", i, b)
		}
	}
	close(stop)
	wg.Wait()
	checkCache(t, root)
	// Nothing a killed apply started outlives it: no build step and no
	// preflight server runs from a release.
	if pids := procs.InUse(filepath.Join(root, "releases")); len(pids) > 0 {
		t.Errorf("processes outlived their killed applies: %v", pids)
	}
	t.Logf("kills %d (%d at a step boundary, %d inside a cache fill, %d inside a preflight, %d before the migrations listing was recorded), link observations %d, broken %d, failed convergences %d",
		killed, atBoundary, inFill, inPreflight, inListing, observations.Load(), broken.Load(), failedConverge)
	if *soak && (inFill == 0 || inPreflight == 0 || inListing == 0) {
		t.Errorf("the soak never killed inside a cache fill (%d), a preflight (%d) or before a listing was recorded (%d)", inFill, inPreflight, inListing)
	}
	if broken.Load() > 0 {
		t.Errorf("%d broken link observations; first: %v", broken.Load(), firstBroken.Load())
	}
	if observations.Load() < int64(n)*10 {
		t.Errorf("only %d observations: the reader did not run", observations.Load())
	}
}

// migrationsRecorded reports whether the migrations record knows the
// linked release's migrations and the applied set: what a kill between
// the switch and the end of the listing (in the background) leaves
// undone, and the next apply must do.
func migrationsRecorded(root string) bool {
	target, err := os.Readlink(filepath.Join(root, "current"))
	if err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join(root, ".reconciler", "migrations.json"))
	if err != nil {
		return false
	}
	var m struct {
		Applied  []string            `json:"applied"`
		Releases map[string][]string `json:"releases"`
	}
	if json.Unmarshal(b, &m) != nil {
		return false
	}
	known := m.Releases[filepath.Base(target)]
	return len(known) == 1 && known[0] == "app.0001_initial" && len(m.Applied) == 1 && m.Applied[0] == "app.0001_initial"
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// killedInside reports whether the kill left a cache fill unsealed, or a
// release whose preflight had started and not passed.
func killedInside(root string) (fill, preflight bool) {
	for _, e := range cacheEntries(root) {
		if _, err := os.Stat(e + ".json"); err != nil {
			fill = true
		}
	}
	logs, _ := filepath.Glob(filepath.Join(root, "releases", "*", ".reconciler", "logs", "preflight.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(l)), "release.json"))
		if !bytes.Contains(b, []byte(`"name": "preflight"`)) {
			preflight = true
		}
	}
	return fill, preflight
}

// cacheEntries lists the entry directories of the deps step: their names
// are keys, 32 hex digits. (Go's Glob matches dotfiles too: a seal's
// temporary file, left by a kill, ends in digits.)
func cacheEntries(root string) []string {
	var out []string
	des, _ := os.ReadDir(filepath.Join(root, "cache", "deps"))
	for _, d := range des {
		if d.IsDir() && len(d.Name()) == 32 && strings.Trim(d.Name(), "0123456789abcdef") == "" {
			out = append(out, filepath.Join(root, "cache", "deps", d.Name()))
		}
	}
	return out
}

// checkCache checks invariant 13 after the kills: every cache entry a
// release records is sealed and read-only, and what is left unsealed is
// what the last kill interrupted, if anything.
func checkCache(t *testing.T, root string) {
	t.Helper()
	rels, _ := filepath.Glob(filepath.Join(root, "releases", "*", ".reconciler", "release.json"))
	for _, f := range rels {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			State string
			Steps []struct{ Cache string }
		}
		json.Unmarshal(b, &rec)
		for _, s := range rec.Steps {
			if s.Cache == "" {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, "cache", s.Cache+".json")); err != nil {
				t.Errorf("%s links cache/%s, which is not sealed: %v", f, s.Cache, err)
			}
			fi, err := os.Stat(filepath.Join(root, "cache", s.Cache, "out", "deps"))
			if err != nil || fi.Mode().Perm()&0o222 != 0 {
				t.Errorf("cache/%s/out/deps: %v, %v; want a read-only file", s.Cache, fi, err)
			}
		}
	}
	seals, _ := filepath.Glob(filepath.Join(root, "cache", "deps", "[0-9a-f]*.json"))
	entries := cacheEntries(root)
	// A kill inside a seal's atomic write leaves its temporary file; the
	// next apply removes it.
	if tmp, _ := filepath.Glob(filepath.Join(root, "cache", "deps", ".*")); len(tmp) > 0 {
		t.Errorf("after converging, temporary files are left in the cache: %v", tmp)
	}
	if len(seals) != len(entries) || len(entries) > 2 {
		// What is there, and what the records link, for whoever reads the failure.
		out, _ := exec.Command("sh", "-c", "ls -la "+filepath.Join(root, "cache", "deps")+"; grep -h -e '\"cache\"' -e '\"state\"' "+filepath.Join(root, "releases", "*", ".reconciler", "release.json")).CombinedOutput()
		t.Errorf("after converging: %d entries, %d seals; want as many, at most 2 (DEPS has two contents)\n%s", len(entries), len(seals), out)
	}
}

// checkLink returns what is wrong with the link, or "".
func checkLink(link string) string {
	target, err := os.Readlink(link)
	if err != nil {
		return fmt.Sprintf("readlink: %v", err)
	}
	rel := filepath.Join(filepath.Dir(link), target)
	b, err := os.ReadFile(filepath.Join(rel, ".reconciler", "release.json"))
	if err != nil {
		return fmt.Sprintf("link -> %s: record: %v", target, err)
	}
	var rec struct {
		State string
		Steps []struct{ Cache string }
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return fmt.Sprintf("link -> %s: record: %v", target, err)
	}
	if rec.State != "complete" {
		return fmt.Sprintf("link -> %s, a release that is %s", target, rec.State)
	}
	// Its cached output is there, through the release's link into the
	// cache: an entry is never pruned or refilled under a linked release.
	for _, s := range rec.Steps {
		if s.Cache == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(rel, "out", "deps")); err != nil {
			return fmt.Sprintf("link -> %s: cached output: %v", target, err)
		}
	}
	return ""
}
