package services

import (
	"testing"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

func TestScripts(t *testing.T) {
	sup := desired.SupervisorConn{Config: "/etc/sup ervisor.conf"}
	tests := []struct {
		svc         desired.Service
		script, pid string
	}{
		{desired.Service{Manager: "command", Action: "restart", Restart: "r", Reload: "h"}, "r", ""},
		{desired.Service{Manager: "command", Action: "reload", Restart: "r", Reload: "h"}, "h", ""},
		{desired.Service{Manager: "systemd", Action: "reload", Unit: "web@1.service"}, "systemctl reload web@1.service", "systemctl show -p MainPID --value web@1.service"},
		{desired.Service{Manager: "supervisor", Action: "restart", Program: "web", Supervisor: sup},
			`out=$(supervisorctl -c '/etc/sup ervisor.conf' restart web 2>&1); printf '%s\n' "$out"; case "$out" in *": started"*) exit 0;; esac; exit 1`,
			"supervisorctl -c '/etc/sup ervisor.conf' pid web"},
		{desired.Service{Manager: "supervisor", Action: "reload", Program: "web", Supervisor: desired.SupervisorConn{ServerURL: "unix:///run/s.sock"}},
			`out=$(supervisorctl -s unix:///run/s.sock signal HUP web 2>&1); printf '%s\n' "$out"; case "$out" in *": signalled"*) exit 0;; esac; exit 1`,
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
	for in, want := range map[string]int{"123\n": 123, "web: 77": 77} {
		if got, err := ParsePID(in); err != nil || got != want {
			t.Errorf("ParsePID(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0", "-3", "ERROR (no such process)"} {
		if _, err := ParsePID(in); err == nil {
			t.Errorf("ParsePID(%q) accepted", in)
		}
	}
}
