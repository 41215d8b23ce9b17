package stepcache

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// A key is an HMAC under the host's secret: the same spec and files under
// another secret give another key, so a key cannot be matched against
// guesses of an environment value without the secret.
func TestKeyNeedsTheSecret(t *testing.T) {
	spec := Spec{Step: "deps", Run: "pip install", Patterns: []string{"requirements.txt"}, Paths: []string{"venv"}, Env: []string{"SECRET_KEY=hunter2"}}
	in := []Input{{Path: "requirements.txt", Mode: ModeFile, Hash: "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"}}
	a, b := spec, spec
	a.Secret = bytes.Repeat([]byte{1}, SecretLen)
	b.Secret = bytes.Repeat([]byte{2}, SecretLen)
	if Key(a, in) == Key(b, in) {
		t.Error("two secrets give the same key")
	}
	same := a
	same.Secret = bytes.Repeat([]byte{1}, SecretLen)
	if k := Key(a, in); k != Key(same, in) || !IsKey(k) {
		t.Errorf("key %q is not stable or not a key", k)
	}
}

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cache.secret")
	if b, err := ReadSecret(path); b != nil || err != nil {
		t.Fatalf("no secret yet: %x, %v; want nil, nil", b, err)
	}
	// Appliers racing to make the first secret all get the one that won.
	got := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := EnsureSecret(path)
			if err != nil {
				t.Error(err)
			}
			got[i] = b
		}()
	}
	wg.Wait()
	for _, b := range got {
		if len(b) != SecretLen || !bytes.Equal(b, got[0]) {
			t.Fatalf("racing appliers got %x and %x", got[0], b)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v; want mode 0600", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".cache.secret.tmp-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	again, err := EnsureSecret(path)
	if err != nil || !bytes.Equal(again, got[0]) {
		t.Errorf("a second EnsureSecret gave %x, %v; want the first secret", again, err)
	}

	for name, damage := range map[string]func(){
		"readable by others": func() { os.Chmod(path, 0o644) },
		"short":              func() { os.WriteFile(path, []byte("short"), 0o600) },
		"a symlink": func() {
			os.Remove(path)
			os.WriteFile(path+".real", bytes.Repeat([]byte{1}, SecretLen), 0o600)
			os.Symlink(path+".real", path)
		},
	} {
		os.Remove(path)
		if _, err := EnsureSecret(path); err != nil {
			t.Fatal(err)
		}
		damage()
		if _, err := ReadSecret(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: ReadSecret: %v; want an error naming %s", name, err, path)
		}
		if _, err := EnsureSecret(path); err == nil {
			t.Errorf("%s: EnsureSecret replaced or used a bad secret", name)
		}
	}
}
