// Package procs answers, from /proc, which release a process runs from:
// the working directory of a service's processes, and which releases any
// live process still uses.
package procs

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Proc is the proc filesystem; a variable so tests can point it elsewhere.
var Proc = "/proc"

// Tree returns pid and all its descendants, pid first.
func Tree(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir(Proc)
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := ppid(p); pp > 0 {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		kids := children[out[i]]
		sort.Ints(kids)
		out = append(out, kids...)
	}
	return out
}

// stat returns the fields of /proc/<pid>/stat after the command name,
// the first being the state (field 3); nil when the process is gone. The
// command name, in parentheses, may hold spaces and parentheses: the
// fields start after the last ')'.
func stat(pid int) []string {
	b, err := os.ReadFile(filepath.Join(Proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func ppid(pid int) int {
	f := stat(pid)
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// StartTime is when pid started, in clock ticks since boot (field 22 of
// /proc/<pid>/stat): with the pid, it names one process even after the
// pid is reused. 0 when the process is gone.
func StartTime(pid int) uint64 {
	f := stat(pid)
	if len(f) < 20 {
		return 0
	}
	t, _ := strconv.ParseUint(f[19], 10, 64)
	return t
}

// Cwd returns the working directory of pid, as the kernel resolved it.
func Cwd(pid int) (string, error) {
	return os.Readlink(filepath.Join(Proc, strconv.Itoa(pid), "cwd"))
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	f := stat(pid)
	return len(f) > 0 && f[0] != "Z"
}

// InUse returns, for each directory directly under dir that some live
// process has as its working directory (or a folder inside it), the pids.
// Processes we may not inspect are skipped.
func InUse(dir string) map[string][]int {
	out := map[string][]int{}
	entries, _ := os.ReadDir(Proc)
	prefix := filepath.Clean(dir) + "/"
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := Cwd(pid)
		if err != nil || !strings.HasPrefix(cwd, prefix) {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(cwd, prefix), "/")
		name = strings.TrimSuffix(name, " (deleted)")
		out[name] = append(out[name], pid)
	}
	return out
}
