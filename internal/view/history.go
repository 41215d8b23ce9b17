package view

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/scrub"
)

// maxSummary bounds the error an apply's line shows; --steps and --json
// show it whole.
const maxSummary = 100

// HistoryHuman writes applies for people, in the order given (newest
// first, as history.Applies returns them): one line each — when, result,
// trigger, user, from → to commits, duration, the first line of the error.
// An apply with steps gets, under its line, its id, host, config commit
// and releases, then each step with its error and the last line of its
// output. Passwords in URLs are hidden and control characters shown as
// \x1b and the like: records written by older versions kept both.
func HistoryHuman(w io.Writer, applies []history.Apply) error {
	var b strings.Builder
	if len(applies) == 0 {
		b.WriteString("No applies recorded yet.\n")
	}
	for _, a := range applies {
		r := shown(a.Record)
		fmt.Fprintf(&b, "%s  %-11s  %-8s  %-8s  %-8s → %-8s  %7.2fs", r.Time.UTC().Format(time.RFC3339), r.Result, orDash(r.Trigger),
			orDash(r.User), fromCommit(r), toCommit(r), r.Duration)
		if r.Error != "" {
			fmt.Fprintf(&b, "  %s", summary(r.Error))
		}
		b.WriteString("\n")
		if len(a.Steps) == 0 {
			continue
		}
		writeApplyDetail(&b, r)
		for _, s := range a.Steps {
			s = shown(s)
			fmt.Fprintf(&b, "    %-6s  %6.2fs  %s\n", s.Result, s.Duration, s.Step)
			if s.Error != "" {
				fmt.Fprintf(&b, "        %s\n", indentBy(strings.TrimSpace(s.Error), "        "))
			}
			if out := lastLine(s.Output); out != "" {
				fmt.Fprintf(&b, "        | %s\n", out)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeApplyDetail writes what an apply's line leaves out: its id, host,
// config commit and the releases it went from and to.
func writeApplyDetail(b *strings.Builder, r history.Record) {
	fmt.Fprintf(b, "    apply %s", r.ApplyID)
	if r.Host != "" {
		fmt.Fprintf(b, " on %s", r.Host)
	}
	if r.ConfigCommit != "" {
		fmt.Fprintf(b, ", config commit %s", layout.Short(r.ConfigCommit))
	}
	b.WriteString("\n")
	if r.Result == history.ResultUnfinished {
		b.WriteString("    no record of its end: still running, or stopped before it could write one (killed, a crash)\n")
	}
	if r.From != nil || r.To != nil || r.Release != "" {
		fmt.Fprintf(b, "    from %s to %s\n", release(r.From, r.From != nil), release(to(r), true))
	}
}

// to is the release an apply went to; older records have no To.
func to(r history.Record) *history.Ref {
	if r.To != nil {
		return r.To
	}
	if r.Release == "" && r.Commit == "" {
		return nil
	}
	return &history.Ref{Release: r.Release, Commit: r.Commit}
}

// release names a release for the detail lines: "releases/X (commit)",
// "nothing" before a first deploy, "?" when not recorded.
func release(ref *history.Ref, known bool) string {
	switch {
	case !known || ref == nil:
		return "?"
	case ref.Release == "":
		return "nothing"
	case ref.Commit == "":
		return "releases/" + ref.Release
	}
	return fmt.Sprintf("releases/%s (%s)", ref.Release, layout.Short(ref.Commit))
}

// fromCommit is the short commit the link held when the apply started:
// "-" for none (a first deploy), "?" when the record does not say (older
// versions, an unfinished apply).
func fromCommit(r history.Record) string {
	switch {
	case r.From == nil:
		return "?"
	case r.From.Release == "":
		return "-"
	case r.From.Commit == "":
		return r.From.Release
	}
	return layout.Short(r.From.Commit)
}

// toCommit is the short commit the apply went to, "?" when not known
// (a fetch that failed before the commit was resolved).
func toCommit(r history.Record) string {
	t := to(r)
	switch {
	case t == nil || t.Release == "" && t.Commit == "":
		return "?"
	case t.Commit == "":
		return t.Release
	}
	return layout.Short(t.Commit)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// summary is the first line of an error, at most maxSummary characters.
func summary(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if utf8.RuneCountInString(s) > maxSummary {
		s = string([]rune(s)[:maxSummary-1]) + "…"
	}
	return s
}

// HistoryJSON writes the applies as one JSON array, in the order given,
// each with its "steps" when it has them; passwords in URLs hidden (JSON
// escapes the control characters).
func HistoryJSON(w io.Writer, applies []history.Apply) error {
	out := make([]history.Apply, 0, len(applies))
	for _, a := range applies {
		c := history.Apply{Record: redacted(a.Record)}
		for _, s := range a.Steps {
			c.Steps = append(c.Steps, redacted(s))
		}
		out = append(out, c)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// redacted is r with the passwords in its URLs hidden.
func redacted(r history.Record) history.Record {
	for _, s := range history.Texts(&r) {
		*s = scrub.URLs(*s)
	}
	return r
}

// shown is r for a terminal: redacted, its control characters escaped.
func shown(r history.Record) history.Record {
	for _, s := range history.Texts(&r) {
		*s = scrub.Escape(scrub.URLs(*s))
	}
	return r
}

func indentBy(s, prefix string) string { return strings.ReplaceAll(s, "\n", "\n"+prefix) }

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
