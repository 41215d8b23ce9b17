package record

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestUpdateMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".reconciler", "migrations.json")
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	steps := []struct {
		name string
		u    MigrationsUpdate
		want Migrations
	}{
		{"first migrate", MigrationsUpdate{At: at, Release: "r1", Known: []string{"a.1"}, Applied: []string{"a.1"}, By: "r1"},
			Migrations{Applied: []string{"a.1"}, AppliedAt: at, AppliedBy: "r1", Releases: map[string][]string{"r1": {"a.1"}}}},
		{"second release", MigrationsUpdate{At: at, Release: "r2", Known: []string{"a.1", "a.2"}, Applied: []string{"a.1", "a.2"}, By: "r2"},
			Migrations{Applied: []string{"a.1", "a.2"}, AppliedAt: at, AppliedBy: "r2", Releases: map[string][]string{"r1": {"a.1"}, "r2": {"a.1", "a.2"}}}},
		{"warned switch", MigrationsUpdate{At: at, Ahead: &Ahead{Release: "r1", Migrations: []string{"a.2"}}},
			Migrations{Applied: []string{"a.1", "a.2"}, AppliedAt: at, AppliedBy: "r2", Releases: map[string][]string{"r1": {"a.1"}, "r2": {"a.1", "a.2"}},
				Ahead: &Ahead{Release: "r1", Migrations: []string{"a.2"}, At: at}}},
		{"reverse clears ahead; pruned releases go", MigrationsUpdate{At: at, Applied: []string{"a.1"}, By: "r2", Keep: []string{"r2"}},
			Migrations{Applied: []string{"a.1"}, AppliedAt: at, AppliedBy: "r2", Releases: map[string][]string{"r2": {"a.1", "a.2"}}}},
	}
	for _, st := range steps {
		if _, err := UpdateMigrations(path, st.u); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got, err := ReadMigrations(path)
		if err != nil || !reflect.DeepEqual(*got, st.want) {
			t.Errorf("%s:\n got %+v %v\nwant %+v", st.name, got, err, st.want)
		}
	}
	if m, err := ReadMigrations(filepath.Join(t.TempDir(), "none.json")); m != nil || err != nil {
		t.Errorf("missing record: %v %v", m, err)
	}
}
