package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// RenderText writes the plan for people, like terraform plan: one line a
// step with its symbol and reason, then a summary line, or "No changes.".
func RenderText(w io.Writer, p *Plan) error {
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
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	b.WriteString("\n")
	if p.Blocked != nil {
		bl := p.Blocked
		fmt.Fprintf(&b, "Blocked: release %s of this target failed at step %s (%s):\n  %s\n", bl.Release, bl.Step, bl.At, indent(bl.Error))
		b.WriteString("Not retrying a failed target. Run `reconciler apply --retry` to try it again, or change source.commit or the build.\n")
		if !p.Changes() {
			if p.Holding != "" {
				fmt.Fprintf(&b, "The host stays on %s, the last good release.\n", p.Holding)
			}
			_, err := io.WriteString(w, b.String())
			return err
		}
		fmt.Fprintf(&b, "\nTo keep the host on %s, the last good release, reconciler will perform these steps:\n\n", p.Holding)
	} else if !p.Changes() {
		fmt.Fprintf(&b, "No changes. %s points at %s, which is what desired.yaml asks for.\n", p.Link, p.Target)
		_, err := io.WriteString(w, b.String())
		return err
	} else {
		b.WriteString("Reconciler will perform these steps:\n\n")
	}
	for _, s := range p.Steps {
		fmt.Fprintf(&b, "  %-2s %-8s %s\n", s.Action.Symbol(), s.Action, Describe(s))
		fmt.Fprintf(&b, "              # %s\n", s.Reason)
	}
	fmt.Fprintf(&b, "\n%s\n", Summary(p))
	_, err := io.WriteString(w, b.String())
	return err
}

// Describe is the one-line description of a step, without its reason.
func Describe(s Step) string {
	switch s.Action {
	case Fetch:
		return "git cache"
	case Create:
		return "release " + s.Release
	case Export:
		return s.Detail + " into release " + s.Release
	case Shared:
		return s.Detail
	case Build, Migrate:
		return s.Name
	case Switch:
		return s.Name + " -> " + s.Detail
	case Service:
		return s.Detail + " " + s.Name
	case Prune:
		return "release " + s.Release
	case Health:
		return s.Detail
	}
	return s.Name
}

// Summary is the plan's last line.
func Summary(p *Plan) string {
	count := map[Action]int{}
	for _, s := range p.Steps {
		count[s.Action]++
	}
	var parts []string
	add := func(n int, one, many string) {
		if n == 1 {
			parts = append(parts, "1 "+one)
		} else if n > 1 {
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(count[Fetch], "fetch", "fetches")
	add(count[Create], "release to create", "releases to create")
	add(count[Export]+count[Shared]+count[Build]+count[Migrate], "build step", "build steps")
	add(count[Switch], "switch", "switches")
	add(count[Service], "service action", "service actions")
	add(count[Health], "health check", "health checks")
	add(count[Prune], "release to prune", "releases to prune")
	return "Plan: " + strings.Join(parts, ", ") + "."
}

func indent(s string) string { return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") }

// RenderJSON writes the plan as one JSON document.
func RenderJSON(w io.Writer, p *Plan) error {
	cp := *p
	if cp.Steps == nil {
		cp.Steps = []Step{} // [] rather than null, for jq users
	}
	out := struct {
		*Plan
		Changes bool `json:"changes"`
	}{&cp, p.Changes()}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
