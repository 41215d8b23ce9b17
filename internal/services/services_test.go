package services

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/services/supervisortest"
)

func TestScripts(t *testing.T) {
	sup := desired.SupervisorConn{Config: "/etc/sup ervisor.conf"}
	tests := []struct {
		svc         desired.Service
		script, pid string
	}{
		{desired.Service{Manager: "command", Action: "restart", Restart: "r", Reload: "h"}, "r", ""},
		{desired.Service{Manager: "command", Action: "reload", Restart: "r", Reload: "h"}, "h", ""},
		{desired.Service{Manager: "systemd", Action: "reload", Unit: "web@1.service"}, "systemctl reload-or-restart web@1.service", "systemctl show -p MainPID --value web@1.service"},
		{desired.Service{Manager: "systemd", Action: "restart", Unit: "web@1.service"}, "systemctl restart web@1.service", "systemctl show -p MainPID --value web@1.service"},
		{desired.Service{Manager: "supervisor", Action: "restart", Program: "web", Supervisor: sup},
			`out=$(supervisorctl -c '/etc/sup ervisor.conf' restart web 2>&1); want=': started'; printf '%s\n' "$out"; case "$out" in *"$want"*) exit 0;; esac; exit 1`,
			"supervisorctl -c '/etc/sup ervisor.conf' pid web"},
		{desired.Service{Manager: "supervisor", Action: "reload", Program: "web", Supervisor: desired.SupervisorConn{ServerURL: "unix:///run/s.sock"}},
			`out=$(supervisorctl -s unix:///run/s.sock signal HUP web 2>&1); want=': signalled'; case "$out" in *"$want"*) ;; *"not running"*) out=$(supervisorctl -s unix:///run/s.sock start web 2>&1); want=': started';; esac; printf '%s\n' "$out"; case "$out" in *"$want"*) exit 0;; esac; exit 1`,
			"supervisorctl -s unix:///run/s.sock pid web"},
		{desired.Service{Manager: "supervisor", Action: "restart", Program: "web", PIDFile: "run/web.pid"}, "", ""},
	}
	for _, tt := range tests {
		got, err := Script(tt.svc)
		if err != nil || (tt.script != "" && got != tt.script) {
			t.Errorf("Script(%+v) = %q, %v; want %q", tt.svc, got, err, tt.script)
		}
		if pid := PIDScript(tt.svc); pid != tt.pid {
			t.Errorf("PIDScript(%+v) = %q; want %q", tt.svc, pid, tt.pid)
		}
		if HasPID(tt.svc) != (tt.pid != "" || tt.svc.PIDFile != "") {
			t.Errorf("HasPID(%+v)", tt.svc)
		}
	}
	for in, want := range map[string]string{"web": "web", "a b": "'a b'", "it's": `'it'\''s'`, "": "''", "$(x)": "'$(x)'"} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s; want %s", in, got, want)
		}
	}
}

func TestParseState(t *testing.T) {
	sup := desired.Service{Manager: "supervisor", Program: "web"}
	group := desired.Service{Manager: "supervisor", Program: "web:*"}
	sd := desired.Service{Manager: "systemd", Unit: "web.service"}
	tests := []struct {
		svc       desired.Service
		out, want string
	}{
		{sup, "web                              STOPPED   Not started\n", "STOPPED"},
		{sup, "web                              FATAL     Exited too quickly (process log may have details)\n", "FATAL"},
		{sup, "web: ERROR (no such process)\n", ""},
		{sup, "unix:///tmp/s.sock no such file\n", ""},
		{sup, "other   STOPPED   Not started\n", ""},
		{group, "web:web_0   EXITED   Nov 26 04:37 AM\n", "EXITED"},
		{sd, "inactive\n", "inactive"},
		{sd, "failed", "failed"},
		{sd, "Failed to connect to bus: No such file or directory\n", ""},
		{desired.Service{Manager: "command"}, "STOPPED", ""},
	}
	for _, tt := range tests {
		if got := ParseState(tt.svc, tt.out); got != tt.want {
			t.Errorf("ParseState(%s, %q) = %q; want %q", tt.svc.Manager, tt.out, got, tt.want)
		}
	}
}

// hupProgram is a server that survives SIGHUP, as gunicorn does: it says
// it is ready once it handles the signal, and counts the signals.
const hupProgram = `import os, signal, sys
d = sys.argv[1]
def hup(*_):
    with open(os.path.join(d, "hups"), "a") as f:
        f.write("hup\n")
signal.signal(signal.SIGHUP, hup)
open(os.path.join(d, "ready"), "w").close()
while True:
    signal.pause()
`

// TestSupervisorActions runs the scripts against a real supervisord whose
// program is not started, as the shipped example has it (autostart=false):
// a reload on the first deploy starts it; a reload of the running program
// signals it, without a restart (same pid); a restart restarts it.
func TestSupervisorActions(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hup.py"), []byte(hupProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	sup := supervisortest.Start(t, `[program:web]
command=/usr/bin/python3 `+dir+`/hup.py `+dir+`
autostart=false
autorestart=false
startsecs=0
`)
	svc := func(action, program string) desired.Service {
		return desired.Service{Name: "web", Manager: "supervisor", Action: action, Program: program, Supervisor: desired.SupervisorConn{Config: sup.Config}}
	}
	pid := func() int {
		t.Helper()
		n, _ := strconv.Atoi(strings.TrimSpace(sup.Ctl(t, "pid", "web")))
		return n
	}
	// waitFile waits until the program wrote name (it does once the
	// signal handler is in place, or once it handled a HUP).
	waitFile := func(name string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil && (name != "hups" || len(b) > 0) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the program did not write %s within a minute; supervisor says: %s", name, sup.Ctl(t, "status", "web"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	steps := []struct {
		name    string
		svc     desired.Service
		ok      bool
		out     string // what the script printed
		samePID bool   // the program kept its pid
		wait    string // the file the program writes after the step
	}{
		{"reload of a stopped program starts it", svc("reload", "web"), true, "web: started", false, "ready"},
		{"reload of a running program signals it", svc("reload", "web"), true, "web: signalled", true, "hups"},
		{"restart restarts it", svc("restart", "web"), true, "web: started", false, ""},
		{"reload of an unknown program fails", svc("reload", "nosuch"), false, "ERROR (no such process)", true, ""},
	}
	before := 0
	for _, st := range steps {
		script, err := Script(st.svc)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
		if (err == nil) != st.ok || !strings.Contains(out.String(), st.out) {
			t.Fatalf("%s: exit %v, printed %q; want success %v and %q", st.name, err, out.String(), st.ok, st.out)
		}
		if st.wait != "" {
			waitFile(st.wait)
		}
		after := pid()
		if after <= 0 {
			t.Fatalf("%s: the program is not running: %s", st.name, sup.Ctl(t, "status", "web"))
		}
		if (after == before) != st.samePID {
			t.Errorf("%s: pid %d before, %d after; same pid wanted: %v", st.name, before, after, st.samePID)
		}
		before = after
	}
}
