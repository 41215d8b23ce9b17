package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 9, attack 1: the config clone defaulted to $TMPDIR when systemd
// set no HOME. It now lives in the daemon's state directory: systemd's
// $STATE_DIRECTORY, else /var/lib/reconciler — never a temporary folder.
func TestConfigCacheLivesInTheStateDirectory(t *testing.T) {
	for _, tt := range []struct{ env, want string }{
		{"", "/var/lib/reconciler"},
		{"/var/lib/reconciler-web", "/var/lib/reconciler-web"},
		{"/var/lib/a:/var/lib/b", "/var/lib/a"},
	} {
		t.Setenv("STATE_DIRECTORY", tt.env)
		t.Setenv("TMPDIR", "/tmp/not-here")
		t.Setenv("HOME", "")
		f := runFlags{configRepo: "https://git.example.com/ops/hosts.git", stateDir: defaultStateDir()}
		got := f.configCacheDir()
		if filepath.Dir(got) != tt.want || !strings.HasPrefix(filepath.Base(got), "config-") {
			t.Errorf("STATE_DIRECTORY=%q: cache at %s; want under %s", tt.env, got, tt.want)
		}
		if strings.HasPrefix(got, os.TempDir()) || strings.HasPrefix(got, "/tmp") {
			t.Errorf("cache in a temporary folder: %s", got)
		}
	}
	f := runFlags{configRepo: "x", configCache: "/srv/cache", stateDir: "/var/lib/reconciler"}
	if f.configCacheDir() != "/srv/cache" {
		t.Error("--config-cache is not honoured")
	}
}
