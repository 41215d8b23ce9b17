package view

import (
	"bytes"
	"io"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ANSI styles: a few, each with one meaning.
const (
	styleFail  = "\x1b[31m" // red: a failure, an error
	styleOK    = "\x1b[32m" // green: a step done, an apply complete
	styleWarn  = "\x1b[33m" // yellow: a warning, a "!" line
	styleDim   = "\x1b[2m"  // dim: what is secondary (reasons, heartbeats)
	styleReset = "\x1b[0m"
)

// ColorOn reports whether output written to w is coloured: only when w is
// a terminal, the user did not pass --no-color (noColor) and NO_COLOR is
// unset or empty (no-color.org: any non-empty value turns colour off).
// JSON is never written through a colouring writer, whatever this says.
func ColorOn(w io.Writer, noColor bool, getenv func(string) string) bool {
	return !noColor && getenv("NO_COLOR") == "" && IsTerminal(w)
}

// IsTerminal reports whether w is a terminal: a file the terminal ioctl
// answers for. Anything else (a pipe, a file, a buffer) is not.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Colorize returns a writer that colours what is written to w line by
// line, by how each line begins, when on; w itself when off. Styling whole
// lines by their start keeps every view plain text (the golden files are
// the views' contract) and colours every view the same way, those to come
// included, without each one passing a style around.
func Colorize(w io.Writer, on bool) io.Writer {
	if !on {
		return w
	}
	return &colorWriter{w: w, start: true}
}

type colorWriter struct {
	mu    sync.Mutex
	w     io.Writer
	start bool   // the next byte begins a line
	open  bool   // a style is open until the end of the line
	head  []byte // the beginning of the current line while it is too short to tell
}

// Write styles each line as it begins. A line's style is decided on its
// first bytes, so output that streams a line in pieces is shown at once,
// never held back until its end: a step's output ("  deps | 40%") at
// once, a very short piece of another line until a few more bytes or the
// newline arrive.
func (c *colorWriter) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out bytes.Buffer
	rest := b
	for len(rest) > 0 {
		if c.start {
			i := bytes.IndexByte(rest, '\n')
			line := rest
			if i >= 0 {
				line = rest[:i]
			}
			head := append(c.head, line...)
			if i < 0 && len(head) < decideLen && !bytes.Contains(head, []byte(" | ")) {
				c.head = head
				break
			}
			c.head = nil
			c.start = false
			if s := lineStyle(string(head)); s != "" {
				out.WriteString(s)
				c.open = true
			}
			out.Write(head)
			if i < 0 {
				break
			}
			rest = rest[i:]
			continue
		}
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			out.Write(rest)
			break
		}
		out.Write(rest[:i])
		if c.open {
			out.WriteString(styleReset)
			c.open = false
		}
		out.WriteByte('\n')
		c.start = true
		rest = rest[i+1:]
	}
	if out.Len() > 0 {
		if _, err := c.w.Write(out.Bytes()); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// decideLen is how many bytes of a line lineStyle needs at most.
const decideLen = 24

// lineStyle is the style of a line of the views, by its first bytes. A
// command's own output ("  deps | ...") is shown as it printed it.
func lineStyle(line string) string {
	trimmed := strings.TrimLeft(line, " ")
	if word, rest, ok := strings.Cut(trimmed, " "); ok && strings.HasPrefix(rest, "| ") && word != "" {
		return "" // a step's live output
	}
	switch {
	case strings.HasPrefix(line, "error:"), strings.HasPrefix(line, "  FAILED "), strings.HasPrefix(line, "Blocked:"),
		strings.HasPrefix(line, "apply failed"), strings.HasPrefix(line, "apply refused"):
		return styleFail
	case strings.HasPrefix(line, "warning:"), strings.HasPrefix(trimmed, "! "):
		return styleWarn
	case strings.HasPrefix(line, "  ok "), strings.HasPrefix(line, "Apply complete"), strings.HasPrefix(line, "Rollback complete"),
		strings.HasPrefix(line, "No changes."):
		return styleOK
	case strings.HasPrefix(trimmed, "# "), strings.HasPrefix(line, "  still running ("), strings.HasPrefix(line, "  | "):
		return styleDim
	}
	return ""
}
