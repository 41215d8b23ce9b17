// Package lock serialises applies on one root with a kernel flock, which is
// released when the holder exits however it exits, so it never goes stale.
package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// HeldError is returned when another process holds the lock.
type HeldError struct {
	Path string
	PID  int // 0 when the holder did not record one
}

func (e *HeldError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("another apply is running on this root: %s holds %s (wait for it, or pass --lock-timeout)", who, e.Path)
}

// Lock is a held lock.
type Lock struct{ f *os.File }

// pollInterval is how often a waiting Acquire retries.
const pollInterval = 50 * time.Millisecond

// Acquire takes the lock at path. With wait 0 it fails at once with a
// *HeldError when the lock is held; otherwise it retries until wait has
// passed or ctx is done.
func Acquire(ctx context.Context, path string, wait time.Duration) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if wait <= 0 || time.Now().After(deadline) {
			held := &HeldError{Path: path, PID: holder(path)}
			f.Close()
			return nil, held
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
	// Record who holds it, for the message a second apply prints. The pid
	// is informative only: the flock is what excludes. It is written over
	// the last holder's, padded to a fixed width, so the file is truncated
	// only when it holds more: a truncate of a file with blocks is an ext4
	// journal commit, 4 to 8 ms of every converged apply.
	pid := []byte(fmt.Sprintf("%-*d\n", pidWidth, os.Getpid()))
	if _, err := f.WriteAt(pid, 0); err == nil {
		if fi, err := f.Stat(); err == nil && fi.Size() > int64(len(pid)) {
			f.Truncate(int64(len(pid)))
		}
	}
	return &Lock{f: f}, nil
}

// pidWidth holds any Linux pid (at most 4194304, PID_MAX_LIMIT).
const pidWidth = 10

func holder(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Release releases the lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the flock
	l.f = nil
	return err
}
