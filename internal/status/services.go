package status

import (
	"context"
	"errors"
	"os"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/procs"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// Service is where a service's processes run from.
type Service struct {
	Name     string   `json:"name"`
	PID      int      `json:"pid,omitempty"`
	Procs    int      `json:"processes,omitempty"` // the main process and its descendants
	Releases []string `json:"releases,omitempty"`  // the releases they run from, and the directories outside releases/
	Note     string   `json:"note,omitempty"`      // why nothing is known
}

// ObserveServices finds each service's processes and the releases they run
// from, as procs.Where says. It only reads: a pidfile, /proc, and the
// manager's pid query.
func ObserveServices(ctx context.Context, d *desired.State, r *runner.Runner) []Service {
	releases := layout.New(d.Root, d.Link).ReleasesDir()
	var out []Service
	for _, svc := range d.Services {
		s := Service{Name: svc.Name}
		pl, err := procs.Where(ctx, r, svc, d.Root, os.Environ(), releases)
		switch {
		case errors.Is(err, procs.ErrNoPID):
			s.Note = "no pidfile: processes unknown"
		case errors.Is(err, procs.ErrNotRunning):
			s.Note = err.Error() // "not running (supervisor: STOPPED)"
		case err != nil:
			s.Note = "processes unknown: " + err.Error()
		default:
			s.PID, s.Procs = pl.PID, len(pl.Procs)
			s.Releases = pl.Releases()
			// A process outside every release is shown by its directory.
			seen := map[string]bool{}
			for _, p := range pl.Procs {
				if p.Release == "" && p.Cwd != "" && !seen[p.Cwd] {
					seen[p.Cwd] = true
					s.Releases = append(s.Releases, p.Cwd)
				}
			}
		}
		out = append(out, s)
	}
	return out
}
