package desired

import (
	"reflect"
	"strings"
	"testing"
)

func TestSharedOverlaps(t *testing.T) {
	head := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\n"
	tests := []struct {
		shared string
		want   []string
	}{
		{"{dirs: [public], files: [public/x]}", []string{`d.yaml:4:34: shared.files[0]: "public/x" overlaps shared.dirs[0] ("public")`}},
		// Reported at the later of the two in the file.
		{"{dirs: [public/x, public]}", []string{`d.yaml:4:27: shared.dirs[1]: "public" overlaps shared.dirs[0] ("public/x")`}},
		{"{dirs: [x, y, x]}", []string{`d.yaml:4:23: shared.dirs[2]: "x" overlaps shared.dirs[0] ("x")`}},
		// a-b sorts between a and a/b as bytes; it overlaps nothing.
		{"{dirs: [a, a-b, a/b, a.b]}", []string{`d.yaml:4:25: shared.dirs[2]: "a/b" overlaps shared.dirs[0] ("a")`}},
		{"{dirs: [a/b, a/c, a]}", []string{
			`d.yaml:4:27: shared.dirs[2]: "a" overlaps shared.dirs[0] ("a/b")`,
			`d.yaml:4:27: shared.dirs[2]: "a" overlaps shared.dirs[1] ("a/c")`}},
		{"{dirs: [ab, a, abc, b/a]}", nil},
	}
	for _, tt := range tests {
		t.Run(tt.shared, func(t *testing.T) {
			_, err := Parse(strings.NewReader(head+"shared: "+tt.shared+"\n"), "d.yaml")
			var got []string
			for _, fe := range Errors(err) {
				got = append(got, fe.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// A file of many duplicate entries reports the first MaxErrors problems and
// a count of the rest, not one problem per pair.
func TestSharedManyEntriesCapped(t *testing.T) {
	const n = 20000
	var b strings.Builder
	b.WriteString("app: a\nroot: /r\nsource: {repo: /repo, commit: main}\nshared:\n  dirs:\n")
	for range n {
		b.WriteString("    - x\n")
	}
	_, err := Parse(strings.NewReader(b.String()), "d.yaml")
	fes := Errors(err)
	if len(fes) != MaxErrors+1 {
		t.Fatalf("%d errors, want %d", len(fes), MaxErrors+1)
	}
	if got, want := fes[0].Error(), `d.yaml:7:7: shared.dirs[1]: "x" overlaps shared.dirs[0] ("x")`; got != want {
		t.Errorf("first error %q, want %q", got, want)
	}
	// n-1 entries overlap the one before them; MaxErrors are shown.
	if got, want := fes[MaxErrors].Error(), "d.yaml:57:7: and 19949 more problems"; got != want {
		t.Errorf("last error %q, want %q", got, want)
	}
	if lines := strings.Count(err.Error(), "\n") + 1; lines != MaxErrors+1 {
		t.Errorf("the message has %d lines", lines)
	}
}
