package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemonBench measures `reconciler run` with a config repository: the time
// from a commit to "apply started" in the daemon's log, for a local repo
// (watched) and a remote one (polled every second over the file
// transport); then the idle daemon's resident memory and CPU time.
func (b *bench) daemon() {
	app := filepath.Join(b.dir, "daemon-app")
	run("git", "init", "-q", "-b", "main", app)
	run("git", "-C", app, "commit", "-q", "--allow-empty", "-m", "v1")
	sha := run("git", "-C", app, "rev-parse", "HEAD")
	commits := 20
	if b.runs < 20 {
		commits = 5
	}
	for _, remote := range []bool{false, true} {
		name := "local"
		cfg := filepath.Join(b.dir, "daemon-cfg-"+name)
		if remote {
			name = "remote"
			cfg = filepath.Join(b.dir, "daemon-cfg-remote")
		}
		run("git", "init", "-q", "-b", "main", cfg)
		root := filepath.Join(b.dir, "daemon-host-"+name)
		write := func(i int) {
			y := fmt.Sprintf("app: bench\nroot: %s\nsource: {repo: %s, commit: %s}\n# change %d\n", root, app, sha, i)
			check(os.WriteFile(filepath.Join(cfg, "d.yaml"), []byte(y), 0o644))
			run("git", "-C", cfg, "add", "-A")
			run("git", "-C", cfg, "commit", "-qm", fmt.Sprint(i))
		}
		write(0)
		url := cfg
		args := []string{"run", "--listen", "", "--config-path", "d.yaml", "--config-cache", filepath.Join(b.dir, "daemon-cache-"+name)}
		if remote {
			url = "file://" + cfg // not watched: polled, through the transport
			args = append(args, "--poll", "1s")
		}
		args = append(args, "--config-repo", url)
		cmd := exec.Command(b.bin, args...)
		cmd.Env = gitEnv()
		stderr, err := cmd.StderrPipe()
		check(err)
		check(cmd.Start())
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if strings.Contains(sc.Text(), `"apply started"`) {
					lines <- sc.Text()
				}
			}
			close(lines)
		}()
		<-lines // startup
		var ds []time.Duration
		for i := 1; i <= commits; i++ {
			write(i)
			t0 := time.Now()
			want := run("git", "-C", cfg, "rev-parse", "HEAD")
			for line := range lines {
				if strings.Contains(line, want) {
					break
				}
			}
			ds = append(ds, time.Since(t0))
			time.Sleep(150 * time.Millisecond)
		}
		if remote {
			fmt.Printf("commit -> apply started, remote repo:    %9s   baseline the --poll interval 1000 ms (median of %d)\n", ms(median(ds)), commits)
		} else {
			fmt.Printf("commit -> apply started, local repo:     %9s   baseline the watch debounce 100 ms; target < 1 s: %s (median of %d)\n",
				ms(median(ds)), verdict(median(ds) < time.Second), commits)
		}
		if !remote {
			// Idle: nothing changes; the daemon only waits.
			idle := 60 * time.Second
			if b.runs < 20 {
				idle = 10 * time.Second
			}
			u0 := cpuTime(cmd.Process.Pid)
			time.Sleep(idle)
			cpu := cpuTime(cmd.Process.Pid) - u0
			rss := rssKB(cmd.Process.Pid)
			base := exec.Command(b.bin, "version")
			check(base.Run())
			baseRSS := base.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
			fmt.Printf("idle daemon resident memory:            %6d MB   baseline `reconciler version` %d MB   (target < 40 MB: %s)\n",
				rss>>10, baseRSS>>10, verdict(rss < 40<<10))
			fmt.Printf("idle daemon CPU per idle minute:        %9s   (measured over %s; /proc resolution 10 ms)\n", ms(cpu*time.Minute/idle), idle)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
}

// cpuTime is the user+system CPU time of pid, from /proc.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// rssKB is the resident set size of pid in KiB.
func rssKB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return n
		}
	}
	return 0
}
