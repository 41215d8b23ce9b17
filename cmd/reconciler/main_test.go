package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/reconciler-dev/reconciler/internal/cli"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"reconciler": func() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			for _, kv := range testgit.Env(env.WorkDir + "/home") {
				k, v, _ := strings.Cut(kv, "=")
				if k != "PATH" { // testscript's PATH finds the reconciler command
					env.Setenv(k, v)
				}
			}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"treehash":    treehash,
			"waitfile":    waitfile,
			"waitmatch":   waitmatch,
			"setsha":      setsha,
			"corruptpack": corruptpack,
			"hookserver":  hookserver,
			"sshserver":   sshserver,
			"etcd":        etcdServer,
		},
	})
}

// waitfile FILE waits until FILE exists: how a script knows a background
// apply reached a step (the step creates the file), without sleeping.
func waitfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile FILE")
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(ts.MkAbs(args[0])); err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitfile: %s did not appear", args[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitmatch FILE REGEXP [COUNT] waits until FILE has COUNT (default 1)
// lines matching REGEXP: how a script knows background daemons got as far
// as their commands say, without sleeping.
func waitmatch(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 && len(args) != 3 {
		ts.Fatalf("usage: waitmatch FILE REGEXP [COUNT]")
	}
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	want := 1
	if len(args) == 3 {
		want, err = strconv.Atoi(args[2])
		ts.Check(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(ts.MkAbs(args[0]))
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if re.MatchString(l) {
				n++
			}
		}
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitmatch: %d lines of %s match %q, want %d:\n%s", n, args[0], args[1], want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setsha NAME REPO REV [LEN] sets $NAME to the full SHA of REV in REPO,
// or its first LEN digits, so a script can check that output names the
// right commit.
func setsha(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 && len(args) != 4 {
		ts.Fatalf("usage: setsha NAME REPO REV [LEN]")
	}
	out, err := exec.Command("git", "-C", ts.MkAbs(args[1]), "rev-parse", args[2]).Output()
	ts.Check(err)
	sha := strings.TrimSpace(string(out))
	if len(args) == 4 {
		n, err := strconv.Atoi(args[3])
		ts.Check(err)
		sha = sha[:min(n, len(sha))]
	}
	ts.Setenv(args[0], sha)
}

// treehash DIR FILE writes to FILE a digest of everything under DIR:
// names, types, modes, sizes, mtimes, contents and link targets. Two equal
// digests mean nothing under DIR changed; "absent" means DIR does not exist.
func treehash(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: treehash DIR FILE")
	}
	root := ts.MkAbs(args[0])
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %s %d %d", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += " " + hex.EncodeToString(sum[:])
		}
		lines = append(lines, line)
		return nil
	})
	out := "absent\n"
	if err == nil {
		sort.Strings(lines)
		sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
		out = fmt.Sprintf("%d entries %s\n", len(lines), hex.EncodeToString(sum[:]))
	} else if !os.IsNotExist(err) {
		ts.Fatalf("treehash: %v", err)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(out), 0o644))
}

// corruptpack DIR overwrites 64 bytes in the middle of every pack file of
// the git repository DIR with zeros, as a failing disk might.
func corruptpack(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: corruptpack DIR")
	}
	packs, err := filepath.Glob(filepath.Join(ts.MkAbs(args[0]), "objects", "pack", "*.pack"))
	ts.Check(err)
	if len(packs) == 0 {
		ts.Fatalf("no pack under %s", args[0])
	}
	for _, p := range packs {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		ts.Check(err)
		fi, err := f.Stat()
		ts.Check(err)
		_, err = f.WriteAt(make([]byte, 64), fi.Size()/2)
		ts.Check(err)
		ts.Check(f.Close())
	}
}

// hookSecret is the secret part of the webhook URLs hookserver makes, as
// in Slack's https://hooks.slack.com/services/T…/B…/<token>: a script
// checks it is never shown.
const hookSecret = "/services/T0001/B0001/s3cr3tT0ken"

// hookserver NAME [STATUS...] starts a webhook receiver on 127.0.0.1 for
// the rest of the script. It appends each request's body, one JSON per
// line, to NAME.posts, and answers with the given statuses in turn, the
// last one from then on (200 without any), echoing the request's path in
// the answer as some servers do. $NAME is its URL with a secret path,
// also written to NAME.url for url_file:. With -down, nothing listens at
// $NAME: a port taken and freed.
func hookserver(ts *testscript.TestScript, neg bool, args []string) {
	down := len(args) > 0 && args[0] == "-down"
	if down {
		args = args[1:]
	}
	if neg || len(args) < 1 || down && len(args) != 1 {
		ts.Fatalf("usage: hookserver [-down] NAME [STATUS...]")
	}
	name := args[0]
	var codes []int
	for _, a := range args[1:] {
		c, err := strconv.Atoi(a)
		ts.Check(err)
		codes = append(codes, c)
	}
	var url string
	if down {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		ts.Check(err)
		url = "http://" + ln.Addr().String()
		ln.Close()
	} else {
		posts := ts.MkAbs(name + ".posts")
		ts.Check(os.WriteFile(posts, nil, 0o644))
		var mu sync.Mutex
		n := 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			defer mu.Unlock()
			f, err := os.OpenFile(posts, os.O_APPEND|os.O_WRONLY, 0)
			if err == nil {
				fmt.Fprintf(f, "%s %s %s\n", r.Method, r.Header.Get("Content-Type"), b)
				f.Close()
			}
			code := 200
			if len(codes) > 0 {
				code = codes[min(n, len(codes)-1)]
			}
			n++
			w.WriteHeader(code)
			fmt.Fprintf(w, "no such hook: %s", r.URL.Path)
		}))
		ts.Defer(srv.Close)
		url = srv.URL
	}
	url += hookSecret
	ts.Setenv(name, url)
	ts.Check(os.WriteFile(ts.MkAbs(name+".url"), []byte(url+"\n"), 0o600))
}

// etcdServer NAME starts a one-member etcd (/usr/bin/etcd) on free
// loopback ports for the rest of the script, its data under the work
// directory, and sets $NAME to its client URL once it answers healthy.
func etcdServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: etcd NAME")
	}
	var ports [2]int
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		ts.Check(err)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	logf, err := os.Create(ts.MkAbs(args[0] + ".log"))
	ts.Check(err)
	cmd := exec.Command("/usr/bin/etcd", "--name", "m0", "--data-dir", ts.MkAbs(args[0]+".data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "m0="+peer, "--initial-cluster-state", "new")
	cmd.Stdout, cmd.Stderr = logf, logf
	ts.Check(cmd.Start())
	ts.Defer(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(client + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"health":"true"`) {
				break
			}
		}
		if time.Now().After(deadline) {
			ts.Fatalf("etcd at %s not healthy after a minute", client)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ts.Setenv(args[0], client)
}
