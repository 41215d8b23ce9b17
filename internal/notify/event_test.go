package notify

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// A host deployed by real applies: each step of the table is an apply,
// its event built from what the apply returned and posted to a receiver,
// which checks the body it got.
func TestEventsOfRealApplies(t *testing.T) {
	app := testgit.New(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "desired.yaml")
	r := newReceiver(t, nil)
	commit := func(msg string, files ...string) string {
		for _, f := range []string{"FAILBUILD", "BROKEN"} {
			os.Remove(filepath.Join(app.Dir, f))
		}
		for _, f := range files {
			app.Write(f, "")
		}
		return app.Commit(msg)
	}
	load := func(sha string) *desired.State {
		os.WriteFile(file, []byte(`app: shop
root: host
source: {repo: `+app.Dir+`, commit: "`+sha+`"}
build:
  - name: compile
    run: "test ! -f FAILBUILD || { echo 'compile error: <missing> & more' >&2; exit 7; }"
health:
  - command: "test ! -f BROKEN || { echo 'status 500 from /health' >&2; exit 1; }"
    timeout: 5s
    interval: 10ms
notify:
  - url: `+r.hook()+`
    on: [success, failure, blocked, revert]
`), 0o644)
		d, err := desired.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	v1, v2 := commit("v1"), commit("v2")
	v3 := commit("v3", "FAILBUILD")
	v4 := commit("v4", "BROKEN")
	log, obs := newLogs()
	s := fast(log, 1)
	defer closeAll(t, s)

	releaseOf := map[string]string{} // commit → the release of it
	keys := map[string]string{}      // step name → the event's key
	rel := regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$`)
	steps := []struct {
		name, commit string
		event        string // "" for none
		from         string // the commit linked before
		key          string // the step whose key this one's must equal
		errHas       string
		text         string // a regexp, with R(commit) for its release
	}{
		{name: "first deploy", commit: v1, event: Success, text: `^shop on web1: deployed R\(v1\) \(commit v1\)$`},
		{name: "converged", commit: v1},
		{name: "deploy", commit: v2, event: Success, from: v1,
			text: `^shop on web1: deployed R\(v2\) \(commit v2\), was R\(v1\) \(commit v1\)$`},
		{name: "build fails", commit: v3, event: Failure, from: v2, errHas: "build compile: exited with status 7",
			text: `^shop on web1: deploy of R\(v3\) \(commit v3\) failed: build compile: exited with status 7; the host is on R\(v2\)$`},
		{name: "blocked", commit: v3, event: Blocked, from: v2, key: "build fails", errHas: "failed at step compile: exited with status 7",
			text: "^shop on web1: R\\(v3\\) \\(commit v3\\) is blocked: it failed at step compile \\(exited with status 7\\); the host stays on R\\(v2\\)\\. Retry it with `reconciler apply --retry` or change source.commit$"},
		{name: "health fails: reverted", commit: v4, event: Revert, from: v2, errHas: "status 500 from /health",
			text: `^shop on web1: R\(v4\) \(commit v4\) failed after the switch and was reverted: the host is back on R\(v2\) \(commit v2\), which serves\. `},
		{name: "blocked after the revert", commit: v4, event: Blocked, from: v2, key: "health fails: reverted"},
		{name: "rollback to a release on disk", commit: v1, event: Success, from: v2,
			text: `^shop on web1: rolled back to R\(v1\) \(commit v1\), was R\(v2\) \(commit v2\)$`},
	}
	for _, st := range steps {
		d := load(st.commit)
		l := layout.New(d.Root, d.Link)
		res, err := apply.Apply(context.Background(), apply.Options{Desired: d, Runner: &runner.Runner{Log: zaptest.NewLogger(t)}, Log: zaptest.NewLogger(t),
			Trigger: "cli", Env: []string{"PATH=/usr/bin:/bin"}, Git: &gitcache.Cache{Dir: l.RepoDir(), URL: d.Source.Repo, TmpDir: l.TmpDir()}})
		host, oerr := actual.Observe(context.Background(), d, nil)
		if oerr != nil {
			t.Fatal(oerr)
		}
		ev, ok := New(Input{Desired: d, Result: res, Err: err, Host: host, Trigger: "cli", Hostname: "web1", Time: time.Now()})
		if res != nil && res.Release != "" {
			releaseOf[st.commit] = res.Release
		}
		if !ok {
			if st.event != "" {
				t.Fatalf("%s: no event; want %s (apply: %v)", st.name, st.event, err)
			}
			continue
		}
		if st.event == "" {
			t.Fatalf("%s: event %s; want none", st.name, ev.Event)
		}
		keys[st.name] = ev.Key
		s.Send(d.Notify, ev)
		p := r.next(t)
		t.Logf("%s: %s", st.name, p.Raw)
		b := p.Body
		to := b["to"].(map[string]any)
		from := b["from"].(map[string]any)
		if b["event"] != st.event || b["app"] != "shop" || b["host"] != "web1" || b["trigger"] != "cli" || b["apply_id"] != res.ApplyID || b["result"] != res.Result {
			t.Errorf("%s: body %s", st.name, p.Raw)
		}
		if to["commit"] != st.commit || to["release"] != releaseOf[st.commit] || !rel.MatchString(to["release"].(string)) {
			t.Errorf("%s: to %v; want commit %s", st.name, to, st.commit)
		}
		switch {
		case st.from == "":
			if len(from) != 0 {
				t.Errorf("%s: from %v on a first deploy", st.name, from)
			}
		case from["commit"] != st.from || from["release"] != releaseOf[from["commit"].(string)]:
			t.Errorf("%s: from %v; want commit %s", st.name, from, st.from)
		}
		if st.errHas != "" && !strings.Contains(b["error"].(string), st.errHas) || st.errHas == "" && b["error"] != nil && st.event == Success {
			t.Errorf("%s: error %q; want %q", st.name, b["error"], st.errHas)
		}
		if st.key != "" && (ev.Key == "" || ev.Key != keys[st.key]) {
			t.Errorf("%s: key %q; want the key of %q, %q", st.name, ev.Key, st.key, keys[st.key])
		}
		if st.text != "" {
			re := st.text
			for _, c := range []string{v1, v2, v3, v4} {
				re = strings.ReplaceAll(re, "R\\("+name(c, v1, v2, v3, v4)+"\\)", regexp.QuoteMeta(releaseOf[c]))
				re = strings.ReplaceAll(re, "commit "+name(c, v1, v2, v3, v4), "commit "+c[:8])
			}
			if !regexp.MustCompile(re).MatchString(b["text"].(string)) {
				t.Errorf("%s: text\n  %s\nwant\n  %s", st.name, b["text"], re)
			}
		}
		if strings.ContainsAny(b["text"].(string), "<>\n") {
			t.Errorf("%s: text not one Slack-safe line: %q", st.name, b["text"])
		}
	}
	if strings.Contains(obs.String(), "s3cr3t") {
		t.Errorf("the log shows the URL:\n%s", obs)
	}
}

// name is how the table calls commit c: v1 … v4.
func name(c string, vs ...string) string {
	for i, v := range vs {
		if v == c {
			return "v" + string(rune('1'+i))
		}
	}
	return c
}
