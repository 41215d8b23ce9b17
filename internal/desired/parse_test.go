package desired

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const valid = `app: broken_brackets
root: /var/broken_brackets
link: current
keep: 3
source:
  repo: git@github.com:example/broken_brackets.git
  commit: 8c0d2e4f
  path: ""
  ssh_key: /etc/reconciler/deploy_key
shared:
  dirs: [media, logs]
  files: [.env]
env:
  DJANGO_SETTINGS_MODULE: broken_brackets.settings
  A_NUMBER: 42
build:
  - name: venv
    run: python3 -m venv venv
    timeout: 5m
  - name: deps
    run: venv/bin/pip install -r requirements.txt
migrate:
  run: venv/bin/python manage.py migrate --noinput
services:
  - name: web
    manager: command
    action: reload
    restart: supervisorctl restart web
    reload: supervisorctl signal HUP web
  - name: worker
    manager: systemd
    unit: broken_brackets-celery.service
  - name: beat
    manager: supervisor
    program: beat
    supervisor: {config: /etc/supervisor/supervisord.conf}
schedule: "@every 5m"
`

func TestParseValid(t *testing.T) {
	s, err := Parse(strings.NewReader(valid), "/etc/desired.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &State{
		File: "/etc/desired.yaml", App: "broken_brackets", Root: "/var/broken_brackets", Link: "current", Keep: 3,
		Source: Source{Repo: "git@github.com:example/broken_brackets.git", Commit: "8c0d2e4f", SSHKey: "/etc/reconciler/deploy_key"},
		Shared: Shared{Dirs: []string{"media", "logs"}, Files: []string{".env"}},
		Env:    []EnvVar{{"A_NUMBER", "42"}, {"DJANGO_SETTINGS_MODULE", "broken_brackets.settings"}},
		Build: []Step{
			{Name: "venv", Run: "python3 -m venv venv", Timeout: 5 * time.Minute},
			{Name: "deps", Run: "venv/bin/pip install -r requirements.txt", Timeout: DefaultStepTimeout},
		},
		Migrate: &Step{Name: "migrate", Run: "venv/bin/python manage.py migrate --noinput", Timeout: DefaultStepTimeout},
		Services: []Service{
			{Name: "web", Manager: "command", Action: "reload", Restart: "supervisorctl restart web", Reload: "supervisorctl signal HUP web", Timeout: DefaultActionTimeout},
			{Name: "worker", Manager: "systemd", Action: "restart", Unit: "broken_brackets-celery.service", Timeout: DefaultActionTimeout},
			{Name: "beat", Manager: "supervisor", Action: "restart", Program: "beat", Supervisor: SupervisorConn{Config: "/etc/supervisor/supervisord.conf"}, Timeout: DefaultActionTimeout},
		},
		Schedule: "@every 5m",
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", s, want)
	}
}

func TestParseDefaultsAndRelativePaths(t *testing.T) {
	s, err := Parse(strings.NewReader("app: a\nroot: host\nsource: {repo: ../app, commit: main}\n"), "/srv/cfg/desired.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Root != "/srv/cfg/host" || s.Source.Repo != "/srv/app" || s.Link != "current" || s.Keep != 5 || s.Migrate != nil {
		t.Errorf("got root %q repo %q link %q keep %d migrate %v", s.Root, s.Source.Repo, s.Link, s.Keep, s.Migrate)
	}
}

