package apply

import (
	"os/user"
	"testing"
)

// TestCurrentUser: the user behind sudo first, then USER, then the name
// of the process's uid (a daemon under systemd has neither variable).
func TestCurrentUser(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Skip("no name for this uid:", err)
	}
	for _, tt := range []struct{ sudo, user, want string }{
		{"alice", "root", "alice"},
		{"", "bob", "bob"},
		{"", "", me.Username},
	} {
		t.Setenv("SUDO_USER", tt.sudo)
		t.Setenv("USER", tt.user)
		if got := CurrentUser(); got != tt.want {
			t.Errorf("SUDO_USER=%q USER=%q: %q, want %q", tt.sudo, tt.user, got, tt.want)
		}
	}
}
