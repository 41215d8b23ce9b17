package view

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/scrub"
)

// Command is how the user invoked the reconciler, e.g. "reconciler -f
// prod.yaml": every hint a view prints is a command that works when pasted.
type Command string

// PlanHuman writes the plan for people, like terraform plan: one line a
// step with its symbol and reason, then a summary line, or "No changes.".
func PlanHuman(w io.Writer, p *plan.Plan, cmd Command) error {
	var b strings.Builder
	commit := p.Commit
	if commit == "" {
		commit = "(resolved after fetch)"
	}
	fmt.Fprintf(&b, "app %s at %s\n", p.App, p.Root)
	fmt.Fprintf(&b, "desired: %s -> %s, build %s\n", p.Ref, commit, p.Fingerprint)
	linked := p.Linked
	if linked == "" {
		linked = "(nothing)"
	}
	fmt.Fprintf(&b, "linked:  %s -> %s\n", p.Link, linked)
	writeShips(&b, p)
	if len(p.Changed) > 0 {
		fmt.Fprintf(&b, "changed: %s (in desired.yaml since the last apply)\n", strings.Join(p.Changed, ", "))
	}
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	writeSchema(&b, p)
	b.WriteString("\n")
	switch {
	case p.Blocked != nil && p.Blocked.Policy != "":
		writeSchemaBlocked(&b, p, cmd)
		_, err := io.WriteString(w, b.String())
		return err
	case p.Blocked != nil:
		bl := p.Blocked
		fmt.Fprintf(&b, "Blocked: release %s of this target failed at step %s (%s):\n  %s\n", bl.Release, bl.Step, bl.At, indent(bl.Error))
		writeOutput(&b, bl.Output)
		fmt.Fprintf(&b, "Not retrying a failed target. Run `%s` to try it again, or change source.commit or the build.\n", cmd.With("apply --retry"))
		if !p.Changes() {
			if p.Holding != "" {
				fmt.Fprintf(&b, "The host stays on %s, the last good release.\n", p.Holding)
			}
			_, err := io.WriteString(w, b.String())
			return err
		}
		fmt.Fprintf(&b, "\nTo keep the host on %s, the last good release, reconciler will perform these steps:\n\n", p.Holding)
	case p.Reverting != nil:
		writeReverting(&b, p)
	case !p.Changes():
		fmt.Fprintf(&b, "No changes. %s points at %s, which is what desired.yaml asks for.\n", p.Link, p.Target)
		_, err := io.WriteString(w, b.String())
		return err
	default:
		b.WriteString("Reconciler will perform these steps:\n\n")
	}
	writeSteps(&b, p)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeShips lists the commits the plan ships, or takes away.
func writeShips(b *strings.Builder, p *plan.Plan) {
	l := p.Ships
	if l == nil || l.Direction == "same" {
		return
	}
	n := fmt.Sprintf("%d commit%s", l.Total, plural(l.Total))
	span := layout.Short(p.ShipsFrom) + ".." + layout.Short(p.Commit)
	switch l.Direction {
	case "forward":
		fmt.Fprintf(b, "ships:   %s (%s):\n", n, span)
	case "back":
		these := "these " + n + " go"
		if l.Total == 1 {
			these = "this commit goes"
		}
		fmt.Fprintf(b, "rollback: %s away (%s):\n", these, layout.Short(p.Commit)+".."+layout.Short(p.ShipsFrom))
	default:
		fmt.Fprintf(b, "diverged: %s is not an ancestor of %s (a force push, another branch?); the target has %s:\n", layout.Short(p.ShipsFrom), layout.Short(p.Commit), n)
	}
	for _, c := range l.Commits {
		fmt.Fprintf(b, "  %s %s\n", layout.Short(c.SHA), scrub.Escape(c.Subject)) // the repository's text, never terminal control
	}
	if more := l.Total - len(l.Commits); more > 0 {
		fmt.Fprintf(b, "  … and %d more\n", more)
	}
	if l.Partial {
		b.WriteString("  (and perhaps more: the cache holds no more of the history)\n")
	}
}

// writeSchema says, app by app, which applied migrations the target
// lacks, and what migrate.on_rollback does about it.
func writeSchema(b *strings.Builder, p *plan.Plan) {
	sa := p.Schema
	if sa == nil {
		return
	}
	for _, a := range sa.Apps {
		if len(a.Migrations) == 1 {
			fmt.Fprintf(b, "! schema ahead: %s is applied; release %s does not have it\n", a.Migrations[0], sa.Release)
		} else {
			fmt.Fprintf(b, "! schema ahead: %s are applied; release %s does not have them\n", strings.Join(a.Migrations, ", "), sa.Release)
		}
	}
	switch sa.Policy {
	case "warn":
		fmt.Fprintf(b, "on_rollback: warn: switching anyway; the code of %s runs on a schema ahead of it (recorded)\n", sa.Release)
	case "reverse":
		if sa.Linked != "" {
			fmt.Fprintf(b, "on_rollback: reverse: unapplying them first with the code of %s, linked\n", sa.Linked)
		}
	}
}

// writeSchemaBlocked is a switch refused by migrate.on_rollback, and how
// to go on.
func writeSchemaBlocked(b *strings.Builder, p *plan.Plan, cmd Command) {
	bl := p.Blocked
	fmt.Fprintf(b, "Refused: %s.\n", bl.Error)
	if p.Holding != "" {
		fmt.Fprintf(b, "The host stays on %s.\n", p.Holding)
	}
	again := cmd.With("apply")
	if p.Rollback {
		again = cmd.With("rollback")
	}
	b.WriteString("To go on, choose one in desired.yaml, then run `" + again + "`:\n")
	if bl.Policy == "block" {
		b.WriteString("  - migrate.on_rollback: reverse, to unapply them with the code of the linked release first\n")
		b.WriteString("    (only for migrations that can be unapplied);\n")
		b.WriteString("  - migrate.on_rollback: warn, to switch anyway (fine for additive, nullable migrations);\n")
	}
	if !p.Rollback {
		b.WriteString("  - source.commit back to the linked release's commit, which has them.\n")
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func writeReverting(b *strings.Builder, p *plan.Plan) {
	r := p.Reverting
	fmt.Fprintf(b, "Release %s failed at step %s:\n  %s\n", r.From, r.Step, indent(r.Error))
	if p.Target == r.From {
		b.WriteString("There is no release that served healthy to return to: the link stays on it.\n\n")
		return
	}
	fmt.Fprintf(b, "Reverting to releases/%s, the last release that served healthy:\n\n", p.Target)
}

func writeSteps(b *strings.Builder, p *plan.Plan) {
	for _, s := range p.Steps {
		fmt.Fprintf(b, "  %-2s %-8s %s\n", s.Symbol(), s.Action, plan.Describe(s))
		fmt.Fprintf(b, "              # %s\n", s.Reason)
	}
	fmt.Fprintf(b, "\n%s\n", Summary(p))
}

// writeOutput shows the last lines a failed command printed.
func writeOutput(b *strings.Builder, out string) {
	out = strings.TrimRight(out, "\n")
	if out == "" {
		return
	}
	lines := strings.Split(out, "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	for _, l := range lines {
		fmt.Fprintf(b, "  | %s\n", l)
	}
}

// Summary is the plan's last line. Each kind of step is counted as what it
// is: an export is not a build step, nor is a migration.
func Summary(p *plan.Plan) string {
	count := map[plan.Action]int{}
	// Pseudo-actions, counted apart: builds whose outputs are linked from
	// the cache, and cache entries pruned.
	const cached, pruneCache plan.Action = "cached", "prune-cache"
	for _, s := range p.Steps {
		switch {
		case s.Cache != nil && s.Cache.Hit:
			count[cached]++
		case s.CacheEntry != "":
			count[pruneCache]++
		default:
			count[s.Action]++
		}
	}
	var parts []string
	add := func(a plan.Action, one, many string) {
		if n := count[a]; n == 1 {
			parts = append(parts, "1 "+one)
		} else if n > 1 {
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(plan.Fetch, "fetch", "fetches")
	add(plan.Create, "release to create", "releases to create")
	add(plan.Export, "export", "exports")
	add(plan.Shared, "shared-paths link", "shared-paths links")
	add(plan.Build, "build step", "build steps")
	add(cached, "cached build step", "cached build steps")
	add(plan.Reverse, "migration reverse", "migration reverses")
	add(plan.Migrate, "migration", "migrations")
	add(plan.Preflight, "preflight", "preflights")
	add(plan.Schema, "schema warning to record", "schema warnings to record")
	add(plan.Switch, "switch", "switches")
	add(plan.Fail, "failure to record", "failures to record")
	add(plan.Service, "service action", "service actions")
	add(plan.Health, "health check", "health checks")
	add(plan.Record, "migrations listing to record", "migrations listings to record")
	add(plan.Prune, "release to prune", "releases to prune")
	add(pruneCache, "cache entry to prune", "cache entries to prune")
	return "Plan: " + strings.Join(parts, ", ") + "."
}

func indent(s string) string { return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") }

// With is the command followed by a subcommand and its flags, as the user
// would type it: "reconciler apply --retry -f prod.yaml".
func (c Command) With(sub string) string {
	base, flags, _ := strings.Cut(string(c), " ")
	if base == "" {
		base = "reconciler"
	}
	if flags == "" {
		return base + " " + sub
	}
	return base + " " + sub + " " + flags
}

// CommandFor is how to invoke the reconciler on file: the -f flag only
// when the file is not the default one.
func CommandFor(file, defaultFile string) Command {
	if file == "" || file == defaultFile {
		return "reconciler"
	}
	return Command("reconciler -f " + shellQuote(file))
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%_-+=:,./", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// PlanJSON writes the plan as one JSON document.
func PlanJSON(w io.Writer, p *plan.Plan) error {
	cp := *p
	if cp.Steps == nil {
		cp.Steps = []plan.Step{} // [] rather than null, for jq users
	}
	out := struct {
		*plan.Plan
		Changes bool `json:"changes"`
	}{&cp, p.Changes()}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// fetched is the line after the fetch: what the ref resolved to and what
// is left of the plan.
func fetched(p *plan.Plan) string {
	rest := "No more changes."
	if p.Changes() {
		s := Summary(p)
		rest = "Remaining " + strings.ToLower(s[:1]) + s[1:]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Fetched: %s is %s. %s", p.Ref, p.Commit, rest)
	if p.Ships != nil && p.Ships.Direction != "same" {
		// Only now, with the commit fetched, is it known what ships.
		b.WriteString("\n")
		writeShips(&b, p)
	}
	return strings.TrimRight(b.String(), "\n")
}
