package cli

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolveBuildInfo(t *testing.T) {
	vcs := &debug.BuildInfo{
		Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "8c0d2e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"},
			{Key: "vcs.time", Value: "2026-11-25T20:45:12Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	installed := &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}
	tests := []struct {
		name                  string
		version, commit, date string
		bi                    *debug.BuildInfo
		want                  []string
	}{
		{"no build info", "", "", "", nil, []string{
			"reconciler dev (a development build, not a release)\n",
			"commit:  unknown (built without version control information)\n",
			"built:   unknown\n"}},
		{"a build in a modified checkout", "", "", "", vcs, []string{
			"reconciler dev (a development build, not a release)\n",
			"commit:  8c0d2e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d (with uncommitted changes)\n",
			"built:   2026-11-25T20:45:12Z\n"}},
		{"go install @version", "", "", "", installed, []string{
			"reconciler v1.4.0\n",
			"commit:  unknown"}},
		{"ldflags win", "v1.5.0", "abc1234", "2026-11-26T00:00:00Z", vcs, []string{
			"reconciler v1.5.0\n",
			"commit:  abc1234\n",
			"built:   2026-11-26T00:00:00Z\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			resolveBuildInfo(tt.version, tt.commit, tt.date, tt.bi).write(&buf)
			for _, w := range tt.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, buf.String())
				}
			}
		})
	}
}
