package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/reconciler-dev/reconciler/internal/cli"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// openPTY opens a pseudo-terminal: what a person's terminal is to the
// reconciler. The returned read function gives all that was written to
// the terminal once its writer is closed.
func openPTY(t *testing.T) (tty *os.File, read func() string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	// Read as it is written: a terminal's buffer is small, and a writer
	// waiting on a full one would never return.
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(&buf, master) // ends with EIO once the terminal is closed
	}()
	return tty, func() string {
		tty.Close()
		<-done
		return strings.ReplaceAll(buf.String(), "\r\n", "\n")
	}
}

// On a terminal, the reconciler's output is coloured, unless NO_COLOR
// (any value) or --no-color says no; a JSON document never is, and what
// goes to a pipe is not.
func TestColourOnATerminal(t *testing.T) {
	repo := testgit.New(t)
	repo.Commit("v1")
	dir := t.TempDir()
	file := filepath.Join(dir, "desired.yaml")
	good := fmt.Sprintf("app: site\nroot: %s/host\nsource: {repo: %s, commit: main}\nbuild:\n  - {name: deps, run: \"echo installing\"}\n", dir, repo.Dir)
	if err := os.WriteFile(file, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	const esc = "\x1b["
	cases := []struct {
		name      string
		args      []string
		noColor   string
		pipe      bool // stdout a buffer, stderr the terminal
		wantColor []string
		wantPlain bool
	}{
		{name: "plan", args: []string{"plan"}, wantColor: []string{"\x1b[2m              # new release\x1b[0m"}},
		{name: "apply", args: []string{"apply"}, wantColor: []string{"\x1b[32m  ok build deps (", "\x1b[32mApply complete: "}},
		{name: "--no-color", args: []string{"--no-color", "plan"}, wantPlain: true},
		{name: "NO_COLOR=1", args: []string{"plan"}, noColor: "1", wantPlain: true},
		{name: "plan --json", args: []string{"plan", "--json"}, wantPlain: true},
		{name: "stdout not a terminal", args: []string{"plan"}, pipe: true, wantPlain: true},
		{name: "an error", args: []string{"logs", "nosuch"}, wantColor: []string{"\x1b[31merror: no release \"nosuch\""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NO_COLOR", tc.noColor)
			tty, read := openPTY(t)
			var stdout io.Writer = tty
			var piped bytes.Buffer
			if tc.pipe {
				stdout = &piped
			}
			cli.Main(append(tc.args, "-f", file), stdout, tty)
			got := read() + piped.String()
			if tc.wantPlain && strings.Contains(got, esc) {
				t.Errorf("escapes in the output:\n%q", got)
			}
			if tc.wantPlain && !strings.Contains(got, "site") {
				t.Errorf("unexpected output:\n%s", got)
			}
			for _, w := range tc.wantColor {
				if !strings.Contains(got, w) {
					t.Errorf("no %q in:\n%q", w, got)
				}
			}
		})
	}
}
