package plan

import (
	"strings"

	"github.com/reconciler-dev/reconciler/internal/stepcache"
)

// Describe is the one-line description of a step, without its reason: the
// same words in the plan, the live view and the history.
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
		name := s.Name
		if s.Rerun {
			name += " again"
		}
		if s.RunAs != "" {
			name += " (as " + s.RunAs + ")"
		}
		if c := s.Cache; c != nil {
			switch {
			case c.Hit:
				name += " (cached: key " + stepcache.Short(c.Key) + "…, from release " + c.From + ")"
			case c.Key != "":
				name += " (cache miss: key " + stepcache.Short(c.Key) + "…, fills cache/" + s.Name + "/" + stepcache.Short(c.Key) + "…)"
			default:
				name += " (cached by " + strings.Join(c.KeyFiles, ", ") + "; the key is " + c.Why + ")"
			}
		}
		return name
	case Switch:
		return s.Name + " -> " + s.Detail
	case Service:
		return s.Detail + " " + s.Name
	case Prune:
		if s.CacheEntry != "" {
			step, key, _ := stepcache.SplitEntry(s.CacheEntry)
			return "cache entry " + step + "/" + stepcache.Short(key) + "…"
		}
		return "release " + s.Release
	case Health:
		return s.Detail
	case Preflight:
		if s.RunAs != "" {
			return s.Detail + " (as " + s.RunAs + ")"
		}
		return s.Detail
	case Fail:
		return "release " + s.Release + " at step " + s.Name
	case Reverse:
		d := s.Detail + " with the code of release " + s.In
		if s.RunAs != "" {
			d += " (as " + s.RunAs + ")"
		}
		return d
	case Schema:
		return s.Detail
	case Record:
		d := "the migrations of release " + s.Release
		if s.RunAs != "" {
			d += " (as " + s.RunAs + ")"
		}
		if s.Replan {
			d += ", then plan again"
		}
		return d
	}
	return s.Name
}
