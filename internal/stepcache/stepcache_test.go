package stepcache

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		patterns []string
		path     string
		want     bool
	}{
		{[]string{"requirements.txt"}, "requirements.txt", true},
		{[]string{"requirements.txt"}, "sub/requirements.txt", false},
		{[]string{"requirements*.txt"}, "requirements-dev.txt", true},
		{[]string{"requirements"}, "requirements/base.txt", true}, // a directory: everything beneath
		{[]string{"requirements"}, "requirements/deep/x.txt", true},
		{[]string{"*/package.json"}, "web/package.json", true},
		{[]string{"*/package.json"}, "package.json", false},
		{[]string{"Gemfile", "Gemfile.lock"}, "Gemfile.lock", true},
		{[]string{"Gemfile"}, "Gemfile.lock", false},
	}
	for _, tt := range tests {
		if got := Match(tt.patterns, tt.path); got != tt.want {
			t.Errorf("Match(%q, %q) = %v; want %v", tt.patterns, tt.path, got, tt.want)
		}
	}
	// MayHold enters exactly the directories a match can lie under.
	for _, tt := range []struct {
		patterns []string
		dir      string
		want     bool
	}{
		{[]string{"requirements.txt"}, "node_modules", false},
		{[]string{"*/package.json"}, "web", true},
		{[]string{"requirements"}, "requirements/deep", true},
		{[]string{"a/b/c.txt"}, "a", true},
		{[]string{"a/b/c.txt"}, "a/x", false},
	} {
		if got := MayHold(tt.patterns, tt.dir); got != tt.want {
			t.Errorf("MayHold(%q, %q) = %v; want %v", tt.patterns, tt.dir, got, tt.want)
		}
	}
}

// The hash of a key file read from disk is the blob hash git gives it, so
// the key the plan reads from the commit's tree is the key the step makes.
func TestBlobHashIsGits(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"empty": "", "req": "django==3.2\n", "bin": "\x00\x01binary\xff"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		out, err := exec.Command("git", "hash-object", p).Output()
		if err != nil {
			t.Fatal(err)
		}
		in, err := Inputs(dir, []string{name})
		if err != nil {
			t.Fatal(err)
		}
		if in[0].Hash != strings.TrimSpace(string(out)) || in[0].Mode != ModeFile {
			t.Errorf("%s: %+v; git says %s", name, in[0], out)
		}
	}
}

// Everything that can change what a step makes changes its key; the order
// the key files are found in does not.
func TestKey(t *testing.T) {
	spec := Spec{Step: "deps", Position: 0, Run: "pip install -r requirements.txt", Patterns: []string{"requirements.txt"}, Paths: []string{"venv"}, Env: []string{"A=1"}}
	in := []Input{{Path: "requirements.txt", Mode: ModeFile, Hash: "aa"}, {Path: "b.txt", Mode: ModeFile, Hash: "bb"}}
	base := Key(spec, in)
	if !IsKey(base) {
		t.Fatalf("key %q", base)
	}
	if Key(spec, []Input{in[1], in[0]}) != base {
		t.Error("the key depends on the order of its files")
	}
	changes := map[string]func(s *Spec, in []Input){
		"run":      func(s *Spec, _ []Input) { s.Run += " -q" },
		"run_as":   func(s *Spec, _ []Input) { s.RunAs = "app" },
		"position": func(s *Spec, _ []Input) { s.Position = 1 },
		"env":      func(s *Spec, _ []Input) { s.Env = []string{"A=2"} },
		"paths":    func(s *Spec, _ []Input) { s.Paths = []string{"venv", "node_modules"} },
		"content":  func(_ *Spec, in []Input) { in[0].Hash = "ab" },
		"mode":     func(_ *Spec, in []Input) { in[0].Mode = ModeExec },
		"path":     func(_ *Spec, in []Input) { in[1].Path = "c.txt" },
	}
	for name, change := range changes {
		s := spec
		s.Env = append([]string(nil), spec.Env...)
		c := append([]Input(nil), in...)
		change(&s, c)
		if Key(s, c) == base {
			t.Errorf("a change of %s keeps the key", name)
		}
	}
}

// Inputs never follows a symlink: a link is a key file by its target, and a
// directory reached through one is not entered.
func TestInputsDoNotFollowSymlinks(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(outside, "requirements.txt"), []byte("secret\n"), 0o644)
	os.Symlink(outside, filepath.Join(dir, "reqs"))
	os.Symlink(filepath.Join(outside, "requirements.txt"), filepath.Join(dir, "requirements.txt"))
	in, err := Inputs(dir, []string{"requirements.txt", "reqs"})
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 2 || in[0].Mode != ModeSymlink || in[1].Mode != ModeSymlink {
		t.Errorf("inputs %+v; want the two links themselves", in)
	}
	if _, err := Inputs(dir, []string{"reqs/requirements.txt"}); err == nil || !strings.Contains(err.Error(), "no file of the release matches") {
		t.Errorf("a key file through a symlinked directory: %v", err)
	}
}
