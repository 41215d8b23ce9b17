// Package status summarises a host for people and machines: what the link
// points at and since when, the releases on disk and their state, and the
// last apply.
package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/scrub"
	"github.com/reconciler-dev/reconciler/internal/stepcache"
)

// Report is the status of one host.
type Report struct {
	App          string       `json:"app"`
	Root         string       `json:"root"`
	Link         string       `json:"link"`
	Linked       string       `json:"linked,omitempty"`
	LinkedCommit string       `json:"linked_commit,omitempty"`
	SwitchedAt   *time.Time   `json:"switched_at,omitempty"`
	Previous     string       `json:"previous,omitempty"`
	LinkProblem  string       `json:"link_problem,omitempty"`
	Releases     []Release    `json:"releases"`
	Services     []Service    `json:"services,omitempty"`
	Cache        []CacheEntry `json:"cache,omitempty"`
	// Suspended is set while deploys are suspended (reconciler suspend,
	// or rollback): apply refuses, the daemon only reports.
	Suspended *record.Suspension `json:"suspended,omitempty"`
	LastApply *history.Record    `json:"last_apply,omitempty"`
	Warnings  []string           `json:"warnings,omitempty"`
}

// Release is one release on disk.
type Release struct {
	Name        string     `json:"name"`
	Commit      string     `json:"commit,omitempty"`
	Fingerprint string     `json:"fingerprint,omitempty"`
	State       string     `json:"state"`
	Created     *time.Time `json:"created,omitempty"`
	Linked      bool       `json:"linked,omitempty"`
	Previous    bool       `json:"previous,omitempty"`
	FailedStep  string     `json:"failed_step,omitempty"`
	Error       string     `json:"error,omitempty"`
	Output      string     `json:"output,omitempty"` // the tail of what the failed step printed
}

// CacheEntry is one entry under <root>/cache.
type CacheEntry struct {
	Entry    string     `json:"entry"` // <step>/<key>
	State    string     `json:"state"` // sealed, interrupted or unreadable
	Size     int64      `json:"size_bytes,omitempty"`
	Files    int        `json:"files,omitempty"`
	FilledBy string     `json:"filled_by,omitempty"` // the release whose build filled it
	SealedAt *time.Time `json:"sealed_at,omitempty"`
	LinkedBy []string   `json:"linked_by"` // the releases on disk that link it
	Problem  string     `json:"problem,omitempty"`
}

// Make builds the report from an observed host and the last apply of its
// history (nil for none).
func Make(d *desired.State, a *actual.State, last *history.Record, svcs []Service) *Report {
	r := &Report{App: d.App, Root: d.Root, Link: d.Link, Linked: a.Link.Release, Releases: []Release{}, LastApply: last, Services: svcs, Suspended: a.Suspended}
	switch {
	case a.Link.Problem != "":
		r.LinkProblem = a.Link.Problem
	case a.Link.Dangling:
		r.LinkProblem = fmt.Sprintf("%s is dangling (%s)", a.Link.Path, a.Link.Target)
	case !a.Link.Exists && a.RootExists:
		r.LinkProblem = fmt.Sprintf("%s does not exist", a.Link.Path)
	}
	// The rollback target is derived from the release records, as the
	// plan derives it: never a failed release.
	r.Previous = a.RollbackTarget(a.Link.Release)
	if a.Host != nil {
		if a.Host.Linked == a.Link.Release {
			t := a.Host.SwitchedAt
			r.SwitchedAt = &t
		} else {
			r.Warnings = append(r.Warnings, fmt.Sprintf("the link points at %s but the last switch recorded was to %s: moved by hand?", orNothing(a.Link.Release), a.Host.Linked))
		}
	}
	if a.HostProblem != "" {
		r.Warnings = append(r.Warnings, "host record: "+a.HostProblem)
	}
	for _, s := range a.Strays {
		r.Warnings = append(r.Warnings, "releases/"+s+" is not a release")
	}
	for _, rel := range a.Releases {
		x := Release{Name: rel.Name, Linked: rel.Name == r.Linked, Previous: rel.Name == r.Previous && r.Previous != ""}
		if rel.Record == nil {
			x.State = "unknown"
			x.Error = rel.Problem
		} else {
			c := rel.Record.Created
			x.Commit, x.Fingerprint, x.State, x.Created = rel.Record.Commit, rel.Record.Fingerprint, rel.Record.State, &c
			if f := rel.Record.Failure; f != nil {
				x.FailedStep, x.Error, x.Output = f.Step, f.Error, f.Output
			}
		}
		if x.Linked {
			r.LinkedCommit = x.Commit
		}
		r.Releases = append(r.Releases, x)
	}
	for _, e := range a.Cache {
		c := CacheEntry{Entry: e.Name(), State: "interrupted", LinkedBy: []string{}, Problem: e.Problem}
		switch {
		case e.Problem != "":
			c.State = "unreadable"
		case e.Seal != nil:
			t := e.Seal.SealedAt
			c.State, c.Size, c.Files, c.FilledBy, c.SealedAt = "sealed", e.Seal.Size, e.Seal.Files, e.Seal.Release, &t
		}
		for _, rel := range a.Releases {
			if rel.Record == nil {
				continue
			}
			for _, n := range rel.Record.CacheEntries() {
				if n == c.Entry {
					c.LinkedBy = append(c.LinkedBy, rel.Name)
				}
			}
		}
		r.Cache = append(r.Cache, c)
	}
	redact(r)
	return r
}

