package plan

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMakeIsPure guards the contract of the package: no I/O, no clock, no
// randomness, no logging. It fails when a non-test file imports a package
// that could bring them in, or reads the clock (time's values, such as a
// step's timeout, are plain data and allowed).
func TestMakeIsPure(t *testing.T) {
	forbidden := []string{"os", "os/exec", "io/fs", "io/ioutil", "net", "net/http", "math/rand", "math/rand/v2", "crypto/rand", "syscall", "go.uber.org/zap", "log", "log/slog"}
	clock := map[string]bool{"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true, "AfterFunc": true, "Tick": true, "NewTimer": true, "NewTicker": true}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
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
		ast.Inspect(af, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "time" && clock[sel.Sel.Name] {
					t.Errorf("%s calls time.%s: the plan reads no clock; the caller passes Options.Now", f, sel.Sel.Name)
				}
			}
			return true
		})
	}
	if checked == 0 {
		t.Fatal("no files checked")
	}
}
