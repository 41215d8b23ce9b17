package view

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
)

// TestHistoryShowsNoEscapesNorPasswords: records as an older version
// stored them (raw output, URLs with passwords) print with their control
// characters visible and their passwords hidden, in both views.
func TestHistoryShowsNoEscapesNorPasswords(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	msg := "clone https://deploy:t0ken@example.com/app.git: \x1b]0;owned\x07refused"
	applies := []history.Apply{{
		Record: history.Record{Time: at, Kind: history.KindApply, ApplyID: "a1", Result: history.ResultFailed, Error: "fetch repo: " + msg,
			From: &history.Ref{Release: "r\x1b[2J", Commit: "https://u:t0ken@h"}},
		Steps: []history.Record{{
			Time: at, Kind: history.KindStep, ApplyID: "a1",
			Step: "fetch", Result: history.ResultFailed,
			Error:  msg,
			Output: "progress\r\x1b[2J\x1b[31mfatal: https://deploy:t0ken@example.com\x1b[0m\n",
		}},
	}}
	for _, tt := range []struct {
		name   string
		render func(*bytes.Buffer) error
		want   []string
	}{
		{"human", func(b *bytes.Buffer) error { return HistoryHuman(b, applies) },
			[]string{`clone https://deploy:xxxxx@example.com/app.git: \x1b]0;owned\x07refused`, `| progress\x0d\x1b[2J\x1b[31mfatal: https://deploy:xxxxx@example.com\x1b[0m`,
				`from releases/r\x1b[2J`}},
		{"json", func(b *bytes.Buffer) error { return HistoryJSON(b, applies) },
			[]string{`https://deploy:xxxxx@example.com/app.git: \u001b]0;owned\u0007refused`, `"commit": "https://u:xxxxx@h"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.render(&b); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			if strings.ContainsAny(out, "\x1b\x07\r") || strings.Contains(out, "t0ken") {
				t.Errorf("raw control characters or the token in:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("missing %q in:\n%s", w, out)
				}
			}
		})
	}
	if applies[0].Steps[0].Error != msg || applies[0].From.Commit != "https://u:t0ken@h" {
		t.Error("rendering changed the caller's record")
	}
}

// applyID matches the random part of an apply id, so golden files do not
// depend on it.
var applyID = regexp.MustCompile(`\b([0-9]{8}T[0-9]{6}Z)-[0-9a-f]{6}\b`)

// TestHistoryGolden: the history of real applies on a fake clock — a first
// deploy, an upgrade, a build that fails, the blocked apply after it, a
// release whose health fails and is reverted — with a record an older
// version wrote and the steps of an apply killed before its own record,
// rendered newest first with and without steps.
func TestHistoryGolden(t *testing.T) {
	s := newStage(t)
	s.repo.Commit("v1")
	build := "build:\n  - {name: deps, run: 'test ! -f BROKEN_BUILD || { echo \"error: no such package\" >&2; exit 7; }'}\n"
	d := s.desired(healthCheck + build)
	hist := layout.New(d.Root, d.Link).HistoryFile()
	// What an older version wrote: no user, host, from or to.
	old := `{"time":"2026-11-25T08:00:00Z","kind":"apply","apply_id":"20261125T080000Z-0a0b0c","trigger":"cli","commit":"00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee","release":"20261125T075958Z-00c0ffee","result":"ok","duration_s":3}` + "\n"
	if err := os.MkdirAll(layout.New(d.Root, d.Link).StateDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hist, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	mustApply := func(wantErr bool) {
		t.Helper()
		if _, err := s.apply(d, false); (err != nil) != wantErr {
			t.Fatalf("apply: %v", err)
		}
	}
	mustApply(false) // v1, a first deploy (the old record's release is not on disk)
	s.repo.Commit("v2")
	mustApply(false)
	s.repo.Write("BROKEN_BUILD", "")
	s.repo.Commit("v3")
	mustApply(true) // the build fails
	mustApply(true) // blocked
	s.repo.Git("rm", "-q", "BROKEN_BUILD")
	s.repo.Write("BROKEN", "status 500 from /health\n")
	s.repo.Commit("v4")
	mustApply(true) // health fails: reverted to v2
	// An apply killed after its first step: a step record, no apply record.
	if err := history.Append(hist, history.Record{Time: s.clock.Add(time.Minute), Kind: history.KindStep, ApplyID: "20261126T100000Z-dead00",
		Trigger: "schedule", Step: "fetch git cache", Result: history.ResultOK, Duration: 2}); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name  string
		limit int
		steps bool
	}{{"history", 0, false}, {"history_steps", 0, true}, {"history_limit_2_steps", 2, true}} {
		t.Run(tt.name, func(t *testing.T) {
			applies, skipped, err := history.Applies(hist, tt.limit, tt.steps)
			if err != nil || skipped != 0 {
				t.Fatalf("Applies: %v, %d skipped", err, skipped)
			}
			var b bytes.Buffer
			if err := HistoryHuman(&b, applies); err != nil {
				t.Fatal(err)
			}
			out := applyID.ReplaceAllString(b.String(), "${1}-xxxxxx")
			golden(t, tt.name+".txt", []byte(out))
		})
	}
	var b bytes.Buffer
	if err := HistoryHuman(&b, nil); err != nil || b.String() != "No applies recorded yet.\n" {
		t.Errorf("no applies: %q, %v", b.String(), err)
	}
}