// redact hides the passwords of the URLs anywhere in the report: a failing
// command's output and error, a supervisorctl answer naming its serverurl
// (http://user:pass@host:9001), a fetch error naming source.repo. The
// report is printed, served on /status and read by tools.
func redact(r *Report) {
	texts := []*string{&r.LinkProblem}
	if r.Suspended != nil {
		s := *r.Suspended // the caller's record stays as it is
		texts = append(texts, &s.Reason)
		r.Suspended = &s
	}
	for i := range r.Warnings {
		texts = append(texts, &r.Warnings[i])
	}
	for i := range r.Releases {
		x := &r.Releases[i]
		texts = append(texts, &x.FailedStep, &x.Error, &x.Output)
	}
	for i := range r.Services {
		s := &r.Services[i]
		texts = append(texts, &s.Note)
		for j := range s.Releases {
			texts = append(texts, &s.Releases[j])
		}
	}
	if r.LastApply != nil {
		a := *r.LastApply // the caller's records stay as they are
		texts = append(texts, &a.Trigger, &a.Step, &a.Error, &a.Output, &a.Release)
		r.LastApply = &a
	}
	for _, t := range texts {
		*t = scrub.URLs(*t)
	}
}

func orNothing(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

// RenderText writes the report for people. Control characters (in a
// command's output recorded by an older version, in a release's failure)
// are shown escaped, as \x1b, never sent to the terminal.
func RenderText(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "app %s at %s\n", r.App, r.Root)
	if r.Linked != "" {
		fmt.Fprintf(&b, "%s -> releases/%s (commit %s)", r.Link, r.Linked, r.LinkedCommit)
		if r.SwitchedAt != nil {
			fmt.Fprintf(&b, ", switched %s", r.SwitchedAt.UTC().Format(time.RFC3339))
		}
		b.WriteString("\n")
	} else if r.LinkProblem == "" {
		fmt.Fprintf(&b, "%s: not deployed yet\n", r.Link)
	}
	if r.LinkProblem != "" {
		fmt.Fprintf(&b, "problem: %s\n", r.LinkProblem)
	}
	if r.Previous != "" {
		fmt.Fprintf(&b, "previous (rollback target): %s\n", r.Previous)
	}
	if s := r.Suspended; s != nil {
		fmt.Fprintf(&b, "deploys %s; apply refuses and the daemon only reports until resumed\n", s.Describe())
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	if len(r.Releases) > 0 {
		b.WriteString("\nreleases:\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, x := range r.Releases {
			mark := " "
			if x.Linked {
				mark = "*"
			}
			commit := layout.Short(x.Commit)
			extra := ""
			if x.Previous {
				extra = "previous"
			}
			if x.FailedStep != "" {
				extra = "failed at " + x.FailedStep + ": " + failure(x.Error, x.Output)
			} else if x.Error != "" {
				extra = x.Error
			}
			fmt.Fprintf(tw, "  %s %s\t%s\t%s\t%s\n", mark, x.Name, commit, x.State, extra)
		}
		tw.Flush()
	}
	if len(r.Services) > 0 {
		b.WriteString("\nservices:\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, s := range r.Services {
			switch {
			case s.PID == 0:
				fmt.Fprintf(tw, "  %s\t%s\n", s.Name, s.Note)
			default:
				where := strings.Join(s.Releases, ", ")
				warn := ""
				for _, rel := range s.Releases {
					if !strings.HasPrefix(rel, "/") && rel != r.Linked {
						warn = "  (a process runs from a release that is not linked: restart the service)"
					}
				}
				fmt.Fprintf(tw, "  %s\tpid %d, %d processes, running from %s%s\n", s.Name, s.PID, s.Procs, where, warn)
			}
		}
		tw.Flush()
	}
	if len(r.Cache) > 0 {
		b.WriteString("\ncache:\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, c := range r.Cache {
			step, key, _ := strings.Cut(c.Entry, "/")
			name := step + "/" + stepcache.Short(key)
			switch c.State {
			case "sealed":
				n := len(c.LinkedBy)
				fmt.Fprintf(tw, "  %s\t%s\t%d files\tlinked by %d release%s\n", name, stepcache.FormatSize(c.Size), c.Files, n, map[bool]string{true: "", false: "s"}[n == 1])
			case "interrupted":
				fmt.Fprintf(tw, "  %s\tinterrupted fill: discarded by the next apply\n", name)
			default:
				fmt.Fprintf(tw, "  %s\t%s\n", name, c.Problem)
			}
		}
		tw.Flush()
	}
	if a := r.LastApply; a != nil {
		fmt.Fprintf(&b, "\nlast apply: %s at %s (%.2fs", a.Result, a.Time.UTC().Format(time.RFC3339), a.Duration)
		if a.Trigger != "" {
			fmt.Fprintf(&b, ", trigger %s", a.Trigger)
		}
		if a.ConfigCommit != "" {
			fmt.Fprintf(&b, ", config commit %s", layout.Short(a.ConfigCommit))
		}
		b.WriteString(")\n")
		if a.Error != "" {
			fmt.Fprintf(&b, "  %s\n", failure(a.Error, a.Output))
		}
	}
	_, err := io.WriteString(w, scrub.Escape(b.String()))
	return err
}

// failure is one line: what happened, and the last line the command
// printed, which is usually the error. Both are kept apart in the record,
// so nothing here parses error text.
func failure(msg, output string) string {
	msg, _, _ = strings.Cut(msg, "\n")
	out := strings.TrimRight(output, "\n")
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	if out = strings.TrimSpace(out); out != "" {
		return msg + ": " + out
	}
	return msg
}

// RenderJSON writes the report as JSON.
func RenderJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
