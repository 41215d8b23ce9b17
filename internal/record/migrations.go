package record

import (
	"errors"
	"io/fs"
	"sort"
	"strings"
	"time"
)

// Migrations is the host's record of database migrations: which are
// applied, and which each release's code has. The database is one for
// all releases, so the record is the root's, not a release's. Names are
// "app.name".
type Migrations struct {
	// Applied is the applied set, in the order it was listed; nil until
	// the first migrate was recorded.
	Applied []string `json:"applied"`
	// AppliedAt is when it was read, and AppliedBy the release whose code
	// read it.
	AppliedAt time.Time `json:"applied_at"`
	AppliedBy string    `json:"applied_by,omitempty"`
	// Releases are the migrations each release's code has, by release
	// name, in the order its framework lists them.
	Releases map[string][]string `json:"releases,omitempty"`
	// Ahead is the last switch that left the schema ahead of the linked
	// release (on_rollback: warn); cleared once a migrate or a reverse
	// recorded the applied set again.
	Ahead *Ahead `json:"ahead,omitempty"`
}

// Ahead is a switch to a release that lacks applied migrations.
type Ahead struct {
	Release    string    `json:"release"`
	Migrations []string  `json:"migrations"`
	At         time.Time `json:"at"`
}

// Known returns the migrations release's code has, and whether they are
// recorded.
func (m *Migrations) Known(release string) ([]string, bool) {
	if m == nil || m.Releases == nil {
		return nil, false
	}
	k, ok := m.Releases[release]
	return k, ok
}

// ReadMigrations reads the migrations record; a missing one is (nil, nil).
func ReadMigrations(path string) (*Migrations, error) {
	var m Migrations
	if err := readJSON(path, &m); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &m, nil
}

// MigrationsUpdate is what a migrate, a reverse or a warned switch
// changes in the record. Nil fields are left as they are.
type MigrationsUpdate struct {
	At time.Time
	// Release, with Known: the migrations that release's code has.
	Release string
	Known   []string
	// Applied, when not nil, replaces the applied set, read by the code of
	// By; it clears Ahead.
	Applied []string
	By      string
	// Ahead records a warned switch.
	Ahead *Ahead
	// Keep, when not nil, are the releases on disk: the others' entries go.
	Keep []string
}

// UpdateMigrations reads the record at path, changes it and writes it
// back atomically.
func UpdateMigrations(path string, u MigrationsUpdate) (*Migrations, error) {
	m, err := ReadMigrations(path)
	if err != nil {
		return nil, err
	}
	if m == nil {
		m = &Migrations{}
	}
	if m.Releases == nil {
		m.Releases = map[string][]string{}
	}
	if u.Release != "" && u.Known != nil {
		m.Releases[u.Release] = u.Known
	}
	if u.Applied != nil {
		m.Applied, m.AppliedAt, m.AppliedBy, m.Ahead = u.Applied, u.At.UTC(), u.By, nil
	}
	if u.Ahead != nil {
		a := *u.Ahead
		if a.At.IsZero() { // kept as it was when a note is carried over
			a.At = u.At.UTC()
		}
		m.Ahead = &a
	}
	if u.Keep != nil {
		keep := map[string]bool{}
		for _, r := range u.Keep {
			keep[r] = true
		}
		for r := range m.Releases {
			if !keep[r] {
				delete(m.Releases, r)
			}
		}
	}
	if err := writeJSON(path, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Missing returns the names in want that are not in have, in want's order.
func Missing(want, have []string) []string {
	in := map[string]bool{}
	for _, h := range have {
		in[h] = true
	}
	var out []string
	for _, w := range want {
		if !in[w] {
			out = append(out, w)
		}
	}
	return out
}

// SplitMigration splits "app.name" at its first dot.
func SplitMigration(m string) (app, name string) {
	app, name, _ = strings.Cut(m, ".")
	return app, name
}

// Apps returns the apps of migrations, sorted.
func Apps(migrations []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range migrations {
		if a, _ := SplitMigration(m); !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}
