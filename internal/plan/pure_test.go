package plan

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMakeIsPure guards the contract of the package: no I/O, no clock, no
// randomness, no logging. It fails when a non-test file imports a package
// that could bring them in.
func TestMakeIsPure(t *testing.T) {
	forbidden := []string{"os", "os/exec", "io/fs", "io/ioutil", "net", "net/http", "time", "math/rand", "math/rand/v2", "crypto/rand", "syscall", "go.uber.org/zap", "log", "log/slog"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, im := range af.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			for _, bad := range forbidden {
				if path == bad {
					t.Errorf("%s imports %s: package plan must stay pure", f, path)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no files checked")
	}
}
