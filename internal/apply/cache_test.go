package apply

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/stepcache"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// cachedBuild fills a "venv" from requirements.txt and the bin/ tools,
// counting its runs; it waits for a person when the release has HANG.
const cachedBuild = `  - name: deps
    run: |
      echo "$RECONCILER_RELEASE" >> "$RECONCILER_SHARED/fills"
      mkdir venv && cat requirements.txt > venv/req && pwd > venv/where
      echo partial > venv/partial
      if [ -f "$RECONCILER_RELEASE/HANG" ]; then touch "$RECONCILER_SHARED/fill-started"; sleep 30; fi
      if [ -f "$RECONCILER_RELEASE/BREAK" ]; then exit 4; fi
      rm venv/partial
    cache:
      key: [requirements.txt, bin]
      paths: [venv]
`

func newCacheHost(t *testing.T) *host {
	h := newHost(t)
	h.build = cachedBuild
	h.migrate = "test -L venv"
	h.repo.Write("requirements.txt", "django==3.2\n")
	h.repo.WriteMode("bin/tool", "#!/bin/sh\n", 0o755)
	h.repo.Write("bin/ignored", "left out of the export\n")
	h.repo.Write(".gitattributes", "bin/ignored export-ignore\n")
	if err := os.Symlink("tool", filepath.Join(h.repo.Dir, "bin", "link")); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *host) cacheStep(rel string) record.Step {
	h.t.Helper()
	for _, s := range h.record(rel).Steps {
		if s.Name == "deps" {
			return s
		}
	}
	h.t.Fatalf("release %s records no step deps", rel)
	return record.Step{}
}

// plannedCache is the cache a plan's deps step expected.
func plannedCache(t *testing.T, p *plan.Plan) *plan.CacheUse {
	t.Helper()
	for _, s := range p.Steps {
		if s.Name == "deps" && s.Cache != nil {
			return s.Cache
		}
	}
	t.Fatalf("the plan has no cached deps step: %+v", p.Steps)
	return nil
}

// The first release fills an entry; the next with the same key files
// links it without running the step, as its plan said; other key files
// miss. The plan's key, read from the commit's tree (executable, symlink
// and export-ignore'd files among the key files), is the key the step
// makes from the exported release.
func TestCacheMissThenHit(t *testing.T) {
	h := newCacheHost(t)
	res, _ := h.mustApply(h.desired(h.commit("v1")))
	v1 := h.linked()
	if got := len(h.lines("fills")); got != 1 {
		t.Fatalf("%d fills; want 1", got)
	}
	s1 := h.cacheStep(v1)
	if s1.Cache == "" || s1.CacheHit {
		t.Fatalf("v1 recorded %+v; want a filled entry", s1)
	}
	// A fresh host has no cache secret, so no key can be known before the
	// first fill makes one.
	if c := plannedCache(t, res.Plan); c.Hit || c.Key != "" || !strings.Contains(c.Why, "first fill") {
		t.Errorf("v1's plan expected %+v; want an unknown key on a host without a cache secret", c)
	}
	step, key, _ := stepcache.SplitEntry(s1.Cache)
	entry := h.l.CacheEntry(step, key)
	// The step ran at the entry's stable path, and the release links it.
	if b, _ := os.ReadFile(filepath.Join(entry, "venv", "where")); strings.TrimSpace(string(b)) != entry {
		t.Errorf("the step ran in %q; want %s", b, entry)
	}
	if dst, err := filepath.EvalSymlinks(filepath.Join(h.l.ReleaseDir(v1), "venv")); err != nil || dst != filepath.Join(entry, "venv") {
		t.Errorf("release venv resolves to %q (%v); want the entry's", dst, err)
	}
	if _, err := os.Stat(filepath.Join(entry, "bin", "ignored")); err == nil {
		t.Error("an export-ignore'd file was copied into the entry as a key file")
	}

	res, _ = h.mustApply(h.desired(h.commit("v2")))
	v2 := h.linked()
	if got := len(h.lines("fills")); got != 1 {
		t.Fatalf("v2 with the same requirements ran the step: %d fills", got)
	}
	if c := plannedCache(t, res.Plan); !c.Hit || c.From != v1 {
		t.Errorf("v2's plan: %+v; want a hit from %s", c, v1)
	}
	if s := h.cacheStep(v2); s.Cache != s1.Cache || !s.CacheHit {
		t.Errorf("v2 recorded %+v; want a hit of %s", s, s1.Cache)
	}
	if b, err := os.ReadFile(filepath.Join(h.l.ReleaseDir(v2), "venv", "req")); err != nil || string(b) != "django==3.2\n" {
		t.Errorf("v2's venv/req: %q, %v", b, err)
	}

	for _, change := range []func(){
		func() { h.repo.Write("requirements.txt", "django==4.2\n") },
		func() { h.repo.WriteMode("bin/tool", "#!/bin/sh\n", 0o644) }, // the mode is part of the key
		func() {
			os.Remove(filepath.Join(h.repo.Dir, "bin", "link"))
			os.Symlink("other", filepath.Join(h.repo.Dir, "bin", "link"))
		},
	} {
		before := len(h.lines("fills"))
		change()
		res, _ := h.mustApply(h.desired(h.commit("v3")))
		if got := len(h.lines("fills")); got != before+1 {
			t.Errorf("changed key files: %d fills; want %d", got, before+1)
		}
		c := plannedCache(t, res.Plan)
		if c.Hit {
			t.Errorf("changed key files planned as a hit: %+v", c)
		}
		if made := h.cacheStep(h.linked()).Cache; c.Key == "" || stepcache.EntryName("deps", c.Key) != made {
			t.Errorf("the plan's key %q (%s) is not the key the step made from the release: %s", c.Key, c.Why, made)
		}
	}
}

