package view

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/history"
)

// TestHistoryShowsNoEscapesNorPasswords: records as an older version
// stored them (raw output, URLs with passwords) print with their control
// characters visible and their passwords hidden, in both views.
func TestHistoryShowsNoEscapesNorPasswords(t *testing.T) {
	recs := []history.Record{{
		Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Kind: history.KindStep, ApplyID: "a1",
		Step: "fetch", Result: history.ResultFailed,
		Error:  "clone https://deploy:t0ken@example.com/app.git: \x1b]0;owned\x07refused",
		Output: "progress\r\x1b[2J\x1b[31mfatal: https://deploy:t0ken@example.com\x1b[0m\n",
	}}
	for _, tt := range []struct {
		name   string
		render func(*bytes.Buffer) error
		want   []string
	}{
		{"human", func(b *bytes.Buffer) error { return HistoryHuman(b, recs) },
			[]string{`clone https://deploy:xxxxx@example.com/app.git: \x1b]0;owned\x07refused`, `| progress\x0d\x1b[2J\x1b[31mfatal: https://deploy:xxxxx@example.com\x1b[0m`}},
		{"json", func(b *bytes.Buffer) error { return HistoryJSON(b, recs) },
			[]string{`https://deploy:xxxxx@example.com/app.git: \u001b]0;owned\u0007refused`}},
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
	if recs[0].Error != "clone https://deploy:t0ken@example.com/app.git: \x1b]0;owned\x07refused" {
		t.Error("rendering changed the caller's record")
	}
}
