// Package services turns a service of desired.yaml into the command that
// restarts or reloads it under its manager: systemd, supervisor, or the
// user's own commands.
package services

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

// Script returns the shell command that performs the service's action.
func Script(s desired.Service) (string, error) {
	switch s.Manager {
	case desired.ManagerCommand:
		if s.Action == desired.ActionReload {
			return s.Reload, nil
		}
		return s.Restart, nil
	case desired.ManagerSystemd:
		return "systemctl " + s.Action + " " + Quote(s.Unit), nil
	case desired.ManagerSupervisor:
		args := supervisorctl(s)
		// supervisorctl has no reload of one program; "signal HUP" is
		// what a graceful reload of gunicorn or puma needs.
		want := ": started"
		if s.Action == desired.ActionReload {
			args = append(args, "signal", "HUP", Quote(s.Program))
			want = ": signalled"
		} else {
			args = append(args, "restart", Quote(s.Program))
		}
		// supervisorctl's exit status is not reliable across versions, and
		// restarting a stopped program prints "ERROR (not running)" before
		// "started": success is the word it prints when it did the job.
		return fmt.Sprintf("out=$(%s 2>&1); printf '%%s\\n' \"$out\"; case \"$out\" in *%q*) exit 0;; esac; exit 1", strings.Join(args, " "), want), nil
	}
	return "", fmt.Errorf("service %s: unknown manager %q", s.Name, s.Manager)
}

// supervisorctl is the command line that reaches the service's supervisord.
func supervisorctl(s desired.Service) []string {
	args := []string{"supervisorctl"}
	if s.Supervisor.Config != "" {
		args = append(args, "-c", Quote(s.Supervisor.Config))
	}
	if s.Supervisor.ServerURL != "" {
		args = append(args, "-s", Quote(s.Supervisor.ServerURL))
	}
	return args
}

// Quote quotes s for sh.
func Quote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%_-+=:,./", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// PIDScript returns the shell command that prints the service's main PID,
// or "" when the service names a pidfile (read directly) or its manager
// has no notion of one.
func PIDScript(s desired.Service) string {
	if s.PIDFile != "" {
		return ""
	}
	switch s.Manager {
	case desired.ManagerSystemd:
		return "systemctl show -p MainPID --value " + Quote(s.Unit)
	case desired.ManagerSupervisor:
		args := supervisorctl(s)
		return strings.Join(append(args, "pid", Quote(s.Program)), " ")
	}
	return ""
}

// HasPID reports whether the reconciler can find the service's processes.
func HasPID(s desired.Service) bool { return s.PIDFile != "" || PIDScript(s) != "" }

// ParsePID reads a PID as a pidfile or a manager prints it.
func ParsePID(out string) (int, error) {
	f := strings.Fields(out)
	if len(f) == 0 {
		return 0, fmt.Errorf("no pid")
	}
	pid, err := strconv.Atoi(f[len(f)-1])
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("not a pid: %q", strings.TrimSpace(out))
	}
	return pid, nil
}
