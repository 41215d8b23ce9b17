package desired

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		names := map[string]bool{}
		for _, b := range s.Build {
			if names[b.Name] || b.Name == "" || b.Run == "" || b.Timeout <= 0 {
				t.Fatalf("build step %+v", b)
			}
			names[b.Name] = true
		}
		_ = s.Fingerprint()
	})
}
