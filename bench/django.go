package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/reconciler-dev/reconciler/e2e/stack"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/services"
)

// deployScript is the baseline: the article's bash deploy.
//
//go:embed django_deploy.sh
var deployScript []byte

// benchT is the stack's T for the bench: a failure panics with fatal, which
// django recovers after stopping the stack.
type benchT struct {
	cleanups []func()
	errors   int
}

type fatal string

func (t *benchT) Helper()                           {}
func (t *benchT) Fatalf(format string, args ...any) { panic(fatal(fmt.Sprintf(format, args...))) }
func (t *benchT) Errorf(format string, args ...any) {
	t.errors++
	fmt.Fprintf(os.Stderr, "django: "+format+"\n", args...)
}
func (t *benchT) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "django: "+format+"\n", args...)
}
func (t *benchT) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }

func (t *benchT) close() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

// djangoBench holds the stack and what the figures are measured with.
type djangoBench struct {
	*stack.Stack
	runs   int
	script string
	// cached is the desired build with `cache:` on the deps step; plain
	// the same without it. cacheErr says why the binary refused cached.
	cached, plain string
	cacheErr      string
	// last and build are the release the host runs after the upgrades
	// (the previous one, same letter, is on disk) and its build.
	last, build, bashLast string
	rows                  [][4]string
	notes                 strings.Builder
}

// django measures issue 10's figures on the e2e Django stack (e2e/stack),
// each beside the article's bash script on the same stack in the same run,
// median of 5: an upgrade with unchanged requirements (cached deps, and
// without the cache) and with changed ones, a rollback, a broken /health
// with and without preflight under load, and 10 switches under load.
func (b *bench) django() {
	if err := stack.RequireTools(); err != nil {
		fmt.Printf("django: SKIPPED, the stack's tools are missing: %s\n\n", strings.Join(strings.Fields(err.Error()), " "))
		return
	}
	t := &benchT{}
	defer func() {
		t.close()
		if r := recover(); r != nil {
			if f, ok := r.(fatal); ok {
				check(fmt.Errorf("django: %s", f))
			}
			panic(r)
		}
	}()
	dir := filepath.Join(b.dir, "django")
	check(os.MkdirAll(dir, 0o755))
	d := &djangoBench{Stack: stack.New(t, stack.Options{Dir: dir, ModRoot: ".", Bin: b.bin, Bash: true}), runs: 5}
	if b.runs < 20 { // -quick
		d.runs = 3
	}
	d.script = filepath.Join(dir, "deploy.sh")
	check(os.WriteFile(d.script, deployScript, 0o755))
	start, load := time.Now(), loadavg()
	d.prepare()
	d.measure()
	fmt.Printf("  (section took %s; load average %s at its start, %s at its end, on %d cores)\n\n", time.Since(start).Round(time.Second), load, loadavg(), runtime.NumCPU())
	if t.errors > 0 {
		d.T.Fatalf("%d errors above", t.errors)
	}
}

const (
	// The deps step: one venv per key of requirements.txt.
	depsStep = `  - name: deps
    run: /usr/bin/python3 -m venv --system-site-packages venv && venv/bin/pip install -q --no-index -r requirements.txt
    timeout: 5m
`
	depsCache = `    cache:
      key: [requirements.txt]
      paths: [venv]
`
)

// render is desired.yaml at tag: the example with the deps step
// (cached or not), with or without its preflight.
func (d *djangoBench) render(tag, build string, preflight bool) string {
	y := d.Render(tag, stack.Web, "reload")
	i, j := strings.Index(y, "\nbuild:\n"), strings.Index(y, "\n  - name: revision\n")
	if i < 0 || j < i {
		d.T.Fatalf("the example's build section changed:\n%s", y)
	}
	y = y[:i] + "\nbuild:\n" + build + y[j+1:]
	if !preflight {
		y = d.WithoutPreflight(y)
	}
	return y
}

