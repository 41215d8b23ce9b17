package fsx

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzOpenBeneath builds a small tree of directories, files and symlinks
// (some to a directory outside the root, "@" in a target) from spec, opens
// rel beneath the root, creating what is missing, and checks that the
// directory reached is rel itself under the root, through no symlink, and
// that nothing appeared outside.
//
// spec: entries separated by ";": "name/" a directory, "name=target" a
// symlink, "name" a file.
func FuzzOpenBeneath(f *testing.F) {
	for _, seed := range [][2]string{
		{"data=@", "data/new/uploads"},
		{"data=@;media/", "data/uploads"},
		{"real/;data=real", "data/x"},
		{"a/;a/b=../..", "a/b/c"},
		{"a/;a/up=..;esc=a/up/..", "esc/x"},
		{"loop=loop", "loop/x"},
		{"l1=l2;l2=l1", "l1"},
		{"up=../outside", "up/x"},
		{"f", "f/x"},
		{"media=@", "media"},
		{"", "a/b/c"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, spec, rel string) {
		base := t.TempDir()
		root, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
		for _, d := range []string{root, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for i, e := range strings.Split(spec, ";") {
			if i == 8 {
				break
			}
			name, target, isLink := strings.Cut(e, "=")
			dir := strings.HasSuffix(name, "/")
			name = strings.TrimSuffix(name, "/")
			if !fuzzName(name) || len(target) > 64 || strings.ContainsRune(target, 0) {
				continue
			}
			p := filepath.Join(root, name)
			os.MkdirAll(filepath.Dir(p), 0o755) // fails through a file or a link: the entry is skipped
			switch {
			case isLink && target != "":
				os.Symlink(strings.ReplaceAll(target, "@", outside), p)
			case dir:
				os.Mkdir(p, 0o755)
			default:
				os.WriteFile(p, nil, 0o644)
			}
		}
		if len(rel) > 64 || strings.ContainsRune(rel, 0) {
			return
		}
		d, err := OpenBeneath(root, rel, true, 0o755)
		checkErr := CheckBeneath(root, rel)
		if left, _ := os.ReadDir(outside); len(left) != 0 {
			t.Fatalf("%d entries appeared outside the root", len(left))
		}
		if err != nil {
			return
		}
		defer d.Close()
		if checkErr != nil {
			t.Errorf("OpenBeneath made %s, but CheckBeneath refuses it: %v", rel, checkErr)
		}
		want := filepath.Join(root, filepath.Clean(rel))
		resolved, err := filepath.EvalSymlinks(want)
		if err != nil {
			t.Fatalf("opened %s, which does not resolve: %v", rel, err)
		}
		realRoot, _ := filepath.EvalSymlinks(root)
		if resolved != filepath.Join(realRoot, filepath.Clean(rel)) {
			t.Fatalf("opened %s, which resolves to %s, outside or through a symlink", rel, resolved)
		}
	})
}

// fuzzName keeps the tree small and its names plain components.
func fuzzName(name string) bool {
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
