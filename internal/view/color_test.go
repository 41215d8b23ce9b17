package view

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestColorize(t *testing.T) {
	const (
		red, green, yellow, dim, reset = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[2m", "\x1b[0m"
	)
	cases := []struct {
		name   string
		writes []string // written in these pieces
		want   string
	}{
		{"a failed step", []string{"  FAILED build deps after 3s: exited with status 7\n"}, red + "  FAILED build deps after 3s: exited with status 7" + reset + "\n"},
		{"an error", []string{"error: apply failed: boom\n"}, red + "error: apply failed: boom" + reset + "\n"},
		{"a step done", []string{"  ok build deps (3s)\n"}, green + "  ok build deps (3s)" + reset + "\n"},
		{"an apply complete", []string{"\nApply complete: current -> releases/x.\n"}, "\n" + green + "Apply complete: current -> releases/x." + reset + "\n"},
		{"a warning", []string{"warning: running as root\n"}, yellow + "warning: running as root" + reset + "\n"},
		{"a ! line", []string{"  ! schema ahead: catalog.0024 is applied\n"}, yellow + "  ! schema ahead: catalog.0024 is applied" + reset + "\n"},
		{"a reason", []string{"              # new release\n"}, dim + "              # new release" + reset + "\n"},
		{"a heartbeat", []string{"  still running (1m0s)\n"}, dim + "  still running (1m0s)" + reset + "\n"},
		{"plain text", []string{"Plan: 1 fetch.\n"}, "Plan: 1 fetch.\n"},
		{"a command's output is its own", []string{"  ok | error: FAILED\n", "  deps | warning: x\n"}, "  ok | error: FAILED\n  deps | warning: x\n"},
		{"a line in pieces", []string{"  FAI", "LED build deps after 3s", ": boom", "\n  ok x\n"},
			red + "  FAILED build deps after 3s: boom" + reset + "\n" + green + "  ok x" + reset + "\n"},
		{"a command's unfinished line is shown at once", []string{"  deps | 40%"}, "  deps | 40%"},
		{"several lines in one write", []string{"error: a\nplain\nwarning: b\n"}, red + "error: a" + reset + "\nplain\n" + yellow + "warning: b" + reset + "\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			w := Colorize(&b, true)
			for _, p := range tc.writes {
				if n, err := w.Write([]byte(p)); err != nil || n != len(p) {
					t.Fatalf("Write(%q) = %d, %v", p, n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			var plain bytes.Buffer
			off := Colorize(&plain, false)
			for _, p := range tc.writes {
				off.Write([]byte(p))
			}
			if strings.Contains(plain.String(), "\x1b") {
				t.Errorf("colour off wrote escapes: %q", plain.String())
			}
		})
	}
}

func TestColorOn(t *testing.T) {
	tty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer tty.Close()
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "NO_COLOR" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name    string
		w       any
		noColor bool
		noEnv   string
		want    bool
	}{
		{"a terminal", tty, false, "", true},
		{"a terminal, --no-color", tty, true, "", false},
		{"a terminal, NO_COLOR=1", tty, false, "1", false},
		{"a terminal, NO_COLOR=0 (any value)", tty, false, "0", false},
		{"a pipe", pipeW, false, "", false},
		{"a buffer", &bytes.Buffer{}, false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.w.(interface{ Write([]byte) (int, error) })
			if got := ColorOn(w, tc.noColor, env(tc.noEnv)); got != tc.want {
				t.Errorf("ColorOn = %v, want %v", got, tc.want)
			}
		})
	}
}
