package desired

import (
	"strings"
	"testing"
)

// Changed names the fields that changed, env keys without their values;
// nothing is stored that shows a value.
func TestSnapshotChanged(t *testing.T) {
	parse := func(src string) *State {
		t.Helper()
		s, err := Parse(strings.NewReader(src), "/srv/d.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := "app: a\nroot: /r\nsource: {repo: /repo, commit: main}\nenv: {SECRET_KEY: hunter2, DEBUG: \"0\"}\nbuild:\n  - {name: deps, run: make}\n"
	old := parse(base).Snapshot()
	for _, v := range old {
		if strings.Contains(v, "hunter2") {
			t.Fatal("a value is stored in the snapshot")
		}
	}
	tests := []struct {
		src  string
		want string
	}{
		{base, ""},
		{strings.Replace(base, "hunter2", "swordfish", 1), "env.SECRET_KEY"},
		{strings.Replace(base, "run: make", "run: make all", 1), "build[0].run"},
		{strings.Replace(base, "commit: main", "commit: v2", 1) + "keep: 3\n", "keep source.commit"},
		{strings.Replace(base, "run_as", "x", 1) + "run_as: deploy\n", "build[0].run_as run_as"},
	}
	for _, tt := range tests {
		if got := strings.Join(Changed(old, parse(tt.src).Snapshot()), " "); got != tt.want {
			t.Errorf("changed %q; want %q", got, tt.want)
		}
	}
	if same := Changed(old, parse(base).Snapshot()); same == nil || len(same) != 0 {
		t.Errorf("unchanged: %#v; want empty, not nil (the apply reads that as: nothing to keep)", same)
	}
	if Changed(nil, old) != nil {
		t.Error("with no earlier apply, fields changed")
	}
}
