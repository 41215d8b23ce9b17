package desired

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseMigrations(t *testing.T) {
	head := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\n"
	tests := []struct {
		name string
		in   string
		want *Migrations
	}{
		{"untracked", "migrate: {run: venv/bin/python manage.py migrate}\n", nil},
		{"django, manage from run, warn by default", "migrate: {run: venv/bin/python manage.py migrate --noinput, kind: django}\n",
			&Migrations{Kind: "django", OnRollback: "warn", Manage: "venv/bin/python manage.py"}},
		{"django, manage from a path", "migrate: {run: cd app && ../venv/bin/python ./src/manage.py migrate, kind: django, on_rollback: block}\n",
			&Migrations{Kind: "django", OnRollback: "block", Manage: "cd app && ../venv/bin/python ./src/manage.py"}},
		{"django, manage given", "migrate: {run: ./migrate.sh, kind: django, manage: bin/django-admin, on_rollback: reverse}\n",
			&Migrations{Kind: "django", OnRollback: "reverse", Manage: "bin/django-admin"}},
		{"other", "migrate: {run: m, kind: other, applied: a, known: k}\n",
			&Migrations{Kind: "other", OnRollback: "warn", Applied: "a", Known: "k"}},
		{"other without kind", "migrate: {run: m, applied: a, known: k, reverse: r, on_rollback: reverse}\n",
			&Migrations{Kind: "other", OnRollback: "reverse", Applied: "a", Known: "k", Reverse: "r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse(strings.NewReader(head+tt.in), "d.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Migrate.Migrations, tt.want) {
				t.Errorf("got %+v, want %+v", d.Migrate.Migrations, tt.want)
			}
		})
	}
}

func TestParseMigrationsErrors(t *testing.T) {
	head := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\n"
	tests := []struct {
		name, in string
		want     []string
	}{
		{"unknown kind", "migrate: {run: m, kind: rails}\n", []string{
			`d.yaml:4:25: migrate.kind: unknown kind "rails": django is built in; for another framework write kind: other and the applied, known and reverse commands`}},
		{"bad policy", "migrate: {run: manage.py migrate, kind: django, on_rollback: undo}\n", []string{
			`d.yaml:4:62: migrate.on_rollback: "undo" is not a policy: want warn, block or reverse`}},
		{"django without manage.py", "migrate: {run: ./migrate.sh, kind: django}\n", []string{
			"d.yaml:4:30: migrate.manage: kind: django needs the manage command, and migrate.run has no manage.py: write it, e.g. manage: venv/bin/python manage.py"}},
		{"django with commands", "migrate: {run: manage.py migrate, kind: django, applied: a}\n", []string{
			"d.yaml:4:35: migrate.applied: is built in with kind: django (manage.py showmigrations --plan, manage.py migrate <app> <migration>)"}},
		{"other without known", "migrate: {run: m, kind: other, applied: a}\n", []string{
			"d.yaml:4:19: migrate.known: is required with kind: other: a command that lists one migration a line (app.name or app name)"}},
		{"reverse policy without reverse", "migrate: {run: m, kind: other, applied: a, known: k, on_rollback: reverse}\n", []string{
			"d.yaml:4:54: migrate.reverse: is required with on_rollback: reverse: a command that unapplies the migrations in $RECONCILER_MIGRATIONS_TO_REVERSE"}},
		{"policy without kind", "migrate: {run: m, on_rollback: block}\n", []string{
			"d.yaml:4:19: migrate.kind: is required to track migrations: kind: django, or kind: other with the applied and known commands"}},
		{"manage for other", "migrate: {run: m, kind: other, applied: a, known: k, manage: x}\n", []string{
			"d.yaml:4:54: migrate.manage: is for kind: django"}},
		{"unknown key", "migrate: {run: m, kind: django, revert: x}\n", []string{
			`d.yaml:4:33: migrate.revert: unknown key "revert" (did you mean "reverse"?)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(head+tt.in), "d.yaml")
			var got []string
			for _, fe := range Errors(err) {
				got = append(got, fe.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n %q\nwant\n %q", got, tt.want)
			}
		})
	}
}

// Tracking migrations changes how rollbacks are judged, not what a release
// is built from: adding kind: django rebuilds nothing.
func TestMigrationsKeepFingerprint(t *testing.T) {
	head := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\n"
	plain, err := Parse(strings.NewReader(head+"migrate: {run: venv/bin/python manage.py migrate}\n"), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tracked, err := Parse(strings.NewReader(head+"migrate: {run: venv/bin/python manage.py migrate, kind: django, on_rollback: block}\n"), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if plain.Fingerprint() != tracked.Fingerprint() || plain.Migrate.Fingerprint() != tracked.Migrate.Fingerprint() {
		t.Error("kind and on_rollback change the build fingerprint")
	}
	if got := Changed(plain.Snapshot(), tracked.Snapshot()); !reflect.DeepEqual(got, []string{"migrate.kind", "migrate.manage", "migrate.on_rollback"}) {
		t.Errorf("changed: %v", got)
	}
}

func TestManageOf(t *testing.T) {
	for run, want := range map[string]string{
		"venv/bin/python manage.py migrate --noinput":    "venv/bin/python manage.py",
		"python /srv/app/manage.py migrate":              "python /srv/app/manage.py",
		"manage.py migrate":                              "manage.py",
		"cd src && ../venv/bin/python manage.py migrate": "cd src && ../venv/bin/python manage.py",
		"python mymanage.py migrate":                     "",
		"python manage.pyc migrate":                      "",
		"./migrate.sh":                                   "",
	} {
		if got := ManageOf(run); got != want {
			t.Errorf("ManageOf(%q) = %q, want %q", run, got, want)
		}
	}
}
