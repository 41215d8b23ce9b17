package procs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/services"
)

// ErrNoPID is returned by MainPID for a service whose processes the
// reconciler cannot find: a command service without a pidfile.
var ErrNoPID = errors.New("no pidfile, and its manager reports none")

// ErrNotRunning is what every NotRunningError is: the service has no live
// main process. Match it with errors.Is.
var ErrNotRunning = errors.New("not running")

// NotRunningError is a service without a live main process, and what says
// so: "supervisor: STOPPED", "pid 4242 from run/web.pid is gone".
type NotRunningError struct {
	Why string
}

func (e *NotRunningError) Error() string {
	if e.Why == "" {
		return "not running"
	}
	return "not running (" + e.Why + ")"
}

// Is makes errors.Is(err, ErrNotRunning) true.
func (e *NotRunningError) Is(target error) bool { return target == ErrNotRunning }

// maxPIDFile is the most a pidfile may hold: a pid and a newline, with
// room to spare. Anything bigger is not a pidfile.
const maxPIDFile = 32

// pidQueryTimeout bounds a manager's answer to "what is the pid".
const pidQueryTimeout = 30 * time.Second

// MainPID finds the service's main process: its pidfile (relative to root
// when not absolute), or what its manager reports. It returns the pid of a
// live process; a *NotRunningError when there is none; ErrNoPID when the
// service has no pidfile and its manager reports no pid; or another error,
// whose message is a sentence fit for a person, when the question could not
// be answered. It never echoes a pidfile's content.
func MainPID(ctx context.Context, r *runner.Runner, svc desired.Service, root string, env []string) (int, error) {
	if svc.PIDFile != "" {
		return pidFromFile(svc.PIDFile, root)
	}
	script := services.PIDScript(svc)
	if script == "" {
		return 0, ErrNoPID
	}
	out, err := query(ctx, r, "pid "+svc.Name, script, root, env)
	if err != nil {
		return 0, fmt.Errorf("ask %s for the pid of %s: %w", svc.Manager, svc.Name, err)
	}
	// supervisorctl prints 0 for a stopped program, and exits 0 or not
	// depending on its version; systemd prints 0 for an inactive unit. The
	// number decides, not the exit status.
	f := strings.Fields(out)
	pid := -1
	if len(f) > 0 {
		if n, err := strconv.Atoi(f[len(f)-1]); err == nil {
			pid = n
		}
	}
	switch {
	case pid > 0 && Alive(pid):
		return pid, nil
	case pid > 0:
		return 0, &NotRunningError{Why: fmt.Sprintf("%s reports pid %d, which is gone", svc.Manager, pid)}
	case pid == 0:
		return 0, &NotRunningError{Why: state(ctx, r, svc, root, env)}
	}
	return 0, fmt.Errorf("ask %s for the pid of %s: no pid in its answer: %s", svc.Manager, svc.Name, lastLine(out))
}

// state is "supervisor: STOPPED" or "systemd: failed": the manager's word
// for a service that has no process, or just the manager's name when it
// gives none.
func state(ctx context.Context, r *runner.Runner, svc desired.Service, root string, env []string) string {
	if script := services.StateScript(svc); script != "" {
		out, _ := query(ctx, r, "state "+svc.Name, script, root, env)
		if st := services.ParseState(svc, out); st != "" {
			return svc.Manager + ": " + st
		}
	}
	return svc.Manager + " reports no pid"
}

// query runs a manager's query and returns what it printed. A non-zero exit
// status is not an error: managers use it for answers ("not running"). A
// command that could not run or did not finish is.
func query(ctx context.Context, r *runner.Runner, name, script, root string, env []string) (string, error) {
	var out bytes.Buffer
	err := r.Run(ctx, runner.Command{Name: name, Script: script, Dir: root, Env: env, Timeout: pidQueryTimeout, Output: &out})
	var re *runner.Error
	switch {
	case err == nil:
	case errors.As(err, &re) && re.ExitCode > 0:
		// A shell that could not find the command (127) printed why; the
		// caller shows it when it finds no answer in the output.
	case errors.As(err, &re) && re.TimedOut:
		return "", fmt.Errorf("no answer within %s", pidQueryTimeout)
	default:
		return "", err
	}
	return out.String(), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return "(nothing)"
}

// pidFromFile reads a pidfile with care: it may be written by the service,
// so it is not trusted. A symbolic link is refused (it could name
// /etc/shadow or /dev/zero), so is anything but a small regular file, and
// a FIFO does not block the open. Its content never appears in an error.
func pidFromFile(name, root string) (int, error) {
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return 0, &NotRunningError{Why: "no pidfile " + name}
	case errors.Is(err, syscall.ELOOP):
		return 0, fmt.Errorf("pidfile %s is a symbolic link: it must be a regular file", name)
	case err != nil:
		return 0, fmt.Errorf("pidfile %s: %w", name, cause(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return 0, fmt.Errorf("pidfile %s: %w", name, cause(err))
	case !fi.Mode().IsRegular():
		return 0, fmt.Errorf("pidfile %s is not a regular file (%s)", name, fi.Mode().Type())
	case fi.Size() > maxPIDFile:
		return 0, fmt.Errorf("pidfile %s holds %d bytes, more than a pid", name, fi.Size())
	}
	// The size can change between the stat and the read: read no more
	// than a pidfile may hold, plus one byte to notice a bigger one.
	b, err := io.ReadAll(io.LimitReader(f, maxPIDFile+1))
	if err != nil {
		return 0, fmt.Errorf("pidfile %s: %w", name, cause(err))
	}
	if len(b) > maxPIDFile {
		return 0, fmt.Errorf("pidfile %s holds more than a pid", name)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, &NotRunningError{Why: "pidfile " + name + " is empty"}
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s does not hold a pid", name)
	}
	if !Alive(pid) {
		return 0, &NotRunningError{Why: fmt.Sprintf("pid %d from %s is gone", pid, name)}
	}
	return pid, nil
}

// cause is what went wrong with a file, without the path an *os.PathError
// repeats: the caller names the pidfile as the user wrote it.
func cause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
