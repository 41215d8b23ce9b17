package gitcache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzEscapes checks the export's symlink rule against the kernel: for a
// small tree of directories and symlinks made on disk from spec, every
// link escapes lets be must resolve, when it resolves at all, inside the
// tree. spec: entries separated by ";": "name/" a directory, "name=target"
// a symlink.
func FuzzEscapes(f *testing.F) {
	for _, seed := range []string{
		"a/;a/up=..;esc=a/up/..",
		"a/;a/up=..;esc=a/up/../x",
		"l1=l2;l2=l1",
		"a/;a/b/;a/b/l=../../..",
		"a/;a/l=../a/l/..",
		"a/;x=a/../..",
		"a/;d=a;e=d/../..",
		"a/;a/b=.;c=a/b/b/b/..",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		root := filepath.Join(t.TempDir(), "r", "root")
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		links := map[string]string{}
		for i, e := range strings.Split(spec, ";") {
			if i == 10 {
				break
			}
			name, target, isLink := strings.Cut(e, "=")
			dir := strings.HasSuffix(name, "/")
			name = strings.TrimSuffix(name, "/")
			if !plainName(name) || len(target) > 64 || strings.ContainsRune(target, 0) || isLink && target == "" {
				continue
			}
			p := filepath.Join(root, name)
			if fi, err := os.Lstat(filepath.Dir(p)); err != nil || !fi.IsDir() {
				continue // as in a git tree: a name's parents are directories
			}
			switch {
			case isLink:
				if os.Symlink(target, p) == nil {
					links[name] = target
				}
			case dir:
				os.Mkdir(p, 0o755)
			}
		}
		realRoot, err := filepath.EvalSymlinks(root)
		if err != nil {
			t.Fatal(err)
		}
		for name := range links {
			if escapes(links, name) {
				continue
			}
			got, err := filepath.EvalSymlinks(filepath.Join(root, name))
			if err != nil {
				continue // nothing is reached
			}
			if got != realRoot && !strings.HasPrefix(got, realRoot+"/") {
				t.Fatalf("%s -> %s resolves to %s, outside the tree, and was let be", name, links[name], got)
			}
		}
	})
}

func plainName(name string) bool {
	if name == "" || len(name) > 32 || strings.ContainsRune(name, 0) || strings.HasPrefix(name, "/") {
		return false
	}
	for _, c := range strings.Split(name, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}
