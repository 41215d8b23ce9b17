package main

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Every command of the one binary pays for every package linked into it:
// Go has no lazy imports, and a package's init runs before main. The
// metrics client is the daemon's alone, so it is not linked at all:
// client_golang registers a Go and a process collector at init and brings
// procfs with it (the daemon writes its /metrics by hand,
// internal/daemon/metrics.go). protobuf is linked: the etcd client of
// fleet: needs it.
func TestBinaryLinksNoMetricsClient(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range info.Deps {
		for _, banned := range []string{"github.com/prometheus/"} {
			if strings.HasPrefix(d.Path, banned) {
				t.Errorf("the binary links %s %s: its inits run in every command", d.Path, d.Version)
			}
		}
	}
}

// The reconciler's own packages do no work at init that a command may not
// need — no regexp compiled, no table built — so `reconciler version`
// pays for none of it. Allocations are counted (GODEBUG=inittrace=1), not
// timed: the figure does not depend on the machine. A few small values
// (a sync.Once, a map of the record's transitions) fit the budget; one
// compiled regexp does not (about 7 KB).
func TestOwnInitsAllocateLittle(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "version")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("reconciler version: %v\n%s", err, stderr.String())
	}
	const budget = 2 << 10
	seen := 0
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		// init github.com/x/y @1.2 ms, 0.010 ms clock, 1080 bytes, 30 allocs
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] != "init" || !strings.HasPrefix(f[1], "github.com/reconciler-dev/reconciler/") {
			continue
		}
		seen++
		n, err := strconv.Atoi(f[7])
		if err != nil || f[8] != "bytes," {
			t.Fatalf("unexpected inittrace line %q", sc.Text())
		}
		if n > budget {
			t.Errorf("%s allocates %d bytes at init (budget %d): make it lazy (internal/lazyre, sync.OnceValue)", f[1], n, budget)
		}
	}
	if seen == 0 {
		t.Fatalf("no init of the reconciler's packages traced:\n%s", stderr.String())
	}
}