func (d *djangoBench) prepare() {
	d.cached, d.plain = depsStep+depsCache, depsStep
	// Does this binary know cached steps? A desired file it cannot parse
	// says so; the figures are then measured without the cache.
	d.WriteDesired(d.render("v1", d.cached, true))
	if r := d.Reconciler("validate"); r.Code != 0 {
		d.cacheErr = firstLine(r.Stderr + r.Stdout)
	}

	// main: v1, n1..n5 (unchanged requirements), c0..c5 (the same, c0
	// fills the cache), m1..m5 (each changes requirements.txt); off main:
	// p1..p5 and r1..r5 answer 500 on /health.
	for i := 1; i <= d.runs; i++ {
		d.Upgrade(fmt.Sprintf("n%d", i), "")
	}
	if d.cacheErr == "" {
		for i := 0; i <= d.runs; i++ {
			d.Upgrade(fmt.Sprintf("c%d", i), "")
		}
		for i := 1; i <= d.runs; i++ {
			// sqlparse comes with python3-django: a real requirement pip
			// finds installed, and a new key.
			d.Upgrade(fmt.Sprintf("m%d", i), fmt.Sprintf("Django>=3.2,<4\ngunicorn\nsqlparse  # change %d\n", i))
		}
	}
	head := d.Run(d.Repo, "git", "describe", "--tags", "--exact-match", "main")
	for i := 1; i <= d.runs; i++ {
		d.Broken(fmt.Sprintf("p%d", i), head)
		d.Broken(fmt.Sprintf("r%d", i), head)
	}

	// v1 everywhere; the reload starts the programs.
	d.apply("v1", d.plain, true)
	d.waitServing(d.Web, d.Root, "v1")
	d.bash("deploy", d.BashRoot, d.Repo, "v1", stack.Bash, d.SupConf)
	d.waitServing(d.BashWeb, d.BashRoot, "v1")
}

// applied is what `apply --json` said.
type applied struct {
	ApplyID string `json:"apply_id"`
	Result  string
	Linked  string
	Steps   []struct {
		Action   string
		Name     string
		Detail   string
		Result   string
		Duration float64 `json:"duration_s"`
	}
	code   int
	stderr string
}

// apply writes desired.yaml at tag and applies it.
func (d *djangoBench) apply(tag, build string, preflight bool) applied {
	d.T.Helper()
	d.WriteDesired(d.render(tag, build, preflight))
	r := d.Reconciler("apply", "--json")
	var a applied
	if err := json.Unmarshal([]byte(r.Stdout), &a); err != nil {
		d.T.Fatalf("apply --json at %s: %v\n%s\n%s", tag, err, r.Stdout, r.Stderr)
	}
	a.code, a.stderr = r.Code, r.Stderr
	return a
}

func (d *djangoBench) mustApply(tag, build string, preflight bool) applied {
	d.T.Helper()
	a := d.apply(tag, build, preflight)
	if a.code != 0 {
		d.T.Fatalf("apply %s: exit %d\n%s", tag, a.code, a.stderr)
	}
	return a
}

