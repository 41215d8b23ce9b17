package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// goreleaser is the part of .goreleaser.yaml the tests check.
type goreleaser struct {
	Builds []struct {
		Main    string   `yaml:"main"`
		Ldflags []string `yaml:"ldflags"`
	} `yaml:"builds"`
	Archives []struct {
		Files []string `yaml:"files"`
	} `yaml:"archives"`
	Nfpms []struct {
		Formats  []string `yaml:"formats"`
		Contents []struct {
			Src string `yaml:"src"`
			Dst string `yaml:"dst"`
		} `yaml:"contents"`
		Scripts map[string]string `yaml:"scripts"`
	} `yaml:"nfpms"`
}

func readGoreleaser(t *testing.T) goreleaser {
	t.Helper()
	b, err := os.ReadFile("../../.goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var g goreleaser
	if err := yaml.Unmarshal(b, &g); err != nil {
		t.Fatalf(".goreleaser.yaml: %v", err)
	}
	if len(g.Builds) != 1 {
		t.Fatalf(".goreleaser.yaml has %d builds, want 1", len(g.Builds))
	}
	return g
}

// A release build's -X flags name variables that exist: `go build -X`
// silently ignores a wrong path, so the binary is built with the flags of
// .goreleaser.yaml (its templates filled as goreleaser would) and must
// print the values in `version` and `--version`.
func TestReleaseLdflagsSetVersion(t *testing.T) {
	g := readGoreleaser(t)
	values := map[string]string{
		"{{ .Tag }}":        "v9.8.7",
		"{{ .FullCommit }}": "0123456789abcdef0123456789abcdef01234567",
		"{{ .CommitDate }}": "2026-01-02T03:04:05Z",
	}
	var flags []string
	for _, f := range g.Builds[0].Ldflags {
		for k, v := range values {
			f = strings.ReplaceAll(f, k, v)
		}
		if strings.Contains(f, "{{") {
			t.Fatalf("ldflags %q: a template this test does not fill", f)
		}
		flags = append(flags, f)
	}
	bin := filepath.Join(t.TempDir(), "reconciler")
	build := exec.Command("go", "build", "-ldflags", strings.Join(flags, " "), "-o", bin, g.Builds[0].Main)
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil {
			t.Fatalf("reconciler %s: %v\n%s", arg, err, out)
		}
		for _, want := range []string{
			"reconciler v9.8.7\n",
			"commit:  0123456789abcdef0123456789abcdef01234567\n",
			"built:   2026-01-02T03:04:05Z\n",
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("reconciler %s lacks %q:\n%s", arg, want, out)
			}
		}
	}
}

// Every file the archives and the .deb take exists, and the .deb carries
// the systemd unit: goreleaser cannot run here, so this is what can be
// checked of its packaging before a release.
func TestReleasePackagesExistingFiles(t *testing.T) {
	g := readGoreleaser(t)
	exists := func(what, pattern string) {
		m, err := filepath.Glob(filepath.Join("../..", pattern))
		if err != nil || len(m) == 0 {
			t.Errorf("%s %q matches no file", what, pattern)
		}
	}
	for _, a := range g.Archives {
		for _, f := range a.Files {
			exists("archive file", f)
		}
	}
	if len(g.Nfpms) != 1 || len(g.Nfpms[0].Formats) != 1 || g.Nfpms[0].Formats[0] != "deb" {
		t.Fatalf("want one nfpm package in format deb, got %+v", g.Nfpms)
	}
	unit := false
	for _, c := range g.Nfpms[0].Contents {
		if c.Src != "" {
			exists("deb content", c.Src)
		}
		unit = unit || strings.HasSuffix(c.Dst, "/systemd/system/reconciler.service")
	}
	if !unit {
		t.Errorf("the .deb does not install reconciler.service into a systemd unit directory")
	}
	for k, s := range g.Nfpms[0].Scripts {
		exists("deb "+k+" script", s)
	}
	// The unit starts the binary where the .deb puts it.
	b, err := os.ReadFile("../../packaging/reconciler.service")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ExecStart=/usr/bin/reconciler run `).Match(b) {
		t.Errorf("packaging/reconciler.service does not start /usr/bin/reconciler run")
	}
}
