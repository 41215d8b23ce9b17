package view

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/plan"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The plans package plan's tests write as JSON golden files are the input
// here: the human view of each is golden too, so a change to the planner
// shows in both, and a change to the view only here.
func TestPlanHumanGolden(t *testing.T) {
	files, err := filepath.Glob("../plan/testdata/*.json.golden")
	if err != nil || len(files) == 0 {
		t.Fatalf("no plans to render: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json.golden")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var p plan.Plan
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := PlanHuman(&out, &p, CommandFor("/etc/shop/desired.yaml", "desired.yaml")); err != nil {
				t.Fatal(err)
			}
			golden(t, name+".txt", out.Bytes())
		})
	}
}

func TestCommandHints(t *testing.T) {
	for _, tt := range []struct{ file, sub, want string }{
		{"desired.yaml", "apply --retry", "reconciler apply --retry"},
		{"", "apply", "reconciler apply"},
		{"prod.yaml", "apply --retry", "reconciler apply --retry -f prod.yaml"},
		{"/srv/my app/desired.yaml", "apply", "reconciler apply -f '/srv/my app/desired.yaml'"},
	} {
		if got := CommandFor(tt.file, "desired.yaml").With(tt.sub); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.file, got, tt.want)
		}
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}