// bash runs the deploy script and returns its phases.
func (d *djangoBench) bash(args ...string) map[string]time.Duration {
	d.T.Helper()
	cmd := exec.Command("bash", append([]string{d.script}, args...)...)
	cmd.Env = []string{stack.BasePath, "HOME=" + d.Dir}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		d.T.Fatalf("deploy.sh %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	phases := map[string]time.Duration{}
	for _, line := range strings.Split(errb.String(), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "phase" {
			a, _ := strconv.ParseFloat(f[2], 64)
			z, _ := strconv.ParseFloat(f[3], 64)
			phases[f[1]] += time.Duration((z - a) * float64(time.Second))
		}
	}
	return phases
}

// waitServing polls / on addr until release tag answers it from a
// process that started in it: the page names the tag and the
// X-Release-Dir header (the app's settings.BASE_DIR, resolved when the
// process started) is where root's current link points. An old worker
// that imports the new views lazily after the link moved answers the new
// page from the old release's settings: that mixed answer does not count,
// and mixed says when the first one came, or is zero.
func (d *djangoBench) waitServing(addr, root, tag string) (mixed time.Time) {
	d.T.Helper()
	want, err := filepath.EvalSymlinks(filepath.Join(root, "current"))
	if err != nil {
		d.T.Fatalf("waiting for %s: %v", tag, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := d.Client.Get("http://" + addr + "/")
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.HasPrefix(b.String(), stack.Page(tag)) {
				if resp.Header.Get("X-Release-Dir") == want {
					return mixed
				}
				if mixed.IsZero() {
					mixed = time.Now()
				}
			}
		}
		if time.Now().After(deadline) {
			d.T.Fatalf("%s does not serve %s from %s after 30 s", addr, tag, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// steps adds the step durations of a to sum, by "action name".
func steps(sum map[string][]time.Duration, a applied) {
	for _, s := range a.Steps {
		k := s.Action
		if s.Name != "" && s.Name != s.Action {
			k += " " + s.Name
		}
		sum[k] = append(sum[k], time.Duration(s.Duration*float64(time.Second)))
	}
}

func (d *djangoBench) measure() {
	// One supervisorctl call, what the reload and the process check's
	// pid cost before they spoke XML-RPC (and still cost where the
	// supervisord's socket is not known), against a bare python3 start
	// and the XML-RPC call that replaced it.
	ctl := timeCmd(d.runs, "supervisorctl", "-c", d.SupConf, "pid", stack.Web)
	py := timeCmd(d.runs, "/usr/bin/python3", "-c", "pass")
	rpc := "n/a"
	if sup, why := services.SupervisorRPC(desired.SupervisorConn{Config: d.SupConf}); sup != nil {
		var ds []time.Duration
		for i := 0; i < d.runs; i++ {
			start := time.Now()
			if _, err := sup.ProcessInfo(context.Background(), stack.Web); err != nil {
				d.T.Fatalf("xml-rpc getProcessInfo: %v", err)
			}
			ds = append(ds, time.Since(start))
		}
		rpc = fmt.Sprintf("%.1f ms", float64(median(ds))/float64(time.Millisecond))
	} else {
		d.T.Errorf("supervisord's socket not found in %s: %s", d.SupConf, why)
	}
	fmt.Fprintf(&d.notes, "  one supervisorctl call %s (python3 -c pass %s); the reconciler calls supervisord over XML-RPC instead: %s a call, 1 for the reload, 1 for the process check's pid\n", secs(ctl), secs(py), rpc)
	ours, theirs := d.upgrades()
	d.rollback(ours, theirs)
	d.broken()
	d.underLoad()
	d.print()
}

// upgrade is the time from the start of a deploy to nginx serving it, with
// where the time went; for the reconciler, verified is the time to the end
// of its health step (the release verified serving: what the issue's
// target measures), before the prune that ends the apply.
type upgrade struct {
	times, verified []time.Duration
	steps           map[string][]time.Duration
}

// verifiedAt is when the apply's health step passed, from its start:
// the time of its record in the history (written as it ended). After it
// the apply prunes, and waits for the preflight's server to stop and for
// the migrations to be recorded, which no user waits for. Without the
// record, the apply's time less the steps after the health step.
func (d *djangoBench) verifiedAt(start time.Time, took time.Duration, a applied) time.Duration {
	for _, r := range d.History() {
		if r.ApplyID == a.ApplyID && r.Kind == "step" && strings.HasPrefix(r.Step, "health") && r.Result == "ok" {
			return r.Time.Sub(start)
		}
	}
	after := time.Duration(0)
	for i := len(a.Steps) - 1; i >= 0 && a.Steps[i].Action != "health"; i-- {
		after += time.Duration(a.Steps[i].Duration * float64(time.Second))
	}
	return took - after
}

func (d *djangoBench) upgrades() (last, bashLast string) {
	type variant struct {
		name, prefix, build string
	}
	var bash upgrade
	bash.steps = map[string][]time.Duration{}
	results := map[string]*upgrade{}
	run := func(v variant, withBash bool) {
		u := &upgrade{steps: map[string][]time.Duration{}}
		results[v.name] = u
		for i := 1; i <= d.runs; i++ {
			tag := fmt.Sprintf("%s%d", v.prefix, i)
			start := time.Now()
			a := d.mustApply(tag, v.build, true)
			took := time.Since(start)
			u.verified = append(u.verified, d.verifiedAt(start, took, a))
			d.waitServing(d.Web, d.Root, tag)
			u.times = append(u.times, time.Since(start))
			steps(u.steps, a)
			last = tag
			if withBash {
				start := time.Now()
				ph := d.bash("deploy", d.BashRoot, d.Repo, tag, stack.Bash, d.SupConf)
				d.waitServing(d.BashWeb, d.BashRoot, tag)
				bash.times = append(bash.times, time.Since(start))
				for k, v := range ph {
					bash.steps[k] = append(bash.steps[k], v)
				}
				bashLast = tag
			}
		}
	}
	run(variant{"no cache", "n", d.plain}, true)
	if d.cacheErr == "" {
		d.mustApply("c0", d.cached, true) // fills the cache
		d.waitServing(d.Web, d.Root, "c0")
		run(variant{"cached", "c", d.cached}, false)
		run(variant{"cache miss", "m", d.cached}, false)
	}
	base := secs(median(bash.times))
	if u := results["cached"]; u != nil {
		m := median(u.verified)
		d.row("upgrade v1->v2, same requirements, cached deps: to verified serving", secs(m), base, "<= 2 s: "+verdict(m <= 2*time.Second))
		d.row("  the same, to the end of the apply (prune included)", secs(median(u.times)), base, "")
		d.row("upgrade, requirements changed (cache miss)", secs(median(results["cache miss"].times)), base, "costs the step")
	} else {
		d.row("upgrade v1->v2, same requirements, cached deps", "n/a", base, "<= 2 s: not measured, see below")
		fmt.Fprintf(&d.notes, "  cached build steps are not in this build: %s\n", d.cacheErr)
	}
	m := median(results["no cache"].verified)
	d.row("upgrade v1->v2, same requirements, no deps cache: to verified serving", secs(m), base, "<= 2 s: "+verdict(m <= 2*time.Second))
	d.breakdown("bash", bash.steps)
	for _, name := range []string{"cached", "cache miss", "no cache"} {
		if u := results[name]; u != nil {
			d.breakdown("reconciler, "+name, u.steps)
		}
	}
	if d.cacheErr == "" {
		return "m" + strconv.Itoa(d.runs), bashLast
	}
	return last, bashLast
}

func (d *djangoBench) row(what, ours, bash, target string) {
	d.rows = append(d.rows, [4]string{what, ours, bash, target})
}

// breakdown prints the median time of each step.
func (d *djangoBench) breakdown(who string, s map[string][]time.Duration) {
	type kv struct {
		k string
		v time.Duration
	}
	var all []kv
	var sum time.Duration
	for k, v := range s {
		all = append(all, kv{k, median(v)})
		sum += median(v)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var parts []string
	for _, e := range all {
		if e.v >= 20*time.Millisecond {
			parts = append(parts, fmt.Sprintf("%s %s", e.k, secs(e.v)))
		}
	}
	fmt.Fprintf(&d.notes, "  where the time goes, %s (median per step, sum %s): %s\n", who, secs(sum), strings.Join(parts, ", "))
}

// rollback switches between the last two releases, back and forth,
// health-verified, against the script's link + HUP; each until nginx
// serves the release.
func (d *djangoBench) rollback(last, bashLast string) {
	build := d.plain
	if d.cacheErr == "" {
		build = d.cached
	}
	prev := fmt.Sprintf("%c%d", last[0], d.runs-1)
	bashPrev := fmt.Sprintf("%c%d", bashLast[0], d.runs-1)
	// script is the bash script's own time; mixed, when the page showed
	// the target's views from an old worker before the new ones answered.
	var ours, theirs, script, mixed []time.Duration
	sum := map[string][]time.Duration{}
	for i := 0; i < d.runs; i++ {
		to, bashTo, how := prev, bashPrev, "rollback"
		if i%2 == 1 {
			to, bashTo, how = last, bashLast, "forward"
		}
		start := time.Now()
		a := d.mustApply(to, build, true)
		d.waitServing(d.Web, d.Root, to)
		ours = append(ours, time.Since(start))
		steps(sum, a)
		for _, s := range a.Steps {
			if s.Action == "build" || s.Action == "migrate" || s.Action == "fetch" {
				d.T.Errorf("switch to %s on disk ran %s %s", to, s.Action, s.Name)
			}
		}
		start = time.Now()
		d.bash(how, d.BashRoot, stack.Bash, d.SupConf)
		script = append(script, time.Since(start))
		if m := d.waitServing(d.BashWeb, d.BashRoot, bashTo); !m.IsZero() {
			mixed = append(mixed, m.Sub(start))
		}
		theirs = append(theirs, time.Since(start))
	}
	if d.runs%2 == 1 { // back where the upgrades left the hosts
		d.mustApply(last, build, true)
		d.bash("forward", d.BashRoot, stack.Bash, d.SupConf)
		d.waitServing(d.BashWeb, d.BashRoot, bashLast)
	}
	o, t := median(ours), median(theirs)
	d.row("rollback (reload, health-verified)", secs(o), secs(t)+" (link + HUP)", "no slower: "+verdict(o <= t))
	fmt.Fprintf(&d.notes, "  rollback, bash: to its new workers serving %s, of which the script %s (it checks nothing)", secs(t), secs(median(script)))
	if len(mixed) > 0 {
		fmt.Fprintf(&d.notes, "; in %d of %d runs an old worker answered the target's page first (median %s): it imported the new views lazily through the moved link, with the old release's settings (X-Release-Dir), not counted", len(mixed), d.runs, secs(median(mixed)))
	}
	d.notes.WriteString("\n")
	d.breakdown("reconciler, rollback", sum)
	d.last, d.build, d.bashLast = last, build, bashLast
}

// linkWatch records every change of the current link while it runs.
type linkWatch struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	changes []linkChange
}

type linkChange struct {
	at     time.Time
	target string
}

func (d *djangoBench) watchLink() *linkWatch {
	w := &linkWatch{stop: make(chan struct{}), done: make(chan struct{})}
	cur := stack.Link(d.Root)
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(time.Millisecond):
			}
			if l := stack.Link(d.Root); l != cur {
				cur = l
				w.mu.Lock()
				w.changes = append(w.changes, linkChange{time.Now(), l})
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *linkWatch) Stop() []linkChange {
	close(w.stop)
	<-w.done
	return w.changes
}

// broken deploys releases whose /health answers 500 under load, with the
// preflight (refused before the switch) and without (reverted after it).
func (d *djangoBench) broken() {
	type outcome struct {
		times          []time.Duration // apply, or switch to revert
		moved, served  int             // link changes; responses from the broken release at nginx
		failed, total  int64
		revertWatchMax time.Duration
		applies        []time.Duration // with preflight: the whole apply
	}
	do := func(prefix string, preflight bool) outcome {
		var o outcome
		for i := 1; i <= d.runs; i++ {
			tag := fmt.Sprintf("%s%d", prefix, i)
			load := d.StartLoad(d.Web, 4)
			w := d.watchLink()
			start := time.Now()
			a := d.apply(tag, d.build, preflight)
			took := time.Since(start)
			changes := w.Stop()
			res := load.Stop()
			if a.code == 0 {
				d.T.Errorf("apply of broken %s succeeded", tag)
			}
			if l := stack.Link(d.Root); !strings.HasSuffix(l, a.Linked) || a.Linked == "" {
				d.T.Errorf("after %s the link is %s, apply says %q", tag, l, a.Linked)
			}
			o.moved += len(changes)
			o.served += d.ResponsesFrom(tag)
			o.failed += res.Failed
			o.total += res.Total
			if preflight {
				// Refused in: from the start of the preflight to the
				// refusal; the build before it is the upgrade's figure.
				var pft time.Duration
				for _, s := range a.Steps {
					if s.Action == "preflight" {
						pft = time.Duration(s.Duration * float64(time.Second))
					}
				}
				if pft == 0 {
					d.T.Errorf("apply of %s ran no preflight", tag)
				}
				o.times = append(o.times, pft)
				o.applies = append(o.applies, took)
				continue
			}
			sw, rv := d.switchToRevert(a.ApplyID)
			o.times = append(o.times, rv.Sub(sw))
			if len(changes) == 2 {
				o.revertWatchMax = max(o.revertWatchMax, changes[1].at.Sub(changes[0].at))
			} else {
				d.T.Errorf("%s: the link changed %d times, want 2 (switch, revert)", tag, len(changes))
			}
		}
		return o
	}
	pf := do("p", true)
	ok := median(pf.times) <= 3*time.Second
	d.row("broken /health, preflight: refused in", secs(median(pf.times)), "never", "<= 3 s: "+verdict(ok))
	d.row("  link moved", strconv.Itoa(pf.moved), "", "0: "+verdict(pf.moved == 0))
	d.row("  responses from it at nginx (4 clients)", fmt.Sprintf("%d of %d", pf.served, pf.total), "all", "0: "+verdict(pf.served == 0))
	fmt.Fprintf(&d.notes, "  broken release with preflight: the whole apply (build included) %s\n", secs(median(pf.applies)))
	np := do("r", false)
	d.row("broken /health, no preflight: switch to revert", secs(median(np.times)), "never", "<= 3 s: "+verdict(median(np.times) <= 3*time.Second))
	d.row("  responses from it at nginx (4 clients)", fmt.Sprintf("%d of %d", np.served, np.total), "all", "")
	fmt.Fprintf(&d.notes, "  no preflight, switch to revert seen by a watch on the link: at most %s\n", secs(np.revertWatchMax))
	if pf.failed+np.failed > 0 {
		fmt.Fprintf(&d.notes, "  non-2xx under load while refusing broken releases: %d with preflight, %d without\n", pf.failed, np.failed)
	}
}

// switchToRevert returns when the apply's switch and its revert's switch
// were done, from the history.
func (d *djangoBench) switchToRevert(id string) (sw, rv time.Time) {
	for _, r := range d.History() {
		if !strings.HasPrefix(r.Step, "switch ") || !strings.HasPrefix(r.ApplyID, id) {
			continue
		}
		if sw.IsZero() {
			sw = r.Time
		} else {
			rv = r.Time
		}
	}
	if sw.IsZero() || rv.IsZero() {
		d.T.Fatalf("history of apply %s has no switch and revert", id)
	}
	return sw, rv
}

// underLoad: 10 switches between two releases on disk, 8 clients; the
// script's link + HUP the same way on its own root.
func (d *djangoBench) underLoad() {
	prev := fmt.Sprintf("%c%d", d.last[0], d.runs-1)
	ours := d.SwitchUnderLoad(d.Web, []string{prev, d.last}, 10, 8, func(tag string) error {
		a := d.apply(tag, d.build, true)
		if a.code != 0 {
			return fmt.Errorf("exit %d\n%s", a.code, a.stderr)
		}
		return nil
	})
	// The script returns once it sent the HUP: what follows is what users
	// see while the old workers still answer.
	i := 0
	theirs := d.SwitchUnderLoad(d.BashWeb, []string{fmt.Sprintf("%c%d", d.bashLast[0], d.runs-1), d.bashLast}, 10, 8, func(tag string) error {
		i++
		d.bash([]string{"rollback", "forward"}[(i-1)%2], d.BashRoot, stack.Bash, d.SupConf)
		return nil
	})
	d.row("10 switches under load (reload), 8 clients", fmt.Sprintf("%d non-2xx, %d stale", ours.Failed, ours.Stale),
		fmt.Sprintf("%d non-2xx, %d stale", theirs.Failed, theirs.Stale), "0 and 0: "+verdict(ours.Failed == 0 && ours.Stale == 0))
	fmt.Fprintf(&d.notes, "  under load: %d requests through the reconciler's switches, %d through the script's\n", ours.Total, theirs.Total)
	for who, r := range map[string]stack.LoadResult{"reconciler": ours, "bash": theirs} {
		if r.FirstFailure != "" {
			fmt.Fprintf(&d.notes, "  first failure under load, %s: %s\n", who, r.FirstFailure)
		}
	}
}

func (d *djangoBench) print() {
	fmt.Printf("django stack (supervisord + nginx + gunicorn --chdir, reload), median of %d; baseline the article's bash deploy on the same stack\n", d.runs)
	w := [4]int{}
	head := [4]string{"", "reconciler", "bash", "target"}
	for _, r := range append([][4]string{head}, d.rows...) {
		for i, c := range r {
			w[i] = max(w[i], len(c))
		}
	}
	for _, r := range append([][4]string{head}, d.rows...) {
		fmt.Printf("  %-*s  %*s  %-*s  %s\n", w[0], r[0], w[1], r[1], w[2], r[2], r[3])
	}
	fmt.Print(d.notes.String())
}

// loadavg is the 1-minute load average: the figures mean little on a
// machine busy with something else.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// timeCmd is the median wall time of n runs of a command, whatever its
// exit status.
func timeCmd(n int, name string, args ...string) time.Duration {
	var ds []time.Duration
	for i := 0; i < n; i++ {
		cmd := exec.Command(name, args...)
		cmd.Env = []string{stack.BasePath}
		start := time.Now()
		cmd.Run()
		ds = append(ds, time.Since(start))
	}
	return median(ds)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
