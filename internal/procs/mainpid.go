package procs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/services"
)

// ErrNoPID is returned by MainPID for a service whose processes the
// reconciler cannot find: a command service without a pidfile.
var ErrNoPID = errors.New("no pidfile, and its manager reports none")

// MainPID finds the service's main process: its pidfile (relative to root
// when not absolute), or what its manager reports.
func MainPID(ctx context.Context, r *runner.Runner, svc desired.Service, root string, env []string) (int, error) {
	if svc.PIDFile != "" {
		path := svc.PIDFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(root, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		pid, err := services.ParsePID(string(b))
		if err == nil && !Alive(pid) {
			err = fmt.Errorf("pid %d from %s is not running", pid, path)
		}
		return pid, err
	}
	script := services.PIDScript(svc)
	if script == "" {
		return 0, ErrNoPID
	}
	var out bytes.Buffer
	err := r.Run(ctx, runner.Command{Name: "pid " + svc.Name, Script: script, Dir: root, Env: env, Timeout: 30 * time.Second, Output: &out})
	if err != nil {
		return 0, fmt.Errorf("%s: %s", strings.TrimSpace(out.String()), err)
	}
	return services.ParsePID(out.String())
}
