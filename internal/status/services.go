package status

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"

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
	Releases []string `json:"releases,omitempty"`  // the releases they run from
	Note     string   `json:"note,omitempty"`      // why nothing is known
}

// ObserveServices finds each service's processes and the releases they run
// from. It only reads: a pidfile, /proc, and the manager's pid query.
func ObserveServices(ctx context.Context, d *desired.State, r *runner.Runner) []Service {
	l := layout.New(d.Root, d.Link)
	releases := l.ReleasesDir()
	if real, err := filepath.EvalSymlinks(releases); err == nil {
		releases = real
	}
	var out []Service
	for _, svc := range d.Services {
		s := Service{Name: svc.Name}
		pid, note := mainPID(ctx, d, svc, r)
		if pid == 0 {
			s.Note = note
			out = append(out, s)
			continue
		}
		s.PID = pid
		seen := map[string]bool{}
		for _, p := range procs.Tree(pid) {
			if !procs.Alive(p) {
				continue
			}
			s.Procs++
			cwd, err := procs.Cwd(p)
			if err != nil {
				continue
			}
			where := cwd
			if rel, ok := strings.CutPrefix(cwd, releases+"/"); ok {
				where, _, _ = strings.Cut(rel, "/")
			}
			seen[where] = true
		}
		for k := range seen {
			s.Releases = append(s.Releases, k)
		}
		sort.Strings(s.Releases)
		out = append(out, s)
	}
	return out
}

func mainPID(ctx context.Context, d *desired.State, svc desired.Service, r *runner.Runner) (int, string) {
	pid, err := procs.MainPID(ctx, r, svc, d.Root, os.Environ())
	switch {
	case errors.Is(err, procs.ErrNoPID):
		return 0, "no pidfile: processes unknown"
	case err != nil:
		return 0, "not running: " + firstLine(err.Error())
	}
	return pid, ""
}
