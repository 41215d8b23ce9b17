package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

// Whatever the folder is called, init names the app validly and the file
// it writes validates: the user's first command must not fail.
func TestInitNamesAnyFolder(t *testing.T) {
	tests := []struct{ folder, app string }{
		{"shop", "shop"},
		{"My Shop!", "my_shop"},
		{"--odd--", "odd"},
		{"web.example.com", "web.example.com"},
		{"Ünïcode", "n_code"},
		{"!!!", "myapp"},
		{strings.Repeat("a", 70), strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		for _, django := range []bool{false, true} {
			dir := filepath.Join(t.TempDir(), tt.folder)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "desired.yaml")
			var out bytes.Buffer
			if err := runInit(&globals{file: file, stdout: &out}, django); err != nil {
				t.Fatalf("%q: %v", tt.folder, err)
			}
			d, err := desired.Load(file)
			if err != nil {
				t.Fatalf("%q (django %v): the written file does not validate: %v", tt.folder, django, err)
			}
			if d.App != tt.app {
				t.Errorf("%q: app %q, want %q", tt.folder, d.App, tt.app)
			}
		}
	}
}