// treeState is every path of a tree with its mode, owner, size, mtime and
// content hash.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %s %d %d %s", p, fi.Mode(), st.Uid, fi.Size(), fi.ModTime())
		if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %x", sha256.Sum256(c))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A sealed entry is the reconciler's and read-only, filled as the run_as
// user or not; the app user cannot change it, and a hit changes nothing.
func TestCacheSealedEntryIsImmutable(t *testing.T) {
	for _, runAs := range []string{"", "rcattacker"} {
		t.Run("run_as="+runAs, func(t *testing.T) {
			uid, gid := testgit.Attacker(t)
			h := newCacheHost(t)
			if runAs != "" {
				// The app user must reach the release, as on a real host.
				for p := h.root; p != filepath.Dir(filepath.Dir(h.dir)); p = filepath.Dir(p) {
					os.Chmod(p, 0o755)
				}
				h.build = strings.Replace(cachedBuild, `      echo "$RECONCILER_RELEASE" >> "$RECONCILER_SHARED/fills"
`, "", 1) + "    run_as: rcattacker\n"
			}
			h.mustApply(h.desired(h.commit("v1")))
			step, key, _ := stepcache.SplitEntry(h.cacheStep(h.linked()).Cache)
			entry := h.l.CacheEntry(step, key)
			err := filepath.WalkDir(entry, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				fi, _ := os.Lstat(p)
				if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Geteuid() {
					t.Errorf("%s is owned by uid %d; want the reconciler's", p, st.Uid)
				}
				if fi.Mode()&fs.ModeSymlink == 0 && fi.Mode().Perm()&0o222 != 0 {
					t.Errorf("%s is %s: writable", p, fi.Mode())
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			before := treeState(t, entry)
			// The app user, from the release it runs, cannot write in it.
			if os.Geteuid() == 0 {
				for _, script := range []string{"echo x >> venv/req", "touch venv/new", "rm -f venv/req", "mv venv venv2"} {
					cmd := exec.Command("/bin/sh", "-c", script)
					cmd.Dir = h.l.LinkPath()
					cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
					if out, err := cmd.CombinedOutput(); err == nil {
						t.Errorf("the app user ran %q in the sealed entry: %s", script, out)
					}
				}
			}
			h.mustApply(h.desired(h.commit("v2")))
			if !h.cacheStep(h.linked()).CacheHit {
				t.Fatal("v2 was not a hit")
			}
			if after := treeState(t, entry); after != before {
				t.Errorf("the entry changed:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

// A fill that is stopped leaves no sealed entry; one that fails is
// discarded. A fill a kill left behind is discarded by the next fill of
// its key, and pruned when nothing will fill it. The release is never
// linked to a half-filled entry.
func TestCacheInterruptedFillIsDiscarded(t *testing.T) {
	h := newCacheHost(t)
	h.mustApply(h.desired(h.commit("v1")))
	good := h.linked()

	// Stopped mid-fill: the release stays building, the entry unsealed.
	h.repo.Write("requirements.txt", "django==4.2\n")
	d := h.desired(h.commit("v2", "HANG"))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if _, err := os.Stat(filepath.Join(h.root, "shared", "fill-started")); err == nil {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if _, _, err := h.apply(ctx, d, func(o *Options) { o.Runner.KillGrace = 100 * time.Millisecond }); err == nil {
		t.Fatal("cancelled apply succeeded")
	}
	if h.linked() != good {
		t.Fatal("the link moved during an interrupted fill")
	}
	a, err := actual.Observe(context.Background(), d, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range a.Cache {
		if e.Seal == nil {
			t.Errorf("a stopped fill left entry %s behind", e.Name())
		}
	}

	// A kill leaves one: made here as a kill would, with a stray file.
	h.repo.Write("requirements.txt", "django==5.0\n")
	d = h.desired(h.commit("v3"))
	if err := h.git(d).Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	p, err := Plan(context.Background(), d, h.git(d), plan.Options{Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	key := plannedCache(t, p).Key
	if key == "" {
		t.Fatalf("the plan after the fetch knows no key: %+v", plannedCache(t, p))
	}
	killed := h.l.CacheEntry("deps", key)
	os.MkdirAll(filepath.Join(killed, "venv"), 0o755)
	os.WriteFile(filepath.Join(killed, "venv", "left-by-the-kill"), nil, 0o644)
	stray := h.l.CacheEntry("deps", strings.Repeat("ab", stepcache.KeyLen/2))
	os.MkdirAll(stray, 0o755)
	// A kill inside a seal's atomic write leaves its temporary file.
	tmpSeal := filepath.Join(h.l.CacheStepDir("deps"), "."+key+".json.tmp-12345")
	os.WriteFile(tmpSeal, []byte("{"), 0o600)

	res, _ := h.mustApply(d)
	if _, err := os.Stat(filepath.Join(killed, "venv", "left-by-the-kill")); err == nil {
		t.Error("the refill kept what the killed fill left")
	}
	if _, err := os.Stat(stray); err == nil {
		t.Error("an unsealed entry nothing fills was not pruned")
	}
	if _, err := os.Stat(tmpSeal); err == nil {
		t.Error("a seal's temporary file left by a kill stayed")
	}
	pruned := false
	for _, s := range res.Steps {
		if s.Action == plan.Prune && s.CacheEntry == stepcache.EntryName("deps", strings.Repeat("ab", stepcache.KeyLen/2)) {
			pruned = true
		}
	}
	if !pruned {
		t.Errorf("no prune step for the stray entry in %+v", res.Steps)
	}
	if b, err := os.ReadFile(filepath.Join(h.l.LinkPath(), "venv", "req")); err != nil || string(b) != "django==5.0\n" {
		t.Errorf("linked venv/req: %q, %v", b, err)
	}
}

// A failed fill fails the release at its step and leaves no entry.
func TestCacheFailedFill(t *testing.T) {
	for _, tc := range []struct {
		name, run, want string
	}{
		{"step fails", "exit 4", "exited with status 4"},
		{"output missing", "true", "cache.paths venv: the step did not make it"},
		{"output is a symlink", "ln -s /tmp venv", "cache.paths venv: the step made a symlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newCacheHost(t)
			h.build = "  - name: deps\n    run: '" + tc.run + "'\n    cache: {key: [requirements.txt], paths: [venv]}\n"
			_, _, err := h.apply(context.Background(), h.desired(h.commit("v1")))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("apply: %v; want %q", err, tc.want)
			}
			entries, _ := os.ReadDir(h.l.CacheStepDir("deps"))
			if len(entries) != 0 {
				t.Errorf("a failed fill left %v", entries)
			}
			rel := h.releases()[0]
			if r := h.record(rel); r.State != record.Failed || r.Failure.Step != "deps" {
				t.Errorf("release is %s (%+v); want failed at deps", r.State, r.Failure)
			}
		})
	}
}

// A key that names no file of the release is refused, and said so.
func TestCacheKeyMatchesNothing(t *testing.T) {
	h := newCacheHost(t)
	h.build = "  - name: deps\n    run: mkdir venv\n    cache: {key: [Gemfile.lock], paths: [venv]}\n"
	_, _, err := h.apply(context.Background(), h.desired(h.commit("v1")))
	if err == nil || !strings.Contains(err.Error(), "no file of the release matches the cache key Gemfile.lock") {
		t.Fatalf("apply: %v", err)
	}
}

// Pruning removes an entry once no kept release links it, never while one
// does, whatever the plan said (invariant 13).
func TestCachePruneKeepsLinkedEntries(t *testing.T) {
	h := newCacheHost(t)
	h.keep = 1
	h.mustApply(h.desired(h.commit("v1")))
	first := h.cacheStep(h.linked()).Cache
	h.repo.Write("requirements.txt", "django==4.2\n")
	h.mustApply(h.desired(h.commit("v2")))
	// keep: 1 kept v1 as the rollback target: its entry stays.
	step, key, _ := stepcache.SplitEntry(first)
	if _, err := os.Stat(h.l.CacheSeal(step, key)); err != nil {
		t.Fatalf("the rollback target's entry went: %v", err)
	}
	h.repo.Write("requirements.txt", "django==5.0\n")
	h.mustApply(h.desired(h.commit("v3")))
	if _, err := os.Stat(h.l.CacheEntry(step, key)); err == nil {
		t.Error("the entry of the pruned release stayed")
	}

	// The executor asks the records again: a plan's prune of an entry a
	// release links is skipped.
	linked := h.cacheStep(h.linked()).Cache
	v := &events{}
	e := &executor{Options: Options{Desired: h.desired("main"), View: v}, l: h.l}
	if err := e.pruneCache(plan.Step{Action: plan.Prune, CacheEntry: linked}); err != nil {
		t.Fatal(err)
	}
	step, key, _ = stepcache.SplitEntry(linked)
	if _, err := os.Stat(h.l.CacheEntry(step, key)); err != nil {
		t.Fatalf("a linked entry was pruned: %v", err)
	}
	if len(v.notes) != 1 || !strings.Contains(v.notes[0], "skipped: release "+h.linked()+" links it") {
		t.Errorf("notes %q", v.notes)
	}
}
