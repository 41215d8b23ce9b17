package procs

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// Placement is where a service's processes run: its main process and the
// main process's live descendants.
type Placement struct {
	PID   int       // the main process
	Procs []Process // the main process first, then its descendants; live ones only
}

// Process is one process of a service.
type Process struct {
	PID int
	// Cwd is its working directory as the kernel resolved it, without the
	// " (deleted)" the kernel adds once the directory is removed; "" when
	// it may not be read.
	Cwd string
	// Release is the release directory it runs from (its working
	// directory or a folder inside it): a name under releasesDir. "" when
	// it runs outside releasesDir or its Cwd is unknown.
	Release string
}

// Releases returns the releases the processes run from, sorted, each once.
func (p Placement) Releases() []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range p.Procs {
		if x.Release != "" && !seen[x.Release] {
			seen[x.Release] = true
			out = append(out, x.Release)
		}
	}
	sort.Strings(out)
	return out
}

// InOtherReleases returns the processes that run from a release other than
// release: they serve another release's code. Processes outside every
// release, or whose directory is unknown, are not judged.
func (p Placement) InOtherReleases(release string) []Process {
	var out []Process
	for _, x := range p.Procs {
		if x.Release != "" && x.Release != release {
			out = append(out, x)
		}
	}
	return out
}

// Where finds the service's main process (see MainPID, whose errors it
// returns) and says, for it and each live descendant, which release under
// releasesDir it runs from. releasesDir may itself lie behind a symbolic
// link: the kernel reports resolved directories, so Where resolves it too.
// It only reads: the pidfile, /proc, and the manager's pid query.
func Where(ctx context.Context, r *runner.Runner, svc desired.Service, root string, env []string, releasesDir string) (Placement, error) {
	pid, err := MainPID(ctx, r, svc, root, env)
	if err != nil {
		return Placement{}, err
	}
	return Place(pid, releasesDir)
}

// Place says where the process pid and its children run, relative to
// releasesDir: the part of Where that reads only /proc, for a caller that
// polls a main process it already found (a reload keeps gunicorn's master
// pid; asking the manager again costs a supervisorctl start-up per poll).
func Place(pid int, releasesDir string) (Placement, error) {
	if real, err := filepath.EvalSymlinks(releasesDir); err == nil {
		releasesDir = real
	}
	prefix := filepath.Clean(releasesDir) + "/"
	pl := Placement{PID: pid}
	for _, p := range Tree(pid) {
		if !Alive(p) {
			continue
		}
		x := Process{PID: p}
		if cwd, err := Cwd(p); err == nil {
			x.Cwd = strings.TrimSuffix(cwd, " (deleted)")
			if rel, ok := strings.CutPrefix(x.Cwd, prefix); ok {
				x.Release, _, _ = strings.Cut(rel, "/")
			}
		}
		pl.Procs = append(pl.Procs, x)
	}
	if len(pl.Procs) == 0 {
		// It was alive a moment ago, when MainPID looked.
		return Placement{}, &NotRunningError{Why: fmt.Sprintf("pid %d is gone", pid)}
	}
	return pl, nil
}
