package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

func initCmd(g *globals) *cobra.Command {
	var django bool
	cmd := &cobra.Command{
		Use:   "init [--django]",
		Short: "Write a commented desired.yaml to start from (-f for another path)",
		Long: `Write a commented desired.yaml to adapt, in the current folder or at -f PATH.
With --django it describes a Django app served by gunicorn under supervisor,
and init also writes, beside it, supervisor-web.conf (the gunicorn program)
and nginx-site.conf (a site in front of it), to adapt and install.

The app's name is taken from the folder's name. init never overwrites a
file: when one of them exists, it writes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInit(g, django)
		},
	}
	cmd.Flags().BoolVar(&django, "django", false, "a Django app under gunicorn and supervisor, with a supervisor program and an nginx site")
	return cmd
}

// initFile is a file init writes: its path and template.
type initFile struct {
	path, tmpl string
	next       string // what to do with it, for the message after writing
}

// initData fills the templates.
type initData struct {
	App, Module, Root, SchemaURL string
}

func runInit(g *globals, django bool) error {
	abs, err := filepath.Abs(g.file)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	dir := filepath.Dir(abs)
	app := appName(filepath.Base(dir))
	d := initData{App: app, Module: strings.NewReplacer("-", "_", ".", "_").Replace(app), Root: "/srv/" + app, SchemaURL: desired.SchemaURL}
	files := []initFile{{path: g.file, tmpl: genericYAML}}
	if django {
		near := func(name string) string { return filepath.Join(filepath.Dir(g.file), name) }
		files = []initFile{
			{path: g.file, tmpl: djangoYAML},
			{path: near("supervisor-web.conf"), tmpl: supervisorConf, next: fmt.Sprintf("install it as /etc/supervisor/conf.d/%s-web.conf", app)},
			{path: near("nginx-site.conf"), tmpl: nginxSite, next: fmt.Sprintf("install it as /etc/nginx/sites-available/%s and link it from sites-enabled", app)},
		}
	}
	// All or nothing: a half-written set would leave the user to work out
	// which of the files are theirs.
	var exist []string
	for _, f := range files {
		if _, err := os.Lstat(f.path); err == nil {
			exist = append(exist, f.path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("init: %w", err)
		}
	}
	if len(exist) > 0 {
		return fmt.Errorf("init: %s already exists; not overwriting it: move it away, or write elsewhere with -f PATH", strings.Join(exist, " and "))
	}
	for _, f := range files {
		if err := writeNew(f.path, f.tmpl, d); err != nil {
			return fmt.Errorf("init: %w", err)
		}
		msg := "wrote " + f.path
		if f.next != "" {
			msg += ": " + f.next
		}
		fmt.Fprintln(g.stdout, msg)
	}
	fmt.Fprintf(g.stdout, "Next: edit %s (source.repo and commit at least), then run `%s` and `%s`.\n",
		g.file, g.command().With("validate"), g.command().With("plan"))
	return nil
}

// writeNew writes a new file from tmpl; O_EXCL makes a file that appeared
// since the check an error, not something overwritten.
func writeNew(path, tmpl string, d initData) error {
	t, err := template.New(filepath.Base(path)).Parse(tmpl)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := t.Execute(f, d); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// appName makes a valid app name of a folder's name: lower-case letters,
// digits and _ . -, starting with a letter or digit; "myapp" when nothing
// is left.
func appName(folder string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(folder) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '_' || r == '.' || r == '-':
			if b.Len() > 0 {
				b.WriteRune(r)
			}
		default:
			if b.Len() > 0 {
				b.WriteRune('_')
			}
		}
	}
	name := strings.TrimRight(b.String(), "_.-")
	if len(name) > 64 {
		name = strings.TrimRight(name[:64], "_.-")
	}
	if name == "" {
		return "myapp"
	}
	return name
}

const genericYAML = `# yaml-language-server: $schema={{.SchemaURL}}
# The desired state of {{.App}} on this host: ` + "`reconciler plan`" + ` shows what
# ` + "`reconciler apply`" + ` would change to make the host match it. Check it with
# ` + "`reconciler validate`" + `; every key is described by ` + "`reconciler schema`" + `.

# The application's name, in messages, history and metrics.
app: {{.App}}
# The folder the reconciler owns: releases/, shared/, the cached clone and
# the link (current) your services run from.
root: {{.Root}}
# Releases kept on disk: rolling back to one of them builds nothing.
keep: 5

source:
  # The git repository: a URL, user@host:path, or a local path.
  repo: git@github.com:example/{{.App}}.git
  # What to deploy: a branch, a tag or a commit. To roll back, set it back.
  commit: main
  # A private key for an ssh repository (user@host:path or ssh://).
  # ssh_key: /etc/reconciler/deploy_key

# Paths under <root>/shared kept across releases, linked into every one.
# shared:
#   dirs: [var]
#   files: [.env]

# The environment of build steps, the migration and command services.
# env:
#   APP_ENV: production

# Build steps run in order inside the new release, before anything is
# switched; a failing one leaves the host as it was.
build:
  - name: build
    run: make build
    timeout: 10m

# Runs after the build steps, before the switch.
# migrate:
#   run: ./bin/migrate

# The services that run the release, acted on after the link moved.
services:
  - name: web
    manager: systemd               # or supervisor (program:), or command (restart:)
    unit: {{.App}}.service
    action: restart                # or reload, for a server that re-reads the link

# Checks that must pass after the services acted; if one fails, the link
# returns to the previous release.
health:
  - http: http://127.0.0.1:8000/
    timeout: 30s
`

const djangoYAML = `# yaml-language-server: $schema={{.SchemaURL}}
# The desired state of {{.App}}, a Django app served by gunicorn under
# supervisor behind nginx (supervisor-web.conf and nginx-site.conf beside
# this file). ` + "`reconciler plan`" + ` shows what ` + "`reconciler apply`" + ` would change;
# check this file with ` + "`reconciler validate`" + `; every key is described by
# ` + "`reconciler schema`" + `.

# The application's name, in messages, history and metrics.
app: {{.App}}
# The folder the reconciler owns: releases/, shared/, cache/, the cached
# clone and the link gunicorn runs from, {{.Root}}/current.
root: {{.Root}}
# Releases kept on disk: rolling back to one of them builds nothing.
keep: 5

source:
  # The git repository: a URL, user@host:path, or a local path.
  repo: git@github.com:example/{{.App}}.git
  # What to deploy: a branch, a tag or a commit. To roll back, set it back.
  commit: main
  # A private key for an ssh repository (user@host:path or ssh://).
  # ssh_key: /etc/reconciler/deploy_key

# Kept across releases under {{.Root}}/shared, linked into every release.
shared:
  dirs: [var, media]

env:
  DJANGO_SETTINGS_MODULE: {{.Module}}.settings

build:
  # The virtualenv is built once per requirements.txt, sealed in
  # {{.Root}}/cache/deps/ and linked into every release that has the same one.
  - name: deps
    run: /usr/bin/python3 -m venv venv && venv/bin/pip install -r requirements.txt
    timeout: 15m
    cache:
      key: [requirements.txt]
      paths: [venv]
  # Static files go into the release; nginx serves them from current/static/.
  - name: static
    run: venv/bin/python manage.py collectstatic --noinput

# After every build step succeeded, before the switch. Keep migrations
# backwards compatible (add a column now, drop it a release later): the old
# release serves until the switch, and is what a rollback returns to.
migrate:
  run: venv/bin/python manage.py migrate --noinput
  timeout: 10m

# The new release must answer on a loopback port before the link moves: a
# release that cannot start never serves a user.
preflight:
  run: exec venv/bin/python -m gunicorn --bind 127.0.0.1:${RECONCILER_PREFLIGHT_PORT} --workers 1 {{.Module}}.wsgi
  health:
    - http: http://127.0.0.1:${RECONCILER_PREFLIGHT_PORT}/
  timeout: 1m

services:
  - name: web
    manager: supervisor
    program: {{.App}}-web            # supervisor-web.conf
    # HUP: gunicorn's new workers start in --chdir {{.Root}}/current, the
    # new release, while the old ones finish their requests.
    action: reload
    supervisor: {config: /etc/supervisor/supervisord.conf}

# Must pass after the reload, or the link returns to the previous release.
health:
  - http: http://127.0.0.1:8000/
    timeout: 30s
`

const supervisorConf = `; The gunicorn program of {{.App}}, for desired.yaml's service "web".
; Install it as /etc/supervisor/conf.d/{{.App}}-web.conf, then run
; supervisorctl reread && supervisorctl update.
;
; --chdir {{.Root}}/current makes gunicorn resolve the link again on every
; HUP, so action: reload serves the new release with no request lost.
; Without it, gunicorn keeps the release it started in, and the
; reconciler's process check reports it.
[program:{{.App}}-web]
command={{.Root}}/current/venv/bin/python -m gunicorn --chdir {{.Root}}/current --bind 127.0.0.1:8000 --workers 2 --graceful-timeout 30 {{.Module}}.wsgi
directory={{.Root}}/current
environment=DJANGO_SETTINGS_MODULE="{{.Module}}.settings"
user=www-data
; The reconciler starts it at the first deploy, when current exists.
autostart=false
autorestart=true
stopasgroup=true
killasgroup=true
stopwaitsecs=35
redirect_stderr=true
stdout_logfile={{.Root}}/shared/var/gunicorn.log
`

const nginxSite = `# A site in front of {{.App}}'s gunicorn. Install it as
# /etc/nginx/sites-available/{{.App}}, link it from sites-enabled, set
# server_name (and TLS), then run nginx -t && systemctl reload nginx.
server {
    listen 80;
    server_name {{.App}}.example.com;

    # collectstatic put the static files into the release: served from the
    # linked one, they change with it.
    location /static/ {
        alias {{.Root}}/current/static/;
    }
    location /media/ {
        alias {{.Root}}/shared/media/;
    }
    location / {
        proxy_pass http://127.0.0.1:8000;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
    }
}
`
