package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/cli"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestBadInputCorpus feeds every file of testdata/bad (and a generated
// 10 MB one) to validate, plan and apply against a deployed root: each
// must exit 1 with messages naming file:line:column (and the field), the
// same as testdata/bad/NAME.want, and leave the root byte for byte as it
// was.
func TestBadInputCorpus(t *testing.T) {
	dir := t.TempDir()
	app := testgit.New(t)
	app.Commit("v1")
	if err := os.Symlink(app.Dir, filepath.Join(dir, "app")); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("app: site\nroot: host\nsource: {repo: ./app, commit: main}\nbuild:\n  - {name: b, run: \"echo b > b\"}\n"), 0o644)
	var out, errb bytes.Buffer
	if code := cli.Main([]string{"apply", "-f", good}, &out, &errb); code != 0 {
		t.Fatalf("deploy: %d\n%s", code, errb.String())
	}
	root := filepath.Join(dir, "host")
	before := digest(t, root)

	files, _ := filepath.Glob("testdata/bad/*.yaml")
	huge := filepath.Join(dir, "huge-10mb.yaml")
	big := bytes.Repeat([]byte("# "+strings.Repeat("x", 98)+"\n"), 100000)
	os.WriteFile(huge, append([]byte("app: site\nroot: host\n"), big...), 0o644)
	if len(files) < 60 {
		t.Fatalf("only %d bad inputs in the corpus", len(files))
	}
	lineRE := regexp.MustCompile(`^error: [^:]+\.yaml:[0-9]+:[0-9]+: `)
	rejected := 0
	for _, src := range append(files, huge) {
		name := strings.TrimSuffix(filepath.Base(src), ".yaml")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name+".yaml")
			os.WriteFile(path, b, 0o644)
			var first string
			for _, cmd := range []string{"validate", "plan", "apply"} {
				var out, errb bytes.Buffer
				cwd, _ := os.Getwd()
				os.Chdir(dir)
				code := cli.Main([]string{cmd, "-f", name + ".yaml"}, &out, &errb)
				os.Chdir(cwd)
				if code != 1 {
					t.Fatalf("%s exited %d; want 1\n%s%s", cmd, code, out.String(), errb.String())
				}
				msg := errb.String()
				for _, line := range strings.Split(strings.TrimSpace(msg), "\n") {
					if !lineRE.MatchString(line) {
						t.Errorf("%s: %q does not name file:line:column", cmd, line)
					}
				}
				if first == "" {
					first = msg
				} else if msg != first {
					t.Errorf("%s says something else than validate:\n%s\nvs\n%s", cmd, msg, first)
				}
			}
			if name == "huge-10mb" {
				if !strings.Contains(first, "file is larger than 1048576 bytes") {
					t.Errorf("10 MB file: %s", first)
				}
			} else {
				golden := strings.TrimSuffix(src, ".yaml") + ".want"
				if *update {
					os.WriteFile(golden, []byte(first), 0o644)
				} else if want, _ := os.ReadFile(golden); string(want) != first {
					t.Errorf("messages:\n%s\nwant (%s):\n%s", first, golden, want)
				}
			}
			if after := digest(t, root); after != before {
				t.Fatal("the root changed")
			}
			rejected++
		})
	}
	t.Logf("%d bad inputs rejected with the root unchanged", rejected)
}

// digest describes everything under root: names, modes, sizes, mtimes,
// link targets and contents.
func digest(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", "cd "+root+" && find . -printf '%p %M %s %T@ %l\\n' | sort && find . -type f -exec sha256sum {} + | sort").CombinedOutput()
	if err != nil {
		t.Fatalf("digest: %v\n%s", err, out)
	}
	return string(out)
}
