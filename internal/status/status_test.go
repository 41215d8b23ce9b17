package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/record"
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
