package steplog

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
)

var t0 = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)

// host makes releases under a root: each with a record (its steps done,
// its failure if any) and a log per step named in logs.
type host struct {
	t *testing.T
	l layout.Layout
}

func newHost(t *testing.T) *host {
	return &host{t: t, l: layout.New(t.TempDir(), "current")}
}

func (h *host) release(name, commit string, done []string, failed string, logs ...string) {
	h.t.Helper()
	rec := &record.Release{Name: name, App: "site", Commit: commit, Fingerprint: "f", State: record.Complete, Created: t0}
	for _, s := range done {
		rec.Steps = append(rec.Steps, record.Step{Name: s})
	}
	if failed != "" {
		rec.State, rec.Failure = record.Failed, &record.Failure{Step: failed, Error: "exited with status 7", Output: "boom\n", At: t0}
	}
	if err := os.MkdirAll(filepath.Dir(h.l.StepLog(name, "x")), 0o700); err != nil {
		h.t.Fatal(err)
	}
	if err := record.WriteRelease(h.l.RecordFile(name), rec); err != nil {
		h.t.Fatal(err)
	}
	for _, s := range logs {
		if err := os.WriteFile(h.l.StepLog(name, s), []byte("output of "+s+"\n"), 0o600); err != nil {
			h.t.Fatal(err)
		}
	}
}

const (
	r1 = "20261126T090000Z-aaaa1111"
	r2 = "20261126T090100Z-bbbb2222"
	r3 = "20261126T090200Z-bbbb2222"
	r4 = "20261127T090000Z-cccc3333"
)

func TestFind(t *testing.T) {
	h := newHost(t)
	h.release(r1, "aaaa1111"+strings.Repeat("0", 32), nil, "")
	h.release(r2, "bbbb2222"+strings.Repeat("0", 32), nil, "")
	h.release(r3, "bbbb2222"+strings.Repeat("0", 32), nil, "")
	h.release(r4, "cccc3333"+strings.Repeat("0", 32), nil, "")
	// Not releases: a symlink with a release's name, a stray directory.
	os.Symlink(h.l.ReleaseDir(r1), h.l.ReleaseDir("20261128T090000Z-dddd4444"))
	os.Mkdir(h.l.ReleaseDir("junk"), 0o755)
	rels, err := Releases(h.l)
	if err != nil || len(rels) != 4 {
		t.Fatalf("Releases = %v, %v", rels, err)
	}
	for _, tt := range []struct{ arg, want, err string }{
		{r2, r2, ""},
		{"20261127", r4, ""},
		{"aaaa", r1, ""},
		{"CCCC33", r4, ""},
		{"bbbb2222", "", `"bbbb2222" names 2 releases: ` + r2 + " (bbbb2222), " + r3 + " (bbbb2222); give more of the name or the commit"},
		{"2026112", "", `"2026112" names 4 releases`},
		{"aaa", "", `no release "aaa" (a release name, a prefix of one, or of its commit); on disk: ` + r1 + " (aaaa1111), "},
		{"20261128T090000Z-dddd4444", "", `no release "20261128T090000Z-dddd4444"`},
		{"../../etc", "", `no release "../../etc"`},
	} {
		r, err := Find(rels, tt.arg)
		if tt.err == "" {
			if err != nil || r.Name != tt.want {
				t.Errorf("Find(%q) = %s, %v; want %s", tt.arg, r.Name, err, tt.want)
			}
		} else if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
			t.Errorf("Find(%q) = %s, %v; want the error %s…", tt.arg, r.Name, err, tt.err)
		}
	}
	if _, err := Find(nil, "x"); err == nil || err.Error() != `no release "x": there are no releases on disk` {
		t.Errorf("Find on no releases: %v", err)
	}
}

func TestLatestFailureAndLogs(t *testing.T) {
	h := newHost(t)
	h.release(r1, "aaaa1111", []string{"export", "deps"}, "migrate", "migrate", "deps")
	h.release(r2, "bbbb2222", []string{"export"}, "health")
	h.release(r3, "bbbb2222", []string{"export", "deps", "migrate"}, "", "migrate", "deps", "zz-other")
	rels, err := Releases(h.l)
	if err != nil {
		t.Fatal(err)
	}
	// Failures at the same instant: the later release wins.
	if r, ok := LatestFailure(rels); !ok || r.Name != r2 {
		t.Errorf("LatestFailure = %s, %v; want %s", r.Name, ok, r2)
	}
	if _, ok := LatestFailure(rels[2:]); ok {
		t.Error("a release without a failure was taken for one")
	}
	for _, tt := range []struct {
		r    Release
		want string
	}{{rels[0], "deps migrate"}, {rels[1], ""}, {rels[2], "deps migrate zz-other"}} {
		got, err := Logs(h.l, tt.r)
		if err != nil || strings.Join(got, " ") != tt.want {
			t.Errorf("Logs(%s) = %q, %v; want %q", tt.r.Name, got, err, tt.want)
		}
	}
	f, err := Open(h.l, rels[0], "migrate")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "output of migrate\n" {
		t.Errorf("read %q", b)
	}
	_, err = Open(h.l, rels[0], "export")
	var me *MissingError
	if !errors.As(err, &me) || err.Error() != "release "+r1+" has no log for step export; it has: deps, migrate" {
		t.Errorf("Open(export) = %v", err)
	}
	_, err = Open(h.l, rels[1], "health")
	if err == nil || err.Error() != "release "+r2+" has no log for step health; it has no step logs (none of its steps ran a command)" {
		t.Errorf("Open(health) = %v", err)
	}
}

// TestOpenNeverFollows: a log, the logs folder or the record folder
// replaced by a symlink to a secret is refused, naming the link.
func TestOpenNeverFollows(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret.log")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	for _, tt := range []struct {
		name  string
		plant func(h *host)
		want  string
	}{
		{"log", func(h *host) {
			os.Remove(h.l.StepLog(r1, "deps"))
			os.Symlink(secret, h.l.StepLog(r1, "deps"))
		}, "log of step deps: releases/" + r1 + "/.reconciler/logs/deps.log is a symlink (to " + secret + "): refusing to follow it"},
		{"logs folder", func(h *host) {
			dir := filepath.Dir(h.l.StepLog(r1, "deps"))
			os.RemoveAll(dir)
			os.Symlink(outside, dir)
		}, "release " + r1 + ": releases/" + r1 + "/.reconciler/logs is a symlink (to " + outside + "): refusing to follow it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			h.release(r1, "aaaa1111", []string{"deps"}, "", "deps")
			os.WriteFile(filepath.Join(outside, "deps.log"), []byte("s3cret\n"), 0o600)
			tt.plant(h)
			rels, _ := Releases(h.l)
			f, err := Open(h.l, rels[0], "deps")
			if err == nil {
				b, _ := io.ReadAll(f)
				f.Close()
				t.Fatalf("opened through the link: %q", b)
			}
			if err.Error() != tt.want || !errors.Is(err, fsx.ErrNotBeneath) {
				t.Errorf("got %v\nwant %s", err, tt.want)
			}
		})
	}
}
