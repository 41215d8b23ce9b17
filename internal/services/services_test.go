package services

import (
	"bytes"
	"context"
	"io"
	"net"
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

// TestSupervisorActions runs the actions against a real supervisord whose
// program is not started, as the shipped example has it (autostart=false),
// both ways: supervisorctl's script and the XML-RPC client. A reload on
// the first deploy starts it; a reload of the running program signals it,
// without a restart (same pid); a restart restarts it.
func TestSupervisorActions(t *testing.T) {
	for _, via := range []string{"script", "xml-rpc"} {
		t.Run(via, func(t *testing.T) { testSupervisorActions(t, via) })
	}
}

func testSupervisorActions(t *testing.T, via string) {
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
	act := func(svc desired.Service) (string, error) {
		var out bytes.Buffer
		if via == "xml-rpc" {
			s, why := SupervisorRPC(svc.Supervisor)
			if s == nil {
				t.Fatalf("SupervisorRPC(%+v): not known: %s", svc.Supervisor, why)
			}
			err := s.Act(context.Background(), svc, &out)
			if err != nil {
				out.WriteString(err.Error())
			}
			return out.String(), err
		}
		script, err := Script(svc)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
		return out.String(), err
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
		{"reload of an unknown program fails", svc("reload", "nosuch"), false, map[string]string{"script": "ERROR (no such process)", "xml-rpc": "BAD_NAME"}[via], true, ""},
	}
	before := 0
	for _, st := range steps {
		out, err := act(st.svc)
		if (err == nil) != st.ok || !strings.Contains(out, st.out) {
			t.Fatalf("%s: error %v, printed %q; want success %v and %q", st.name, err, out, st.ok, st.out)
		}
		if st.wait != "" {
			waitFile(st.wait)
		}
		after := pid()
		if after <= 0 {
			t.Fatalf("%s: the program is not running: %s", st.name, sup.Ctl(t, "status", "web"))
		}
		if via == "xml-rpc" {
			s, _ := SupervisorRPC(st.svc.Supervisor)
			info, err := s.ProcessInfo(context.Background(), "web")
			if err != nil || info.PID != after || info.State != "RUNNING" {
				t.Errorf("%s: ProcessInfo = %+v, %v; want pid %d, RUNNING", st.name, info, err, after)
			}
		}
		if (after == before) != st.samePID {
			t.Errorf("%s: pid %d before, %d after; same pid wanted: %v", st.name, before, after, st.samePID)
		}
		before = after
	}
}

// TestSupervisorRPCServer finds the server as supervisorctl does: -s, or
// the [supervisorctl] section of the config; nil where supervisorctl
// would search further.
func TestSupervisorRPCServer(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SUP_TEST_DIR", "/run/x")
	conf := func(text string) string {
		f, err := os.CreateTemp(dir, "*.conf")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(text); err != nil {
			t.Fatal(err)
		}
		return f.Name()
	}
	tests := []struct {
		name   string
		conn   desired.SupervisorConn
		server string // "" for not known
	}{
		{"server url wins", desired.SupervisorConn{ServerURL: "unix:///run/s.sock", Config: "/nonexistent"}, "unix:///run/s.sock"},
		{"debian's config", desired.SupervisorConn{Config: conf("[unix_http_server]\nfile=/var/run/supervisor.sock   ; (the path to the socket file)\nchmod=0700\n\n[supervisorctl]\nserverurl=unix:///var/run/supervisor.sock ; use a unix:// URL  for a unix socket\n")}, "unix:///var/run/supervisor.sock"},
		{"here", desired.SupervisorConn{Config: conf("[supervisorctl]\nserverurl = unix://%(here)s/s.sock\n")}, "unix://" + dir + "/s.sock"},
		{"environment", desired.SupervisorConn{Config: conf("[supervisorctl]\nserverurl: unix://%(ENV_SUP_TEST_DIR)s/s.sock\n")}, "unix:///run/x/s.sock"},
		{"inet", desired.SupervisorConn{Config: conf("[supervisorctl]\nserverurl=http://127.0.0.1:9002\n")}, "http://127.0.0.1:9002"},
		{"password never shown", desired.SupervisorConn{ServerURL: "http://admin:s3cret@127.0.0.1:9002"}, "http://admin:xxxxx@127.0.0.1:9002"},
		{"supervisorctl's default", desired.SupervisorConn{Config: conf("[supervisorctl]\nprompt=x\n")}, "http://localhost:9001"},
		{"no section", desired.SupervisorConn{Config: conf("[supervisord]\nnodaemon=true\n")}, ""},
		{"unknown expansion", desired.SupervisorConn{Config: conf("[supervisorctl]\nserverurl=unix://%(host_node_name)s.sock\n")}, ""},
		{"relative socket", desired.SupervisorConn{Config: conf("[supervisorctl]\nserverurl=unix://s.sock\n")}, ""},
		{"unreadable", desired.SupervisorConn{Config: filepath.Join(dir, "nonexistent.conf")}, ""},
		{"nothing named", desired.SupervisorConn{}, ""},
	}
	for _, tt := range tests {
		s, why := SupervisorRPC(tt.conn)
		switch {
		case tt.server == "" && s != nil:
			t.Errorf("%s: server %s; want not known", tt.name, s.Server)
		case tt.server == "" && why == "":
			t.Errorf("%s: not known, and no reason", tt.name)
		case tt.server != "" && (s == nil || s.Server != tt.server):
			t.Errorf("%s: %+v (%s); want server %s", tt.name, s, why, tt.server)
		}
	}
}

// TestSupervisorRPCGroup acts on a group: a reload starts its stopped
// programs, then signals them; a restart restarts them.
func TestSupervisorRPCGroup(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hup.py"), []byte(hupProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sup := supervisortest.Start(t, `[program:a]
command=/usr/bin/python3 `+dir+`/hup.py `+dir+`/a
autostart=false
autorestart=false
startsecs=0
[program:b]
command=/usr/bin/python3 `+dir+`/hup.py `+dir+`/b
autostart=false
autorestart=false
startsecs=0
[group:g]
programs=a,b
`)
	s, why := SupervisorRPC(desired.SupervisorConn{Config: sup.Config})
	if s == nil {
		t.Fatal(why)
	}
	ctx := context.Background()
	for _, st := range []struct{ action, want string }{
		{"reload", "g:a: started\ng:b: started\n"},
		{"reload", "g:a: signalled\ng:b: signalled\n"},
		{"restart", "g:a: stopped\ng:b: stopped\ng:a: started\ng:b: started\n"},
	} {
		var out bytes.Buffer
		if err := s.Act(ctx, desired.Service{Name: "g", Manager: "supervisor", Action: st.action, Program: "g:*"}, &out); err != nil {
			t.Fatalf("%s: %v", st.action, err)
		}
		if out.String() != st.want {
			t.Errorf("%s printed %q; want %q", st.action, out.String(), st.want)
		}
		// A HUP before the program handles it would end it: wait until
		// both say they are ready.
		for _, p := range []string{"a", "b"} {
			if !strings.Contains(st.want, "started") {
				break
			}
			waitFile(t, filepath.Join(dir, p, "ready"))
			os.Remove(filepath.Join(dir, p, "ready"))
		}
		for _, p := range []string{"g:a", "g:b"} {
			if info, err := s.ProcessInfo(ctx, p); err != nil || info.State != "RUNNING" || info.PID <= 0 {
				t.Errorf("after %s: %s: %+v, %v", st.action, p, info, err)
			}
		}
	}
	if err := s.Act(ctx, desired.Service{Name: "x", Manager: "supervisor", Action: "reload", Program: "nosuch:*"}, io.Discard); err == nil || !strings.Contains(err.Error(), "BAD_NAME") {
		t.Errorf("reload of an unknown group: %v; want BAD_NAME", err)
	}
}

// waitFile waits until name exists: a program wrote it.
func waitFile(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(name); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not written within a minute", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A password in the server URL reaches the server, never a message: a
// server that does not answer is named without it.
func TestSupervisorRPCNeverShowsThePassword(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	s, why := SupervisorRPC(desired.SupervisorConn{ServerURL: "http://admin:s3cret@" + addr})
	if s == nil {
		t.Fatal(why)
	}
	ctx := context.Background()
	_, err = s.ProcessInfo(ctx, "web")
	err2 := s.Act(ctx, desired.Service{Name: "web", Manager: "supervisor", Action: "reload", Program: "web"}, io.Discard)
	for _, e := range []error{err, err2} {
		if e == nil || strings.Contains(e.Error(), "s3cret") || !strings.Contains(e.Error(), addr) {
			t.Errorf("error %v: want one naming %s without the password", e, addr)
		}
	}
}
