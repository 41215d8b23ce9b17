package scrub

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestURLs(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"clone https://user:tok3n@example.com/app.git: refused", "clone https://user:xxxxx@example.com/app.git: refused"},
		{"supervisorctl -s 'http://admin:pa:ss@127.0.0.1:9001' pid web", "supervisorctl -s 'http://admin:xxxxx@127.0.0.1:9001' pid web"},
		{"a http://u:p@h/x and ssh://git:k@h2/y", "a http://u:xxxxx@h/x and ssh://git:xxxxx@h2/y"},
		{"https://token@example.com/app.git", "https://token@example.com/app.git"},
		{"git@example.com:app.git", "git@example.com:app.git"},
		{"https://example.com/a@b", "https://example.com/a@b"},
		{"no url at all", "no url at all"},
	} {
		if got := URLs(tt.in); got != tt.want {
			t.Errorf("URLs(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestText(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"plain", "ok\n\tdone", "ok\n\tdone"},
		{"colour", "\x1b[1;31mERROR\x1b[0m: x", "ERROR: x"},
		{"title", "\x1b]0;pwned\x07after", "after"},
		{"osc with st", "\x1b]8;;http://x\x1b\\link", "link"},
		{"clear screen and bell", "a\x1b[2J\x1bcb\x07c", "abc"},
		{"c1 csi and nul", "a\u009b31mb\x00c\x7f", "a31mbc"},
		{"carriage returns", "10%\r20%\r\ndone\r\n", "10%\n20%\ndone\n"},
		{"invalid utf-8", "a\xffb", "a\uFFFDb"},
		{"password", "https://u:secret@h/x", "https://u:xxxxx@h/x"},
		{"unterminated", "x\x1b[31", "x"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Text(tt.in); got != tt.want {
				t.Errorf("Text(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestEscape(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain\n\tline", "plain\n\tline"},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"a\rb\x07", `a\x0db\x07`},
		{"c1\u009b", `c1\u009b`},
		{"bad\xff", `bad\xff`},
		{"é ok", "é ok"},
	} {
		if got := Escape(tt.in); got != tt.want {
			t.Errorf("Escape(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestBounds(t *testing.T) {
	long := strings.Repeat("é", 5000) + "the end"
	if got := Tail(long, 4096); len(got) > 4096 || !strings.HasSuffix(got, "the end") || !strings.HasPrefix(got, "…(cut)\n") {
		t.Errorf("Tail: %d bytes, %q…", len(got), got[:20])
	}
	if got := Tail("short", 4096); got != "short" {
		t.Errorf("Tail(short) = %q", got)
	}
	msg := "build failed" + strings.Repeat("x", 10000) + "last line"
	got := Bound(msg, 2048)
	if len(got) > 2048 || !strings.HasPrefix(got, "build failed") || !strings.HasSuffix(got, "last line") || !strings.Contains(got, "bytes cut") {
		t.Errorf("Bound: %d bytes: %q", len(got), got)
	}
}

func TestCore(t *testing.T) {
	obs, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(obs).WithOptions(zap.WrapCore(Core)).With(zap.String("repo", "https://u:tok1@h/r"))
	log.Error("clone https://u:tok2@h/r failed",
		zap.Error(errors.New("fetch https://u:tok3@h/r: refused")),
		zap.ByteString("out", []byte("https://u:tok4@h")),
		zap.Int("n", 1))
	e := logs.All()[0]
	text := e.Message
	for k, v := range e.ContextMap() {
		text += " " + k + "=" + toString(v)
	}
	for _, tok := range []string{"tok1", "tok2", "tok3", "tok4"} {
		if strings.Contains(text, tok) {
			t.Errorf("%s shows in the log: %s", tok, text)
		}
	}
	if !strings.Contains(text, "https://u:xxxxx@h/r") {
		t.Errorf("the redacted URL is missing: %s", text)
	}
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}
