package status

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/stepcache"
)

// TestReportHidesSecretsAndEscapes: a failure stored raw by an older
// version (colours, a terminal title), a fetch error naming source.repo
// with its token, and a supervisorctl answer naming serverurl with its
// password: the text report shows the control characters escaped, and
// neither report shows a password.
func TestReportHidesSecretsAndEscapes(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := &desired.State{App: "site", Root: "/srv/site", Link: "current"}
	a := &actual.State{RootExists: true, Link: actual.Link{Path: "/srv/site/current"},
		Releases: []actual.Release{{Name: "r1", Record: &record.Release{Name: "r1", Commit: "abc", State: record.Failed, Created: at,
			Failure: &record.Failure{Step: "build", Error: "exit status 1", Output: "\x1b]0;owned\x07\x1b[31mfatal: https://ci:t0ken@git.example.com/app\x1b[0m\n", At: at}}}}}
	recs := []history.Record{{Time: at, Kind: history.KindApply, ApplyID: "a1", Result: history.ResultFailed,
		Error: "clone https://ci:t0ken@git.example.com/app.git: \x1b[2Jauthorization refused"}}
	svcs := []Service{{Name: "web", Note: "processes unknown: ask supervisor for the pid of web: http://admin:s3cret@127.0.0.1:9001 refused connection"}}
	r := Make(d, a, &recs[0], svcs)

	var text, js bytes.Buffer
	if err := RenderText(&text, r); err != nil {
		t.Fatal(err)
	}
	if err := RenderJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"text": text.String(), "json": js.String()} {
		for _, secret := range []string{"t0ken", "s3cret"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s report shows %s:\n%s", name, secret, out)
			}
		}
	}
	if strings.ContainsAny(text.String(), "\x1b\x07") {
		t.Errorf("raw control characters in the text report:\n%s", text.String())
	}
	for _, want := range []string{`\x1b[31mfatal: https://ci:xxxxx@git.example.com/app\x1b[0m`, `clone https://ci:xxxxx@git.example.com/app.git: \x1b[2Jauthorization refused`, "http://admin:xxxxx@127.0.0.1:9001 refused"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("missing %q in:\n%s", want, text.String())
		}
	}
	if !strings.Contains(recs[0].Error, "t0ken") {
		t.Error("Make changed the caller's history records")
	}
}

var update = flag.Bool("update", false, "rewrite the golden files")

// A host rolled back and suspended, with cache entries: the text and JSON
// reports are golden.
func TestSuspendedHostGolden(t *testing.T) {
	at := time.Date(2026, 11, 26, 9, 30, 0, 0, time.UTC)
	d := &desired.State{App: "shop", Root: "/srv/shop", Link: "current"}
	healthy := at.Add(-time.Hour)
	mk := func(name, commit, state, entry string) actual.Release {
		r := &record.Release{Name: name, Commit: commit, State: state, Created: at.Add(-2 * time.Hour), HealthyAt: &healthy,
			Steps: []record.Step{{Name: "deps", Cache: entry}}}
		return actual.Release{Name: name, Record: r}
	}
	key := "3f2a1b2c3d4e5f60718293a4b5c6d7e8"
	a := &actual.State{RootExists: true, Link: actual.Link{Path: "/srv/shop/current", Exists: true, Release: "20261126T080000Z-aaaaaaaa"},
		Host: &record.Host{Linked: "20261126T080000Z-aaaaaaaa", SwitchedAt: at},
		Releases: []actual.Release{
			mk("20261126T080000Z-aaaaaaaa", "aaaaaaaa11111111111111111111111111111111", record.Complete, "deps/"+key),
			mk("20261126T083000Z-bbbbbbbb", "bbbbbbbb22222222222222222222222222222222", record.Complete, "deps/"+key),
		},
		Suspended: &record.Suspension{By: "alice", At: at, Reason: "rollback: v2 corrupts carts", Release: "20261126T080000Z-aaaaaaaa"},
		Cache: []actual.CacheEntry{
			{Step: "deps", Key: key, Seal: &stepcache.Seal{Step: "deps", Key: key, Release: "20261126T080000Z-aaaaaaaa", Size: 48 << 20, Files: 5210, SealedAt: at}},
			{Step: "deps", Key: "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"},
		}}
	last := &history.Record{Time: at, Kind: history.KindApply, ApplyID: "a1", Trigger: "rollback", Result: history.ResultOK, Duration: 1.2}
	r := Make(d, a, last, nil)
	var text, js bytes.Buffer
	if err := RenderText(&text, r); err != nil {
		t.Fatal(err)
	}
	if err := RenderJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	golden(t, "suspended.txt", text.Bytes())
	golden(t, "suspended.json", js.Bytes())
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}
