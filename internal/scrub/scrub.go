// Package scrub makes text from outside the reconciler (what commands
// print, what remotes answer, URLs from desired.yaml) safe to store, show
// and log: passwords in URLs are hidden, terminal control sequences are
// removed before storing and made visible when printing.
package scrub

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

// userinfo matches the user:password@ of a URL inside any text: the
// scheme, a user without ':' '/' '@' or space, and a password up to the
// '@'. Text is scanned rather than parsed because a URL reaches messages
// inside command lines, quoted, and inside other errors.
var userinfo = lazyre.New(`([A-Za-z][A-Za-z0-9+.-]*://)([^\s/:@]*):([^\s/@]+)@`)

// URLs hides the password of every URL in s as url.URL.Redacted does
// (user:xxxxx@host). A user without a password is left as it is.
func URLs(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return userinfo.ReplaceAllString(s, "${1}${2}:xxxxx@")
}

// Text is s as it may be stored: passwords in URLs hidden, escape
// sequences (CSI, OSC, DCS and the two-byte ones) and every other C0 and
// C1 control character removed, except newline and tab; a carriage return
// becomes a newline (progress lines), invalid UTF-8 becomes U+FFFD.
func Text(s string) string {
	s = strings.ToValidUTF8(URLs(s), "\uFFFD")
	if printable(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == 0x1b:
			i += escapeLen(s[i:])
			continue
		case r == '\r':
			if !strings.HasPrefix(s[i+1:], "\n") {
				b.WriteByte('\n')
			}
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case isControl(r):
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// escapeLen is the length of the escape sequence at the start of s (which
// begins with ESC): CSI up to its final byte, OSC/DCS/SOS/PM/APC up to BEL
// or ST, otherwise ESC and the one character after it. An unterminated
// sequence runs to the end of s.
func escapeLen(s string) int {
	if len(s) < 2 {
		return len(s)
	}
	switch s[1] {
	case '[':
		for i := 2; i < len(s); i++ {
			if s[i] >= 0x40 && s[i] <= 0x7e {
				return i + 1
			}
			if s[i] < 0x20 || s[i] > 0x7e {
				return i // malformed: stop before the stray byte
			}
		}
		return len(s)
	case ']', 'P', 'X', '^', '_':
		for i := 2; i < len(s); i++ {
			if s[i] == 0x07 {
				return i + 1
			}
			if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
		}
		return len(s)
	}
	_, n := utf8.DecodeRuneInString(s[1:])
	return 1 + n
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f }

// printable reports whether s has no control character but newline and
// tab: the common case, returned without copying.
func printable(s string) bool {
	for _, r := range s {
		if isControl(r) && r != '\n' && r != '\t' {
			return false
		}
	}
	return true
}

// Escape makes every control character of s but newline and tab visible
// (ESC as \x1b, a C1 character as \u009b, a byte that is not UTF-8 as
// \xff), so that printing text stored by an older version, or by anyone
// who could write the file, never drives the terminal.
func Escape(s string) string {
	if printable(s) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x80 && isControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case isControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Tail is the end of s in at most max bytes, cut at a rune boundary and
// marked, for output where the last lines say what went wrong.
func Tail(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "…(cut)\n"
	i := len(s) - max + len(mark)
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return mark + s[i:]
}

// Bound is s in at most max bytes: its head, which says what happened,
// and its tail, which usually holds the last output, with the middle cut
// and marked.
func Bound(s string, max int) string {
	if len(s) <= max {
		return s
	}
	// The mark is sized for the largest count, so the result fits max.
	markLen := len(fmt.Sprintf("\n…(%d bytes cut)…\n", len(s)))
	keep := (max - markLen) / 2
	if keep < 0 {
		keep = 0
	}
	h := keep
	for h > 0 && !utf8.RuneStart(s[h]) {
		h--
	}
	t := len(s) - keep
	for t < len(s) && !utf8.RuneStart(s[t]) {
		t++
	}
	return s[:h] + fmt.Sprintf("\n…(%d bytes cut)…\n", t-h) + s[t:]
}
