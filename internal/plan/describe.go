package plan

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
		if s.RunAs != "" {
			return s.Name + " (as " + s.RunAs + ")"
		}
		return s.Name
	case Switch:
		return s.Name + " -> " + s.Detail
	case Service:
		return s.Detail + " " + s.Name
	case Prune:
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
	}
	return s.Name
}
