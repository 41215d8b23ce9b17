package lock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The lock file names its holder whatever the last holder left in it; a
// second Acquire is refused with that pid. The flock is held through a
// second descriptor, as another process holds it.
func TestAcquireRecordsHolder(t *testing.T) {
	for _, tc := range []struct{ name, before string }{
		{"new file", ""},
		{"shorter pid", "7\n"},
		{"same width", strings.Repeat("9", pidWidth) + "\n"},
		{"longer garbage", "12345678901234567890 and more that an editor left\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lock")
			if tc.before != "" {
				if err := os.WriteFile(path, []byte(tc.before), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			l, err := Acquire(context.Background(), path, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
			if got := holder(path); got != os.Getpid() {
				b, _ := os.ReadFile(path)
				t.Fatalf("holder = %d, want %d (file %q)", got, os.Getpid(), b)
			}
			// flock locks are per open file description: another one is
			// refused as another process would be.
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
				t.Fatalf("second flock: %v, want EWOULDBLOCK", err)
			}
			_, err = Acquire(context.Background(), path, 0)
			var held *HeldError
			if !errors.As(err, &held) || held.PID != os.Getpid() {
				t.Fatalf("second Acquire: %v, want HeldError naming pid %d", err, os.Getpid())
			}
		})
	}
}