func TestParseErrors(t *testing.T) {
	head := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\n"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", []string{"d.yaml:1:1: file is empty"}},
		{"comments only", "# nothing\n", []string{"d.yaml:1:1: file is empty"}},
		{"not a mapping", "- a\n- b\n", []string{"d.yaml:1:1: must be a mapping, got a list"}},
		{"syntax", "app: [a\n", []string{"d.yaml:1:1: invalid YAML: did not find expected ',' or ']'"}},
		{"tab indentation", "app: a\n\troot: /r\n", []string{"d.yaml:2:1: invalid YAML: found a tab character that violates indentation"}},
		{"missing required", "link: x\n", []string{
			"d.yaml:1:1: app: is required", "d.yaml:1:1: root: is required", "d.yaml:1:1: source: is required"}},
		{"unknown key with suggestion", head + "kepe: 3\n", []string{`d.yaml:4:1: kepe: unknown key "kepe" (did you mean "keep"?)`}},
		{"unknown key", head + "zzzzzzzz: 3\n", []string{`d.yaml:4:1: zzzzzzzz: unknown key "zzzzzzzz"; known keys: app, root, link, keep, source, shared, env, build, migrate, preflight, services, health, schedule, run_as, notify, fleet`}},
		{"run_as bad", head + "run_as: Deploy User\n", []string{`d.yaml:4:9: run_as: "Deploy User" is not a user name (lower-case letters, digits, _ and -, at most 32) or a uid`}},
		{"step run_as bad", head + "build: [{name: a, run: x, run_as: \"-x\"}]\n", []string{`d.yaml:4:35: build[0].run_as: "-x" is not a user name (lower-case letters, digits, _ and -, at most 32) or a uid`}},
		{"duplicate key", head + "app: b\n", []string{"d.yaml:4:1: app: duplicate key (first at line 1)"}},
		{"keep zero", head + "keep: 0\n", []string{"d.yaml:4:7: keep: must be between 1 and 1000, got 0"}},
		{"keep negative", head + "keep: -3\n", []string{"d.yaml:4:7: keep: must be between 1 and 1000, got -3"}},
		{"keep huge", head + "keep: 99999999999999999999\n", []string{"d.yaml:4:7: keep: must be between 1 and 1000, got 99999999999999999999"}},
		{"keep string", head + "keep: \"5\"\n", []string{"d.yaml:4:7: keep: must be an integer, got a string"}},
		{"app bad", "app: Bad/App\nroot: /r\nsource: {repo: /repo, commit: main}\n", []string{
			`d.yaml:1:6: app: "Bad/App" is not a valid app name: use lower-case letters, digits and _ . - (starting with a letter or digit), at most 64 characters`}},
		{"app list", "app: [a]\nroot: /r\nsource: {repo: /repo, commit: main}\n", []string{"d.yaml:1:6: app: must be a string, got a list"}},
		{"root slash", "app: a\nroot: /\nsource: {repo: /repo, commit: main}\n", []string{"d.yaml:2:7: root: must not be / itself: the reconciler owns what is under root"}},
		{"link slash", head + "link: ../current\n", []string{`d.yaml:4:7: link: "../current" is not a plain name: use letters, digits and _ . - only (no slashes)`}},
		{"link shell", head + "link: \"cur;rm -rf\"\n", []string{`d.yaml:4:7: link: "cur;rm -rf" is not a plain name: use letters, digits and _ . - only (no slashes)`}},
		{"link reserved", head + "link: releases\n", []string{`d.yaml:4:7: link: "releases" is reserved for the reconciler's own use under root`}},
		{"commit not a ref", "app: a\nroot: /r\nsource: {repo: /repo, commit: \"main..dev\"}\n", []string{
			`d.yaml:3:31: source.commit: "main..dev" is not a commit, tag or branch: contains .. or @{`}},
		{"commit HEAD", "app: a\nroot: /r\nsource: {repo: /repo, commit: HEAD}\n", []string{
			`d.yaml:3:31: source.commit: "HEAD" is not pinned; name a commit, tag or branch`}},
		{"commit space", "app: a\nroot: /r\nsource: {repo: /repo, commit: \"a b\"}\n", []string{
			`d.yaml:3:31: source.commit: "a b" is not a commit, tag or branch: ' ' is not allowed in a ref`}},
		{"source missing keys", "app: a\nroot: /r\nsource: {}\n", []string{
			"d.yaml:3:9: source.repo: is required", "d.yaml:3:9: source.commit: is required"}},
		{"repo scheme", "app: a\nroot: /r\nsource: {repo: \"ftp://x/y\", commit: main}\n", []string{
			`d.yaml:3:16: source.repo: scheme "ftp" is not supported: use https, ssh, git, file, a user@host:path address or a local path`}},
		{"source path escapes", head[:len(head)-1] + "\n" + "shared: {dirs: [../x]}\n", []string{
			`d.yaml:4:17: shared.dirs[0]: "../x" leaves its folder (..)`}},
		{"shared absolute", head + "shared: {files: [/etc/passwd]}\n", []string{
			`d.yaml:4:18: shared.files[0]: "/etc/passwd" is absolute; write a path relative to the release`}},
		{"shared overlap", head + "shared: {dirs: [public], files: [public/x]}\n", []string{
			`d.yaml:4:34: shared.files[0]: "public/x" overlaps shared.dirs[0] ("public")`}},
		{"env reserved", head + "env: {RECONCILER_APP: x}\n", []string{"d.yaml:4:7: env.RECONCILER_APP: names starting with RECONCILER_ are set by the reconciler"}},
		{"env bad name", head + "env: {\"A-B\": x}\n", []string{`d.yaml:4:7: env.A-B: "A-B" is not a valid environment variable name`}},
		{"env list value", head + "env: {A: [1]}\n", []string{"d.yaml:4:10: env.A: must be a string, got a list"}},
		{"build not a list", head + "build: {name: x}\n", []string{"d.yaml:4:8: build: must be a list, got a mapping"}},
		{"build step problems", head + "build:\n  - name: Venv\n    run: \"\"\n    timeout: 5 minutes\n  - run: x\n", []string{
			`d.yaml:5:11: build[0].name: "Venv" is not a valid step name: use lower-case letters, digits, _ and -`,
			"d.yaml:6:10: build[0].run: must not be empty",
			`d.yaml:7:14: build[0].timeout: invalid duration "5 minutes": write it like 90s, 5m or 1h30m`,
			"d.yaml:8:5: build[1].name: is required"}},
		{"build duplicate", head + "build:\n  - {name: a, run: x}\n  - {name: a, run: y}\n", []string{
			`d.yaml:6:5: build[1].name: duplicate step name "a" (first at line 5)`}},
		{"build reserved name", head + "build:\n  - {name: migrate, run: x}\n", []string{
			`d.yaml:5:12: build[0].name: "migrate" is the name of one of the reconciler's own steps`}},
		{"timeout zero", head + "migrate: {run: x, timeout: 0s}\n", []string{"d.yaml:4:28: migrate.timeout: must be between 1s and 24h0m0s, got 0s"}},
		{"service unknown manager", head + "services:\n  - {name: web, manager: docker}\n", []string{
			`d.yaml:5:26: services[0].manager: unknown manager "docker": use command, supervisor or systemd`}},
		{"service missing unit", head + "services:\n  - {name: web, manager: systemd}\n", []string{
			"d.yaml:5:5: services[0].unit: is required for manager systemd"}},
		{"service wrong key", head + "services:\n  - {name: web, manager: systemd, unit: web, restart: x}\n", []string{
			"d.yaml:5:46: services[0].restart: is not used by manager systemd"}},
		{"service command without restart", head + "services:\n  - {name: web, manager: command}\n", []string{
			"d.yaml:5:5: services[0].restart: is required for manager command with action restart"}},
		{"service bad action", head + "services:\n  - {name: web, manager: systemd, unit: w, action: stop}\n", []string{
			`d.yaml:5:52: services[0].action: unknown action "stop": use restart or reload`}},
		{"bad cron", head + "schedule: \"every 5 minutes\"\n", []string{
			`d.yaml:4:11: schedule: invalid cron spec "every 5 minutes": expected exactly 5 fields, found 3: [every 5 minutes] (use five fields like "*/5 * * * *" or a descriptor like "@every 5m")`}},
		{"schedule TZ without spec", head + "schedule: \"TZ=0\"\n", []string{
			`d.yaml:4:11: schedule: "TZ=0" has no schedule after the time zone "0": write it like "TZ=Europe/Berlin 0 3 * * *"`}},
		{"schedule CRON_TZ empty", head + "schedule: \"CRON_TZ=\"\n", []string{
			`d.yaml:4:11: schedule: "CRON_TZ=" names no time zone after CRON_TZ=: write it like "CRON_TZ=Europe/Berlin 0 3 * * *"`}},
		{"schedule unknown zone", head + "schedule: \"CRON_TZ=Mars/Olympus 0 3 * * *\"\n", []string{
			`d.yaml:4:11: schedule: "CRON_TZ=Mars/Olympus 0 3 * * *" names an unknown time zone "Mars/Olympus": use a name from the tz database such as Europe/Berlin or UTC`}},
		{"schedule too often", head + "schedule: \"@every 1ms\"\n", []string{
			`d.yaml:4:11: schedule: "@every 1ms" is more often than the shortest interval, @every 1s`}},
		{"two documents", head + "---\napp: b\n", []string{"d.yaml:4:1: more than one YAML document; a desired file holds one"}},
		{"all at once", "app: A\nroot: /r\nkeep: 0\nsource: {repo: /repo, commit: main}\nschedule: x\n", []string{
			`d.yaml:1:6: app: "A" is not a valid app name: use lower-case letters, digits and _ . - (starting with a letter or digit), at most 64 characters`,
			"d.yaml:3:7: keep: must be between 1 and 1000, got 0",
			`d.yaml:5:11: schedule: invalid cron spec "x": expected exactly 5 fields, found 1: [x] (use five fields like "*/5 * * * *" or a descriptor like "@every 5m")`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(tt.in), "d.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", s)
			}
			if s != nil {
				t.Errorf("Parse returned a state with an error")
			}
			var got []string
			for _, fe := range Errors(err) {
				got = append(got, fe.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestLoadLimits(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("app: a\n"+strings.Repeat("# padding\n", MaxFileSize/10+10)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(big)
	if err == nil || !strings.Contains(err.Error(), "big.yaml:1:1: file is larger than 1048576 bytes") {
		t.Errorf("big file: %v", err)
	}
	bin := filepath.Join(dir, "bin.yaml")
	os.WriteFile(bin, []byte{0x7f, 'E', 'L', 'F', 0, 1, 2}, 0o644)
	if _, err := Load(bin); err == nil || !strings.Contains(err.Error(), "bin.yaml:1:1: file contains NUL bytes") {
		t.Errorf("binary file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	base := func() *State {
		s, err := Parse(strings.NewReader(valid), "/d.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fp := base().Fingerprint()
	if fp != base().Fingerprint() {
		t.Fatal("fingerprint is not deterministic")
	}
	changes := map[string]func(*State){
		"build run":   func(s *State) { s.Build[1].Run += " -q" },
		"build order": func(s *State) { s.Build[0], s.Build[1] = s.Build[1], s.Build[0] },
		"migrate":     func(s *State) { s.Migrate = nil },
		"env":         func(s *State) { s.Env[0].Value = "43" },
		"shared":      func(s *State) { s.Shared.Dirs = s.Shared.Dirs[:1] },
		"path":        func(s *State) { s.Source.Path = "app" },
	}
	for name, change := range changes {
		s := base()
		change(s)
		if s.Fingerprint() == fp {
			t.Errorf("%s: fingerprint unchanged", name)
		}
	}
	same := map[string]func(*State){
		"timeout":  func(s *State) { s.Build[0].Timeout = time.Hour },
		"commit":   func(s *State) { s.Source.Commit = "main" },
		"keep":     func(s *State) { s.Keep = 9 },
		"services": func(s *State) { s.Services = nil },
	}
	for name, change := range same {
		s := base()
		change(s)
		if s.Fingerprint() != fp {
			t.Errorf("%s: fingerprint changed, but it does not change what is built", name)
		}
	}
}

func TestParseHealth(t *testing.T) {
	src := `app: a
root: /r
source: {repo: /repo, commit: main}
services:
  - name: web
    manager: supervisor
    program: web
    pidfile: shared/run/web.pid
    health:
      - {tcp: "127.0.0.1:8000", timeout: 5s}
health:
  - http: http://127.0.0.1:8000/health
    expect: 200
    body: "${RECONCILER_COMMIT}"
    timeout: 10s
    interval: 200ms
    failures: 1
  - command: venv/bin/python manage.py check --deploy
`
	s, err := Parse(strings.NewReader(src), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []Check{
		{Kind: "http", Target: "http://127.0.0.1:8000/health", Expect: 200, Body: "${RECONCILER_COMMIT}", Timeout: 10 * time.Second, Interval: 200 * time.Millisecond, Failures: 1},
		{Kind: "command", Target: "venv/bin/python manage.py check --deploy", Timeout: DefaultCheckTimeout, Interval: DefaultCheckInterval, Failures: DefaultCheckFailures},
	}
	if !reflect.DeepEqual(s.Health, want) {
		t.Errorf("health:\n got %+v\nwant %+v", s.Health, want)
	}
	svc := s.Services[0]
	if svc.PIDFile != "shared/run/web.pid" || len(svc.Health) != 1 || svc.Health[0].Kind != "tcp" || svc.Health[0].Timeout != 5*time.Second {
		t.Errorf("service: %+v", svc)
	}

	bad := map[string]string{
		"health:\n  - {}\n":                                "d.yaml:5:5: health[0]: needs one of http, tcp or command",
		"health:\n  - {http: x}\n":                         `d.yaml:5:12: health[0].http: "x" is not an http:// or https:// URL`,
		"health:\n  - {tcp: \"a:1\", command: x}\n":        "d.yaml:5:5: health[0]: has tcp and command: a check is one of http, tcp or command",
		"health:\n  - {tcp: localhost}\n":                  `d.yaml:5:11: health[0].tcp: "localhost" is not host:port`,
		"health:\n  - {http: \"http://x\", expect: 700}\n": "d.yaml:5:32: health[0].expect: must be between 100 and 599, got 700",
		"health:\n  - {command: x, body: y}\n":             "d.yaml:5:5: health[0]: expect and body are for http checks",
		"health:\n  - {command: x, timeout: forever}\n":    `d.yaml:5:27: health[0].timeout: invalid duration "forever": write it like 90s, 5m or 1h30m`,
		"health:\n  - {command: x, failures: 0}\n":         "d.yaml:5:28: health[0].failures: must be between 1 and 1000, got 0",
	}
	head := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\n"
	for in, want := range bad {
		_, err := Parse(strings.NewReader(head+in), "d.yaml")
		if fes := Errors(err); len(fes) != 1 || fes[0].Error() != want {
			t.Errorf("%q:\n got %v\nwant %s", in, err, want)
		}
	}
}

// run_as at the top applies to every build step and the migration that
// does not name its own, wherever it is written in the file.
func TestRunAsFillsSteps(t *testing.T) {
	src := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\n" +
		"build:\n  - {name: one, run: x}\n  - {name: two, run: y, run_as: root}\nmigrate: {run: m}\nrun_as: deploy\n"
	d, err := Parse(strings.NewReader(src), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if d.RunAs != "deploy" || d.Build[0].RunAs != "deploy" || d.Build[1].RunAs != "root" || d.Migrate.RunAs != "deploy" {
		t.Errorf("run_as: top %q, steps %q %q, migrate %q", d.RunAs, d.Build[0].RunAs, d.Build[1].RunAs, d.Migrate.RunAs)
	}
}

func TestParsePreflight(t *testing.T) {
	head := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\nrun_as: deploy\n"
	src := head + `preflight:
  run: venv/bin/python -m gunicorn --bind 127.0.0.1:${RECONCILER_PREFLIGHT_PORT} app.wsgi
  health:
    - http: http://127.0.0.1:${RECONCILER_PREFLIGHT_PORT}/health
  timeout: 30s
`
	d, err := Parse(strings.NewReader(src), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Preflight{Run: "venv/bin/python -m gunicorn --bind 127.0.0.1:${RECONCILER_PREFLIGHT_PORT} app.wsgi",
		Health: []Check{{Kind: "http", Target: "http://127.0.0.1:${RECONCILER_PREFLIGHT_PORT}/health", Timeout: DefaultCheckTimeout,
			Interval: DefaultCheckInterval, Failures: DefaultCheckFailures}},
		Timeout: 30 * time.Second, RunAs: "deploy", Start: PreflightWithMigrate}
	if !reflect.DeepEqual(d.Preflight, want) {
		t.Errorf("preflight:\n got %+v\nwant %+v", d.Preflight, want)
	}
	after, err := Parse(strings.NewReader(src+"  start: after_migrate\n"), "d.yaml")
	if err != nil || after.Preflight.Start != PreflightAfterMigrate || after.Preflight.Fingerprint() != d.Preflight.Fingerprint() {
		t.Errorf("start: after_migrate: %v %+v; want it set, the same preflight fingerprint", err, after.Preflight)
	}
	// A preflight does not change what the build produces.
	without, _ := Parse(strings.NewReader(head), "d.yaml")
	if without.Preflight != nil || without.Fingerprint() != d.Fingerprint() {
		t.Errorf("preflight changes the build fingerprint, or is set without the key")
	}

	bad := map[string]string{
		"preflight: {health: [{tcp: \"a:1\"}]}\n":                       "d.yaml:5:12: preflight.run: is required",
		"preflight: {run: x}\n":                                         "d.yaml:5:12: preflight.health: is required",
		"preflight: {run: x, health: []}\n":                             "d.yaml:5:29: preflight.health: needs at least one check: a preflight without checks proves nothing",
		"preflight: {run: \" \", health: [{tcp: \"a:1\"}]}\n":           "d.yaml:5:18: preflight.run: must not be empty",
		"preflight: {run: x, health: [{tcp: a}]}\n":                     `d.yaml:5:36: preflight.health[0].tcp: "a" is not host:port`,
		"preflight: {run: x, health: [{tcp: \"a:1\"}], timeout: 1ms}\n": "d.yaml:5:54: preflight.timeout: must be between 1s and 1h0m0s, got 1ms",
		"preflight: {run: x, health: [{tcp: \"a:1\"}], port: 1}\n":      `d.yaml:5:45: preflight.port: unknown key "port"; known keys: run, health, timeout, start`,
		"preflight: {run: x, health: [{tcp: \"a:1\"}], start: early}\n": `d.yaml:5:52: preflight.start: "early" is not a start: want with_migrate (the server starts beside the migration, its checks after it) or after_migrate`,
		"build: [{name: preflight, run: x}]\n":                          `d.yaml:5:16: build[0].name: "preflight" is the name of one of the reconciler's own steps`,
	}
	for in, want := range bad {
		_, err := Parse(strings.NewReader(head+in), "d.yaml")
		if fes := Errors(err); len(fes) != 1 || fes[0].Error() != want {
			t.Errorf("%q:\n got %v\nwant %s", in, err, want)
		}
	}
}
