// Package services turns a service of desired.yaml into the command that
// restarts or reloads it under its manager: systemd, supervisor, or the
// user's own commands.
package services

import (
	"fmt"
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
		// reload-or-restart reloads a running unit and starts a stopped
		// one: a reload on the first deploy must start the service.
		verb := "restart"
		if s.Action == desired.ActionReload {
			verb = "reload-or-restart"
		}
		return "systemctl " + verb + " " + Quote(s.Unit), nil
	case desired.ManagerSupervisor:
		ctl := strings.Join(supervisorctl(s), " ")
		prog := Quote(s.Program)
		// supervisorctl's exit status is not reliable across versions, and
		// restarting a stopped program prints "ERROR (not running)" before
		// "started": success is the word it prints when it did the job.
		judge := `printf '%s\n' "$out"; case "$out" in *"$want"*) exit 0;; esac; exit 1`
		if s.Action != desired.ActionReload {
			return fmt.Sprintf("out=$(%s restart %s 2>&1); want=': started'; %s", ctl, prog, judge), nil
		}
		// supervisorctl has no reload of one program; "signal HUP" is what
		// a graceful reload of gunicorn or puma needs. A program that is
		// not running (the first deploy: autostart=false) has nothing to
		// signal, and "signal" fails with "not running": start it instead.
		// Signal first, and start only what answers "not running": one
		// supervisorctl call on the path every deploy takes (each costs
		// 0.3-3 s of Python start-up), two on a first deploy.
		return fmt.Sprintf(`out=$(%[1]s signal HUP %[2]s 2>&1); want=': signalled'; case "$out" in *"$want"*) ;; *"not running"*) out=$(%[1]s start %[2]s 2>&1); want=': started';; esac; %[3]s`, ctl, prog, judge), nil
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

// StateScript returns the shell command that prints the state the
// service's manager gives it (supervisor: STOPPED, FATAL; systemd:
// inactive, failed), or "" when its manager has none.
func StateScript(s desired.Service) string {
	switch s.Manager {
	case desired.ManagerSystemd:
		return "systemctl show -p ActiveState --value " + Quote(s.Unit)
	case desired.ManagerSupervisor:
		return strings.Join(append(supervisorctl(s), "status", Quote(s.Program)), " ")
	}
	return ""
}

// ParseState reads what StateScript printed: the state as the manager
// names it, or "" when the output holds none (an error message).
func ParseState(s desired.Service, out string) string {
	word := func(w string, lo, hi rune) bool {
		return w != "" && strings.IndexFunc(w, func(r rune) bool { return (r < lo || r > hi) && r != '-' && r != '_' }) < 0
	}
	switch s.Manager {
	case desired.ManagerSystemd:
		if w := strings.TrimSpace(out); word(w, 'a', 'z') {
			return w
		}
	case desired.ManagerSupervisor:
		// "web   STOPPED   Not started": the program, then its state.
		line, _, _ := strings.Cut(out, "\n")
		if f := strings.Fields(line); len(f) >= 2 && (f[0] == s.Program || strings.HasSuffix(s.Program, ":*") && strings.HasPrefix(f[0], strings.TrimSuffix(s.Program, "*"))) && word(f[1], 'A', 'Z') {
			return f[1]
		}
	}
	return ""
}
