package view

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/scrub"
)

// HistoryHuman writes history records for people, oldest first: one line
// each, a failure's message and the last line of its output below it.
// Passwords in URLs are hidden and control characters shown as \x1b and
// the like: records written by older versions kept both.
func HistoryHuman(w io.Writer, recs []history.Record) error {
	var b strings.Builder
	if len(recs) == 0 {
		b.WriteString("No applies recorded yet.\n")
	}
	for _, r := range recs {
		r = shown(r)
		what := r.Step
		if r.Kind == history.KindApply {
			what = "APPLY"
			if r.Trigger == "revert" {
				what = "REVERT"
			}
		}
		fmt.Fprintf(&b, "%s  %-11s  %-8s  %-8s  %-30s  %7.2fs  %s\n", r.Time.UTC().Format(time.RFC3339), r.Result, r.Trigger,
			layout.Short(r.Commit), r.Release, r.Duration, what)
		if r.Error != "" {
			fmt.Fprintf(&b, "    %s\n", indentBy(strings.TrimSpace(r.Error), "    "))
		}
		if out := lastLine(r.Output); out != "" {
			fmt.Fprintf(&b, "    | %s\n", out)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// HistoryJSON writes the records as one JSON array, passwords in URLs
// hidden (JSON escapes the control characters).
func HistoryJSON(w io.Writer, recs []history.Record) error {
	out := make([]history.Record, 0, len(recs))
	for _, r := range recs {
		out = append(out, redacted(r))
	}
	recs = out
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(recs)
}

// redacted is r with the passwords in its URLs hidden.
func redacted(r history.Record) history.Record {
	for _, s := range texts(&r) {
		*s = scrub.URLs(*s)
	}
	return r
}

// shown is r for a terminal: redacted, its control characters escaped.
func shown(r history.Record) history.Record {
	for _, s := range texts(&r) {
		*s = scrub.Escape(scrub.URLs(*s))
	}
	return r
}

func texts(r *history.Record) []*string {
	return []*string{&r.Kind, &r.ApplyID, &r.Trigger, &r.ConfigCommit, &r.Commit, &r.Release, &r.Step, &r.Result, &r.Error, &r.Output}
}

func indentBy(s, prefix string) string { return strings.ReplaceAll(s, "\n", "\n"+prefix) }

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
