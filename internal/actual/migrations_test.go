package actual

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/layout"
)

func TestObserveMigrations(t *testing.T) {
	tests := []struct {
		name    string
		file    string // "" for none
		applied []string
		known   []string // of release r1
		problem string   // a substring of MigrationsProblem
	}{
		{name: "none kept"},
		{name: "kept", file: `{"applied": ["shop.0001_initial", "shop.0002_note"], "releases": {"r1": ["shop.0001_initial"]}}`,
			applied: []string{"shop.0001_initial", "shop.0002_note"}, known: []string{"shop.0001_initial"}},
		{name: "unreadable", file: `{"applied": [`, problem: "migrations.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			d := &desired.State{Root: root, Link: "current"}
			l := layout.New(root, "current")
			if tt.file != "" {
				if err := os.MkdirAll(l.StateDir(), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(l.MigrationsFile(), []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			a, err := Observe(context.Background(), d, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.problem != "" {
				if a.Migrations != nil || !strings.Contains(a.MigrationsProblem, tt.problem) {
					t.Errorf("migrations %+v, problem %q", a.Migrations, a.MigrationsProblem)
				}
				return
			}
			if a.MigrationsProblem != "" {
				t.Fatalf("problem: %s", a.MigrationsProblem)
			}
			if tt.file == "" {
				if a.Migrations != nil {
					t.Errorf("migrations %+v with no record", a.Migrations)
				}
				return
			}
			known, ok := a.Migrations.Known("r1")
			if !reflect.DeepEqual(a.Migrations.Applied, tt.applied) || !ok || !reflect.DeepEqual(known, tt.known) {
				t.Errorf("applied %v, known %v %v", a.Migrations.Applied, known, ok)
			}
			if _, err := os.Stat(filepath.Join(root, "releases")); err == nil {
				t.Error("observe wrote under root")
			}
		})
	}
}
