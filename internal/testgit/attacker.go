package testgit

import (
	"os"
	"os/user"
	"strconv"
	"testing"
)

// Attacker is the machine's second, unprivileged user (.ci/run makes it):
// the app user of the trust tests, who tries to take the root-run
// reconciler over. Missing under CI it fails the test; elsewhere it skips.
func Attacker(t testing.TB) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup("rcattacker")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("user rcattacker is missing: .ci/run creates it (%v)", err)
		}
		t.Skipf("no user rcattacker on this machine (.ci/run creates it): %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}
