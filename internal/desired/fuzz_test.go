package desired

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

// FuzzParse: any input either parses into a state whose derived paths stay
// where they belong, or fails with field errors that each name a position.
// It never panics.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../../cmd/reconciler/testdata/bad/*.yaml")
	ex, _ := filepath.Glob("../../examples/*.yaml")
	ex2, _ := filepath.Glob("../../examples/django/*.yaml")
	for _, p := range append(append(seeds, ex...), ex2...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(valid))
	// Schedules and repository addresses: the forms the parsers special-case,
	// and the ones that made robfig/cron panic.
	head := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\n"
	for _, spec := range []string{"TZ=0", "CRON_TZ=", "TZ=", "CRON_TZ=Europe/Berlin 0 3 * * *", "TZ=UTC @every 5m",
		"TZ=Mars/Olympus 0 3 * * *", "TZ=UTC TZ=UTC 0 * * * *", "@every 1ms", "@every 1s", "@daily", "*/5 * * * *"} {
		f.Add([]byte(head + "schedule: \"" + spec + "\"\n"))
	}
	for _, repo := range []string{"git@example.com:/srv/git/app.git", "example.com:app.git", "ssh://git@example.com:2222/app.git",
		"https://example.com/app.git", "git://example.com/app.git", "file:///srv/git/app.git", "file://srv/app", "./app",
		"rel/with:colon", "C:app", "[::1]:app", "git@host:22:app", "a@b@host:app", "-oProxyCommand=x:app", "host:", "0@0://", "git@host://srv/app"} {
		f.Add([]byte("app: a\nroot: /r\nsource: {repo: \"" + repo + "\", commit: main}\n"))
	}
	f.Add([]byte(head + "build:\n  - name: deps\n    run: make\n    cache: {key: [requirements.txt, \"req/*.txt\"], paths: [venv, node_modules]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(bytes.NewReader(data), "/etc/r/d.yaml")
		if err != nil {
			if s != nil {
				t.Fatal("a state returned with an error")
			}
			fes := Errors(err)
			if len(fes) == 0 {
				t.Fatalf("an error without positions: %v", err)
			}
			for _, fe := range fes {
				if fe.Line < 1 || fe.Column < 1 || fe.Msg == "" || !strings.HasPrefix(fe.Error(), "/etc/r/d.yaml:") {
					t.Fatalf("a bad field error: %#v", fe)
				}
			}
			return
		}
		if !filepath.IsAbs(s.Root) || s.Root != filepath.Clean(s.Root) || s.Root == "/" {
			t.Fatalf("root %q", s.Root)
		}
		if s.Link == "" || strings.ContainsAny(s.Link, "/\x00") || s.Link == "." || s.Link == ".." {
			t.Fatalf("link %q", s.Link)
		}
		if s.Keep < 1 || s.Keep > 1000 {
			t.Fatalf("keep %d", s.Keep)
		}
		inside := func(p string) bool {
			return p != "" && !filepath.IsAbs(p) && filepath.Clean(p) == p && p != "." && !strings.HasPrefix(p, "../") && p != ".."
		}
		for _, p := range append(append([]string{}, s.Shared.Dirs...), s.Shared.Files...) {
			if !inside(p) {
				t.Fatalf("shared path %q leaves the release", p)
			}
			// Joined to any release, it stays inside it.
			rel := "/srv/x/releases/r"
			if j := filepath.Join(rel, p); !strings.HasPrefix(j, rel+"/") {
				t.Fatalf("shared path %q resolves to %s", p, j)
			}
		}
		if s.Source.Path != "" && !inside(s.Source.Path) {
			t.Fatalf("source.path %q", s.Source.Path)
		}
		// go-git's transport reads the address the way parseRepo did.
		a, err := parseRepo(s.Source.Repo, "/")
		if err != nil || a.value != s.Source.Repo {
			t.Fatalf("source.repo %q reads back as %+v, %v", s.Source.Repo, a, err)
		}
		ep, err := transport.NewEndpoint(s.Source.Repo)
		if err != nil {
			t.Fatalf("go-git cannot read source.repo %q: %v", s.Source.Repo, err)
		}
		if local := ep.Protocol == "file"; local == a.remote || local && (ep.Path != s.Source.Repo || !filepath.IsAbs(ep.Path)) {
			t.Fatalf("source.repo %q: go-git reads %+v, parseRepo %+v", s.Source.Repo, ep, a)
		}
		names := map[string]bool{}
		for _, b := range s.Build {
			if names[b.Name] || b.Name == "" || b.Run == "" || b.Timeout <= 0 {
				t.Fatalf("build step %+v", b)
			}
			names[b.Name] = true
			if c := b.Cache; c != nil {
				if len(c.Key) == 0 || len(c.Paths) == 0 {
					t.Fatalf("cache %+v", c)
				}
				for _, p := range append(append([]string{}, c.Key...), c.Paths...) {
					if !inside(p) {
						t.Fatalf("cache path %q leaves the step's directory", p)
					}
				}
			}
		}
		_ = s.Fingerprint()
	})
}
