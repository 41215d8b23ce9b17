package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/fleetgate"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// fleet is issue 12's simulation: one real etcd on loopback and 50 agents
// on this machine, each a `reconciler run --host h-NN` process with its
// own root, reading its desired file from one local config repository
// (watched: a commit there is how every agent learns of a new release),
// and a tiny HTTP server as its service, answering from the release it
// loaded at its last restart. With max_parallel 5 and canary 2:
//
//   - v1 → v2: the most hosts switching at once, measured twice, apart from
//     the code under test's own bookkeeping: from etcd's revision order
//     (a watcher on the group's keys: a host switches from its switched/
//     key to its healthy/ or failed/ key) and from the hosts' own history
//     (the switch step's start to the last health step's end); the
//     migrations run (a line each in a shared log); the wall time from the
//     config commit to the last host healthy; etcd's own request counters
//     before and after, per host.
//   - v2 → v3, a release whose health check fails: the rollout halts after
//     the canaries; every other host's link, history and server still say
//     v2; `reconciler fleet status` says halted.
//
// An invariant that breaks (more than max_parallel at once, migrations
// other than one, a non-canary on the broken release) fails the bench.
// -quick runs 10 agents and a 1s soak.
func (b *bench) fleet() {
	f := &fleetBench{b: b, n: 50, maxParallel: 5, canary: 2, soak: 2 * time.Second,
		dir: filepath.Join(b.dir, "fleet"), timeout: 10 * time.Minute}
	if b.quick {
		f.n, f.soak, f.timeout = 10, time.Second, 2*time.Minute
	}
	if b.agents > 0 {
		f.n = b.agents
	}
	if f.n <= f.canary {
		f.fail("-agents %d: more than the %d canaries needed", f.n, f.canary)
	}
	check(os.MkdirAll(f.dir, 0o755))
	// Stopped on every way out: a failed check, a signal, the end.
	atExit(f.stopAll)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintln(os.Stderr, "bench: fleet:", s)
		exit(1)
	}()
	defer signal.Stop(sig)

	f.startEtcd()
	f.buildServer()
	f.makeApp()
	f.startWatcher()
	f.startServers()
	f.writeConfig(f.shas[0], "v1", true)
	f.startAgents()

	f.printf("fleet: %d agents (`reconciler run`), one etcd 3.4 on loopback; max_parallel %d, canary %d, soak %s, max_failures 0, migrate once\n",
		f.n, f.maxParallel, f.canary, f.soak)
	f.println("  (timings are noisy: a shared 2-core machine, other work running)")

	// v1: the first deploy, a rollout like any other.
	t0 := time.Now()
	f.waitRollout(f.shas[0], "first deploy v1")
	f.printf("  first deploy v1 (the agents start, clone and build):    %9s  to the last host healthy\n", ms(time.Since(t0)))
	f.rollout()
	f.broken()
	f.flush(f.withoutFleet())
	f.stopAll()
}

type fleetBench struct {
	b                   *bench
	n                   int
	maxParallel, canary int
	soak, timeout       time.Duration
	dir                 string

	etcdURL, etcdPeer string
	etcd              *proc
	cli               *clientv3.Client
	events            *eventLog
	srvBin, app, cfg  string
	shas              []string // v1, v2, v3 (broken)
	hosts             []*fleetHost

	mu    sync.Mutex
	procs []*proc

	// out holds the report until the no-fleet baseline, measured last, is
	// known: the rollout's line shows it.
	out strings.Builder
}

func (f *fleetBench) printf(format string, args ...any) { fmt.Fprintf(&f.out, format, args...) }
func (f *fleetBench) println(s string)                  { f.out.WriteString(s + "\n") }

// flush prints the report so far, with the baseline in place.
func (f *fleetBench) flush(baseline string) {
	fmt.Print(strings.ReplaceAll(f.out.String(), "{{baseline}}", baseline))
	f.out.Reset()
}

type fleetHost struct {
	name, dir, root, addr string
	server, agent         *proc
}

const fleetApp, fleetGroup = "fleetbench", "web"

func (f *fleetBench) prefix() string { return "/reconciler/" + fleetApp + "/" + fleetGroup + "/" }

// proc is a process the bench started and stops.
type proc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
}

// start starts a process whose output goes to logFile, killed with the
// bench if the bench dies first.
func (f *fleetBench) start(name, logFile string, stdout io.Writer, args ...string) *proc {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = gitEnv()
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	check(err)
	cmd.Stdout, cmd.Stderr = lf, lf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	check(cmd.Start())
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p
}

// stop sends SIGTERM and waits, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stopAll stops every process the bench started, agents first (their
// leases are revoked while etcd still answers), then the servers, then
// etcd. Safe to call twice.
func (f *fleetBench) stopAll() {
	f.mu.Lock()
	procs := f.procs
	f.procs = nil
	f.mu.Unlock()
	if f.cli != nil {
		f.cli.Close()
		f.cli = nil
	}
	var wg sync.WaitGroup
	for _, kind := range []string{"agent", "server", "etcd"} {
		for _, p := range procs {
			if strings.HasPrefix(p.name, kind) {
				wg.Add(1)
				go func() { defer wg.Done(); p.stop(15 * time.Second) }()
			}
		}
		wg.Wait()
	}
}

func (f *fleetBench) fail(format string, args ...any) {
	f.flush("(not measured)")
	check(fmt.Errorf("fleet: "+format, args...))
}

// startEtcd starts one etcd member on free loopback ports, as
// internal/etcdtest does for the tests (that package needs a testing.TB).
func (f *fleetBench) startEtcd() {
	bin := "/usr/bin/etcd"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("etcd"); err != nil {
			f.fail("etcd is not installed (/usr/bin/etcd; apt-get install etcd-server)")
		}
	}
	var lastLog string
	// A port picked free may be taken before etcd binds it: try again.
	for attempt := 0; attempt < 3; attempt++ {
		ports := freePorts(2)
		f.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		f.etcdPeer = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		data := filepath.Join(f.dir, fmt.Sprintf("etcd-%d", attempt))
		log := data + ".log"
		f.etcd = f.start("etcd", log, nil, bin, "--name", "m0", "--data-dir", data,
			"--listen-client-urls", f.etcdURL, "--advertise-client-urls", f.etcdURL,
			"--listen-peer-urls", f.etcdPeer, "--initial-advertise-peer-urls", f.etcdPeer,
			"--initial-cluster", "m0="+f.etcdPeer, "--initial-cluster-state", "new",
			"--logger", "zap", "--log-outputs", log)
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) && f.etcd.alive() {
			if etcdHealthy(f.etcdURL) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		f.etcd.stop(5 * time.Second)
		b, _ := os.ReadFile(log)
		lastLog = string(b)
		if !strings.Contains(lastLog, "address already in use") {
			break
		}
	}
	f.fail("etcd did not start:\n%s", tail(lastLog, 4096))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func etcdHealthy(url string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b), `"health":"true"`)
}

func freePorts(n int) []int {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// fleetServer is every agent's service: it answers from the release the
// link pointed at when it started or was last restarted (a POST to
// /-/restart, which the agent's restart command makes and waits for), as
// gunicorn serves the code it loaded until a HUP. /health answers 500
// while that release holds a file BROKEN.
const fleetServer = `package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "restart" {
		resp, err := http.Post(os.Args[2]+"/-/restart", "text/plain", nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fmt.Fprintln(os.Stderr, resp.Status)
			os.Exit(1)
		}
		return
	}
	root := os.Args[2]
	var mu sync.Mutex
	var version string
	var broken bool
	load := func() string {
		mu.Lock()
		defer mu.Unlock()
		version, broken = "", false
		rel, err := os.Readlink(filepath.Join(root, "current"))
		if err != nil {
			return "no release"
		}
		if !filepath.IsAbs(rel) {
			rel = filepath.Join(root, rel)
		}
		b, err := os.ReadFile(filepath.Join(rel, "VERSION"))
		if err != nil {
			return err.Error()
		}
		version = strings.TrimSpace(string(b))
		_, err = os.Stat(filepath.Join(rel, "BROKEN"))
		broken = err == nil
		return version
	}
	load()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		v, b := version, broken
		mu.Unlock()
		switch {
		case v == "":
			http.Error(w, "no release", http.StatusServiceUnavailable)
		case b:
			http.Error(w, "broken "+v, http.StatusInternalServerError)
		default:
			fmt.Fprintln(w, "ok", v)
		}
	})
	http.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(w, version)
	})
	http.HandleFunc("/-/restart", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, load())
	})
	http.Serve(ln, nil)
}
`

func (f *fleetBench) buildServer() {
	src := filepath.Join(f.dir, "server-src")
	check(os.MkdirAll(src, 0o755))
	check(os.WriteFile(filepath.Join(src, "go.mod"), []byte("module fleetserver\n\ngo 1.26\n"), 0o644))
	check(os.WriteFile(filepath.Join(src, "main.go"), []byte(fleetServer), 0o644))
	f.srvBin = filepath.Join(f.dir, "server")
	cmd := exec.Command("go", "build", "-o", f.srvBin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		f.fail("go build the server: %v\n%s", err, out)
	}
}

// makeApp commits v1, v2, v3 (with BROKEN: its health check fails) and
// v4 (without).
func (f *fleetBench) makeApp() {
	f.app = filepath.Join(f.dir, "app")
	run("git", "init", "-q", "-b", "main", f.app)
	for _, v := range []string{"v1", "v2", "v3", "v4"} {
		check(os.WriteFile(filepath.Join(f.app, "VERSION"), []byte(v+"\n"), 0o644))
		switch v {
		case "v3":
			check(os.WriteFile(filepath.Join(f.app, "BROKEN"), []byte("health fails\n"), 0o644))
		case "v4":
			check(os.Remove(filepath.Join(f.app, "BROKEN")))
		}
		run("git", "-C", f.app, "add", "-A")
		run("git", "-C", f.app, "commit", "-qm", v)
		f.shas = append(f.shas, run("git", "-C", f.app, "rev-parse", "HEAD"))
	}
	f.cfg = filepath.Join(f.dir, "config")
	run("git", "init", "-q", "-b", "main", f.cfg)
	check(os.MkdirAll(filepath.Join(f.cfg, "hosts"), 0o755))
}

func (f *fleetBench) startServers() {
	for i := 0; i < f.n; i++ {
		h := &fleetHost{name: fmt.Sprintf("h-%02d", i)}
		h.dir = filepath.Join(f.dir, h.name)
		h.root = filepath.Join(h.dir, "root")
		check(os.MkdirAll(h.dir, 0o755))
		r, w := io.Pipe()
		h.server = f.start("server "+h.name, filepath.Join(h.dir, "server.log"), w, f.srvBin, "serve", h.root)
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil {
			f.fail("server of %s: %v", h.name, err)
		}
		// The server prints nothing more; the pipe's reader is dropped.
		go io.Copy(io.Discard, r)
		h.addr = strings.TrimSpace(line)
		f.hosts = append(f.hosts, h)
	}
}

// writeConfig commits every host's desired file at commit sha, in one
// commit of the config repository: the rollout starts there. Without
// withFleet, fleet: is left out: every host deploys at once, as before
// issue 12.
func (f *fleetBench) writeConfig(sha, msg string, withFleet bool) {
	migrations := filepath.Join(f.dir, "migrations.log")
	// Nothing host-specific in what the target's fingerprint covers
	// (env, build, migrate, shared): hosts whose fingerprints differ are
	// in different rollouts. The migration names its host by its root,
	// <dir>/h-NN/root.
	for _, h := range f.hosts {
		y := fmt.Sprintf(`app: %s
root: %s
source: {repo: %s, commit: %s}
build:
  - {name: b, run: "cat VERSION > built"}
migrate:
  run: echo "$(cat VERSION) $(basename $(dirname $RECONCILER_ROOT))" >> %s
services:
  - {name: web, manager: command, restart: "%s restart http://%s"}
health:
  - {http: "http://%s/health", timeout: 30s, interval: 100ms}
`, fleetApp, h.root, f.app, sha, migrations, f.srvBin, h.addr, h.addr)
		if withFleet {
			y += fmt.Sprintf("fleet: {group: %s, max_parallel: %d, canary: %d, soak: %s, max_failures: 0, migrate: once}\n",
				fleetGroup, f.maxParallel, f.canary, f.soak)
		}
		check(os.WriteFile(filepath.Join(f.cfg, "hosts", h.name+".yaml"), []byte(y), 0o644))
	}
	run("git", "-C", f.cfg, "add", "-A")
	run("git", "-C", f.cfg, "commit", "-qm", msg)
}

func (f *fleetBench) startAgents() {
	for _, h := range f.hosts {
		h.agent = f.start("agent "+h.name, filepath.Join(h.dir, "agent.log"), nil, f.b.bin, "run",
			"--config-repo", f.cfg, "--config-path", "hosts/"+h.name+".yaml",
			"--host", h.name, "--etcd", f.etcdURL, "--listen=",
			"--state-dir", filepath.Join(h.dir, "state"))
	}
}

// event is one change under the group's prefix, as the bench's watcher
// saw it.
type event struct {
	rev int64
	put bool
	key string // relative to the group's prefix
	val string
	at  time.Time // when the bench received it
}

// eventLog is every change under the group's prefix, in revision order.
type eventLog struct {
	mu      sync.Mutex
	evs     []event
	resps   int // watch responses the bench received (its own share of etcd's sent messages)
	changed chan struct{}
	err     error
}

func (f *fleetBench) startWatcher() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{f.etcdURL}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	check(err)
	f.cli = cli
	f.events = &eventLog{changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cli.Get(ctx, "/", clientv3.WithCountOnly())
	check(err)
	wc := cli.Watch(context.Background(), f.prefix(), clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1))
	l := f.events
	go func() {
		for resp := range wc {
			now := time.Now()
			l.mu.Lock()
			l.resps++
			if err := resp.Err(); err != nil {
				l.err = err
			}
			for _, e := range resp.Events {
				l.evs = append(l.evs, event{rev: e.Kv.ModRevision, put: e.Type == clientv3.EventTypePut,
					key: strings.TrimPrefix(string(e.Kv.Key), f.prefix()), val: string(e.Kv.Value), at: now})
			}
			l.mu.Unlock()
			select {
			case l.changed <- struct{}{}:
			default:
			}
		}
	}()
}

// until waits for cond over the events so far, failing the bench after
// the timeout.
func (f *fleetBench) until(what string, cond func([]event) bool) {
	deadline := time.NewTimer(f.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		l := f.events
		l.mu.Lock()
		evs, err := slices.Clone(l.evs), l.err
		l.mu.Unlock()
		if err != nil {
			f.fail("watch %s: %v", f.prefix(), err)
		}
		// Outside the lock: cond may fail the bench, which stops the
		// watcher.
		if cond(evs) {
			return
		}
		for _, h := range f.hosts {
			if h.agent != nil && !h.agent.alive() {
				f.fail("the agent of %s exited while waiting for %s; its log:\n%s", h.name, what, logTail(filepath.Join(h.dir, "agent.log")))
			}
		}
		select {
		case <-l.changed:
		case <-tick.C:
		case <-deadline.C:
			f.fail("%s: not within %s; the hosts' last statuses:\n%s", what, f.timeout, f.statuses())
		}
	}
}

// statuses are the hosts' last statuses in etcd, one a line.
func (f *fleetBench) statuses() string {
	var out []string
	for _, e := range f.snapshot() {
		if strings.HasPrefix(e.key, "agents/") && e.put {
			out = append(out, e.key+" "+e.val)
		}
	}
	return strings.Join(out[max(0, len(out)-3*f.n):], "\n")
}

func logTail(path string) string {
	b, _ := os.ReadFile(path)
	return tail(string(b), 4096)
}

func (f *fleetBench) snapshot() []event {
	f.events.mu.Lock()
	defer f.events.mu.Unlock()
	return slices.Clone(f.events.evs)
}

// rolloutOf is the etcd key (<commit>-<fingerprint>) of sha's rollout,
// from the events; "" before any.
func rolloutOf(evs []event, sha string) string {
	for _, e := range evs {
		if rest, ok := strings.CutPrefix(e.key, "rollouts/"+sha+"-"); ok {
			fp, _, _ := strings.Cut(rest, "/")
			return sha + "-" + fp
		}
	}
	return ""
}

// settled reports whether every host's status names sha's rollout with
// an apply's outcome (not built, not waiting).
func (f *fleetBench) settled(evs []event, sha string) bool {
	last := map[string]fleetgate.Status{}
	for _, e := range evs {
		if h, ok := strings.CutPrefix(e.key, "agents/"); ok && e.put {
			var s fleetgate.Status
			if json.Unmarshal([]byte(e.val), &s) == nil {
				last[h] = s
			}
		}
	}
	for _, h := range f.hosts {
		s, ok := last[h.name]
		if !ok || !strings.HasPrefix(s.Target, sha+"-") || s.State == fleetgate.StateBuilt || s.State == "starting" || strings.HasPrefix(s.State, "waiting") {
			return false
		}
	}
	return true
}

// hostsUnder are the hosts with a put key rollouts/<t>/<kind>/<host>.
func hostsUnder(evs []event, t, kind string) map[string]time.Time {
	out := map[string]time.Time{}
	if t == "" {
		return out
	}
	p := "rollouts/" + t + "/" + kind + "/"
	for _, e := range evs {
		if h, ok := strings.CutPrefix(e.key, p); ok && e.put {
			if _, seen := out[h]; !seen {
				out[h] = e.at
			}
		}
	}
	return out
}

// waitRollout waits until every host is healthy on sha and has reported
// the apply's end.
func (f *fleetBench) waitRollout(sha, what string) {
	f.until(what, func(evs []event) bool {
		t := rolloutOf(evs, sha)
		if fl := hostsUnder(evs, t, "failed"); len(fl) > 0 {
			f.fail("%s: hosts failed: %v", what, keys(fl))
		}
		return len(hostsUnder(evs, t, "healthy")) == f.n && f.settled(evs, sha)
	})
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// etcdMetrics reads etcd's Prometheus counters: name{labels} → value.
func (f *fleetBench) etcdMetrics() map[string]float64 {
	m, err := f.readMetrics()
	check(err)
	return m
}

func (f *fleetBench) readMetrics() (map[string]float64, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(f.etcdURL + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// grpcCounts sums a gRPC counter of etcd by method, for one grpc_type.
func grpcCounts(m map[string]float64, counter, typ string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if !strings.HasPrefix(k, counter+"{") || !strings.Contains(k, `grpc_type="`+typ+`"`) {
			continue
		}
		_, rest, _ := strings.Cut(k, `grpc_method="`)
		method, _, _ := strings.Cut(rest, `"`)
		out[method] += v
	}
	return out
}

func diff(after, before map[string]float64) (map[string]float64, float64) {
	out := map[string]float64{}
	total := 0.0
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
			total += d
		}
	}
	return out, total
}

// perHost renders counts per method divided by the hosts, largest first.
func (f *fleetBench) perHost(m map[string]float64) string {
	ks := keys(m)
	sort.SliceStable(ks, func(i, j int) bool { return m[ks[i]] > m[ks[j]] })
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, m[k]/float64(f.n)))
	}
	return strings.Join(parts, ", ")
}

// interval is a span of one host's switch.
type interval struct {
	host       string
	start, end time.Time
	startRev   int64 // etcd only
	endRev     int64
}

// maxOverlap is the most intervals open at once, and who they were.
// Ends sort before starts at the same instant: a slot freed and taken in
// one instant is not two at once.
func maxOverlap(iv []interval, byRev bool) (int, []string) {
	type edge struct {
		at    int64
		start bool
		host  string
	}
	var es []edge
	for _, x := range iv {
		if byRev {
			es = append(es, edge{x.startRev, true, x.host}, edge{x.endRev, false, x.host})
		} else {
			es = append(es, edge{x.start.UnixNano(), true, x.host}, edge{x.end.UnixNano(), false, x.host})
		}
	}
	sort.Slice(es, func(i, j int) bool {
		if es[i].at != es[j].at {
			return es[i].at < es[j].at
		}
		return !es[i].start && es[j].start
	})
	open := map[string]bool{}
	best, who := 0, []string(nil)
	for _, e := range es {
		if e.start {
			open[e.host] = true
		} else {
			delete(open, e.host)
		}
		if len(open) > best {
			best, who = len(open), keys(open)
		}
	}
	return best, who
}

// etcdSwitches are the hosts' switches to target t in etcd's revision
// order: from the put of switched/<h> (in the slot's transaction) to the
// put of healthy/<h> or failed/<h> (in the release's).
func etcdSwitches(evs []event, t string) []interval {
	open := map[string]interval{}
	var out []interval
	p := "rollouts/" + t + "/"
	for _, e := range evs {
		rest, ok := strings.CutPrefix(e.key, p)
		if !ok || !e.put {
			continue
		}
		kind, h, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		switch kind {
		case "switched":
			open[h] = interval{host: h, startRev: e.rev, start: e.at}
		case "healthy", "failed":
			if x, ok := open[h]; ok {
				x.endRev, x.end = e.rev, e.at
				out = append(out, x)
				delete(open, h)
			}
		}
	}
	for _, x := range open { // still switching: open to the end
		x.endRev, x.end = 1<<62, time.Now()
		out = append(out, x)
	}
	return out
}

// slotOverwrites counts puts on a slot key while another host held it:
// the etcd transaction that takes a slot must never let that happen.
func slotOverwrites(evs []event) int {
	holder := map[string]string{}
	n := 0
	for _, e := range evs {
		if !strings.HasPrefix(e.key, "slots/") {
			continue
		}
		if !e.put {
			delete(holder, e.key)
			continue
		}
		h, _, _ := strings.Cut(e.val, " ")
		if old, ok := holder[e.key]; ok && old != h {
			n++
		}
		holder[e.key] = h
	}
	return n
}

// maxSlotsHeld is the most slot keys present at once.
func maxSlotsHeld(evs []event) int {
	held := map[string]bool{}
	best := 0
	for _, e := range evs {
		if !strings.HasPrefix(e.key, "slots/") {
			continue
		}
		if e.put {
			held[e.key] = true
		} else {
			delete(held, e.key)
		}
		best = max(best, len(held))
	}
	return best
}

// hostSwitches reads each host's own history: for its apply to sha, the
// switch step's start to the end of its last step after it (the services
// and health checks, or the revert): the span the slot must cover.
func (f *fleetBench) hostSwitches(sha string) []interval {
	var out []interval
	for _, h := range f.hosts {
		recs, _, err := history.Read(layout.New(h.root, "current").HistoryFile())
		check(err)
		var cur *interval
		for _, r := range recs {
			if r.Kind != history.KindStep {
				continue
			}
			if strings.HasPrefix(r.Step, "switch") && r.Commit == sha {
				if cur != nil {
					out = append(out, *cur)
				}
				start := r.Time.Add(-time.Duration(r.Duration * float64(time.Second)))
				cur = &interval{host: h.name, start: start, end: r.Time}
				continue
			}
			if cur != nil && !strings.HasPrefix(r.Step, "prune") {
				cur.end = r.Time
			}
		}
		if cur != nil {
			out = append(out, *cur)
		}
	}
	return out
}

// switchedTo reports whether host h's history holds a switch step to sha.
func (f *fleetBench) switchedTo(h *fleetHost, sha string) bool {
	recs, _, err := history.Read(layout.New(h.root, "current").HistoryFile())
	check(err)
	for _, r := range recs {
		if r.Kind == history.KindStep && strings.HasPrefix(r.Step, "switch") && r.Commit == sha && r.Result == "ok" {
			return true
		}
	}
	return false
}

// linkedCommit is the commit of the release h's link points at.
func linkedCommit(h *fleetHost) string {
	l := layout.New(h.root, "current")
	target, err := os.Readlink(l.LinkPath())
	check(err)
	r, err := record.ReadRelease(l.RecordFile(filepath.Base(target)))
	check(err)
	return r.Commit
}

// served is what h's server answers on /version.
func served(h *fleetHost) string {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + h.addr + "/version")
	check(err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// migrations counts the lines of the shared migration log for version v.
func (f *fleetBench) migrations(v string) (int, []string) {
	b, err := os.ReadFile(filepath.Join(f.dir, "migrations.log"))
	if os.IsNotExist(err) {
		return 0, nil
	}
	check(err)
	n, by := 0, []string(nil)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if ver, host, _ := strings.Cut(line, " "); ver == v {
			n++
			by = append(by, host)
		}
	}
	return n, by
}

// rss sums the resident memory of the processes whose names start with
// kind, in KiB.
func (f *fleetBench) rss(kind string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sum int64
	for _, p := range f.procs {
		if strings.HasPrefix(p.name, kind) && p.alive() {
			sum += rssKB(p.cmd.Process.Pid)
		}
	}
	return sum
}

// groupCounts are the keys under the group's prefix now, and the leases
// etcd holds.
func (f *fleetBench) groupCounts() (keysN, agentKeys int, perRollout map[string]int, leases int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := f.cli.Get(ctx, f.prefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	check(err)
	perRollout = map[string]int{}
	for _, kv := range r.Kvs {
		k := strings.TrimPrefix(string(kv.Key), f.prefix())
		switch {
		case strings.HasPrefix(k, "agents/"):
			agentKeys++
		case strings.HasPrefix(k, "rollouts/"):
			t, _, _ := strings.Cut(strings.TrimPrefix(k, "rollouts/"), "/")
			perRollout[t]++
		}
	}
	ls, err := f.cli.Leases(ctx)
	check(err)
	return len(r.Kvs), agentKeys, perRollout, len(ls.Leases)
}

// rollout is v1 → v2 and its figures.
func (f *fleetBench) rollout() {
	sha := f.shas[1]
	before := f.etcdMetrics()
	f.events.mu.Lock()
	respsBefore, evsBefore := f.events.resps, len(f.events.evs)
	f.events.mu.Unlock()

	// The watchers etcd holds, sampled while the rollout runs.
	stop := make(chan struct{})
	peakWatchers := make(chan float64, 1)
	go func() {
		peak := 0.0
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				peakWatchers <- peak
				return
			case <-tick.C:
				// A missed sample only lowers the peak; the figures
				// after the rollout say whether etcd answers.
				if m, err := f.readMetrics(); err == nil {
					peak = max(peak, m["etcd_debugging_mvcc_watcher_total"])
				}
			}
		}
	}()

	t0 := time.Now()
	f.writeConfig(sha, "v2", true)
	f.waitRollout(sha, "rollout v1 → v2")
	close(stop)
	peak := <-peakWatchers
	after := f.etcdMetrics()
	f.events.mu.Lock()
	respsAfter := f.events.resps
	f.events.mu.Unlock()
	evs := f.snapshot()
	t := rolloutOf(evs, sha)

	// Wall time: the commit to the last host's last health check, from
	// the hosts' own history; the etcd view beside it.
	hostIv := f.hostSwitches(sha)
	if len(hostIv) != f.n {
		f.fail("rollout v2: %d hosts' histories hold a switch to v2, want %d", len(hostIv), f.n)
	}
	var last time.Time
	for _, x := range hostIv {
		if x.end.After(last) {
			last = x.end
		}
	}
	built := hostsUnder(evs, t, "built")
	healthy := hostsUnder(evs, t, "healthy")
	latest := func(m map[string]time.Time, only []string) time.Time {
		var l time.Time
		for h, at := range m {
			if (only == nil || slices.Contains(only, h)) && at.After(l) {
				l = at
			}
		}
		return l
	}
	var canaries []string
	for _, e := range evs {
		if e.key == "rollouts/"+t+"/canaries" {
			json.Unmarshal([]byte(e.val), &canaries)
		}
	}
	for _, h := range f.hosts {
		if v := served(h); v != "v2" {
			f.fail("rollout v2: %s's server answers %q, want v2", h.name, v)
		}
	}

	etcdMax, etcdWho := maxOverlap(etcdSwitches(evs, t), true)
	hostMax, hostWho := maxOverlap(hostIv, false)
	over := slotOverwrites(evs)
	slotsMax := maxSlotsHeld(evs[evsBefore:])
	migr, by := f.migrations("v2")

	var spans []time.Duration
	for _, x := range hostIv {
		spans = append(spans, x.end.Sub(x.start))
	}
	wall := last.Sub(t0)
	f.printf("  rollout v1 → v2, commit to last host healthy:           %9s   baseline without fleet: (all at once) {{baseline}}\n", ms(wall))
	f.printf("    (commit → all %d built %s, canaries %s healthy %s, last healthy in etcd %s)\n",
		f.n, ms(latest(built, nil).Sub(t0)), strings.Join(canaries, " "), ms(latest(healthy, canaries).Sub(t0)), ms(latest(healthy, nil).Sub(t0)))
	f.printf("  most hosts switching at once, etcd revision order:      %6d      limit max_parallel %d (%s); at that moment %s\n",
		etcdMax, f.maxParallel, verdict(etcdMax <= f.maxParallel), strings.Join(etcdWho, " "))
	f.printf("  most hosts switching at once, the hosts' histories:     %6d      limit max_parallel %d (%s); switch step to last health check\n",
		hostMax, f.maxParallel, verdict(hostMax <= f.maxParallel))
	f.printf("    (slot keys held at once at most %d; a slot taken while another host held it: %d; a host's switch to its last health check: median %s)\n",
		slotsMax, over, ms(median(spans)))
	f.printf("  migrations run for v2:                                  %6d      target exactly 1 (%s), by %s; the others recorded `done by`\n",
		migr, verdict(migr == 1), strings.Join(by, " "))

	// etcd's load, from its own counters, the bench's watcher taken out.
	unary, unaryTotal := diff(grpcCounts(after, "grpc_server_handled_total", "unary"), grpcCounts(before, "grpc_server_handled_total", "unary"))
	recv, _ := diff(grpcCounts(after, "grpc_server_msg_received_total", "bidi_stream"), grpcCounts(before, "grpc_server_msg_received_total", "bidi_stream"))
	sent, _ := diff(grpcCounts(after, "grpc_server_msg_sent_total", "bidi_stream"), grpcCounts(before, "grpc_server_msg_sent_total", "bidi_stream"))
	sent["Watch"] -= float64(respsAfter - respsBefore)
	n := float64(f.n)
	f.printf("  etcd requests per host for the rollout:                 %6.1f      unary requests (%s)\n", unaryTotal/n, f.perHost(unary))
	f.printf("    stream messages per host: watch requests (create/cancel) %.1f, lease keepalives %.1f; watch responses sent per host %.1f\n",
		recv["Watch"]/n, recv["LeaseKeepAlive"]/n, sent["Watch"]/n)
	mvcc := func(k string) float64 { return after[k] - before[k] }
	f.printf("    etcd did %.0f puts, %.0f txns, %.0f ranges, %.0f deletes in %s (%.1f writes per host)\n",
		mvcc("etcd_mvcc_put_total"), mvcc("etcd_mvcc_txn_total"), mvcc("etcd_mvcc_range_total"), mvcc("etcd_mvcc_delete_total"),
		ms(time.Since(t0)), (mvcc("etcd_mvcc_put_total")+mvcc("etcd_mvcc_delete_total"))/n)
	keysN, agentKeys, perRollout, leases := f.groupCounts()
	f.printf("  etcd keys per host:                                     %6.1f      %d keys: %d agent statuses, %d for the v2 rollout (%d rollouts kept); %d leases (%.1f per host); peak %.0f watchers (%.1f per host)\n",
		float64(keysN)/n, keysN, agentKeys, perRollout[t], len(perRollout), leases, float64(leases)/n, peak-1, (peak-1)/n)
	agentsRSS, serversRSS, etcdRSS := f.rss("agent"), f.rss("server"), f.rss("etcd")
	f.printf("  resident memory:                                       %6d MB   %d agents %d MB (%.1f MB each), %d servers %d MB, etcd %d MB\n",
		(agentsRSS+serversRSS+etcdRSS)>>10, f.n, agentsRSS>>10, float64(agentsRSS)/1024/n, f.n, serversRSS>>10, etcdRSS>>10)

	if etcdMax > f.maxParallel || hostMax > f.maxParallel || over > 0 {
		f.fail("more than max_parallel %d hosts switched at once: etcd order %d (%v), histories %d (%v), slot overwrites %d",
			f.maxParallel, etcdMax, etcdWho, hostMax, hostWho, over)
	}
	if migr != 1 {
		f.fail("rollout v2: %d migrations ran (%v), want exactly 1", migr, by)
	}
}

// broken is v2 → v3, whose health check fails: the rollout halts after
// the canaries, and no other host switches.
func (f *fleetBench) broken() {
	sha, good := f.shas[2], f.shas[1]
	t0 := time.Now()
	f.writeConfig(sha, "v3 (broken)", true)
	var t string
	f.until("the broken rollout to halt", func(evs []event) bool {
		t = rolloutOf(evs, sha)
		halted := false
		for _, e := range evs {
			if e.key == "rollouts/"+t+"/halted" {
				halted = true
			}
		}
		return t != "" && halted && f.settled(evs, sha)
	})
	haltedIn := time.Since(t0)
	evs := f.snapshot()
	var canaries []string
	var why string
	for _, e := range evs {
		switch e.key {
		case "rollouts/" + t + "/canaries":
			json.Unmarshal([]byte(e.val), &canaries)
		case "rollouts/" + t + "/halted":
			why = e.val
		}
	}
	etcdSwitched := hostsUnder(evs, t, "switched")
	failed := hostsUnder(evs, t, "failed")
	// Every non-canary host: its link, its history and its server.
	var others []string
	for _, h := range f.hosts {
		if slices.Contains(canaries, h.name) {
			continue
		}
		bad := []string{}
		if c := linkedCommit(h); c != good {
			bad = append(bad, "linked "+short8(c))
		}
		if f.switchedTo(h, sha) {
			bad = append(bad, "its history holds a switch to v3")
		}
		if _, ok := etcdSwitched[h.name]; ok {
			bad = append(bad, "it took a slot for v3")
		}
		if v := served(h); v != "v2" {
			bad = append(bad, "its server answers "+v)
		}
		if len(bad) > 0 {
			others = append(others, h.name+": "+strings.Join(bad, ", "))
		}
	}
	var canaryState []string
	for _, c := range canaries {
		h := f.hosts[slices.IndexFunc(f.hosts, func(h *fleetHost) bool { return h.name == c })]
		st := "switched to v3"
		if !f.switchedTo(h, sha) {
			st = "never switched"
		}
		if linkedCommit(h) == good {
			st += ", back on v2"
		}
		canaryState = append(canaryState, c+" "+st)
	}
	migr, by := f.migrations("v3")

	why, _, _ = strings.Cut(why, " (last ") // fleet status below shows the rest
	f.printf("  broken release v3: halted in %s after the canaries (%s): %s\n", ms(haltedIn), strings.Join(canaryState, "; "), why)
	f.printf("  non-canary hosts switched to the broken release:        %6d      target 0 (%s): link, history, server and etcd checked on each of %d; %d took a slot, %d failed\n",
		len(others), verdict(len(others) == 0), f.n-len(canaries), len(etcdSwitched), len(failed))
	f.printf("    (its migration ran %d time(s), by %s, before any switch: migrate: once runs after the build, before the slot)\n", migr, strings.Join(by, " "))

	out, err := exec.Command(f.b.bin, "fleet", "status", "-f", filepath.Join(f.cfg, "hosts", f.hosts[0].name+".yaml"), "--etcd", f.etcdURL).CombinedOutput()
	if err != nil {
		f.fail("fleet status: %v\n%s", err, out)
	}
	f.println("  `reconciler fleet status`, the broken rollout:")
	show := false
	statusHalted := false
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.HasPrefix(line, "Rollout ") {
			show = strings.HasPrefix(line, "Rollout "+short8(sha))
			if show && strings.HasSuffix(line, ": halted") {
				statusHalted = true
			}
		}
		if show {
			f.println("    " + line)
		}
	}
	if !statusHalted {
		f.fail("fleet status does not show the rollout of v3 halted:\n%s", out)
	}
	if len(others) > 0 {
		f.fail("non-canary hosts switched to the broken release: %s", strings.Join(others, "; "))
	}
	if migr != 1 {
		f.fail("rollout v3: %d migrations ran (%v), want exactly 1", migr, by)
	}
}

// withoutFleet is the baseline, measured last: v3 → v4 with fleet: taken
// out of every desired file, as hosts deployed before issue 12: each the
// moment it sees the commit, each running the migration. It shows the
// measures above would see more than max_parallel at once. It returns
// the wall time for the rollout's line.
func (f *fleetBench) withoutFleet() string {
	sha := f.shas[3]
	t0 := time.Now()
	f.writeConfig(sha, "v4, without fleet:", false)
	deadline := time.Now().Add(f.timeout)
	done := map[string]bool{}
	for len(done) < f.n {
		for _, h := range f.hosts {
			if done[h.name] {
				continue
			}
			recs, _, err := history.ReadTail(layout.New(h.root, "current").HistoryFile(), 20)
			check(err)
			for _, r := range recs {
				if r.Kind == history.KindApply && r.Commit == sha && r.Result != "" {
					if r.Result != history.ResultOK {
						f.fail("without fleet: %s's apply of v4: %s %s", h.name, r.Result, r.Error)
					}
					done[h.name] = true
				}
			}
			if !h.agent.alive() {
				f.fail("the agent of %s exited; its log:\n%s", h.name, logTail(filepath.Join(h.dir, "agent.log")))
			}
		}
		if time.Now().After(deadline) {
			f.fail("without fleet: %d of %d hosts applied v4 within %s", len(done), f.n, f.timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	iv := f.hostSwitches(sha)
	var last time.Time
	for _, x := range iv {
		if x.end.After(last) {
			last = x.end
		}
	}
	atOnce, _ := maxOverlap(iv, false)
	migr, _ := f.migrations("v4")
	wall := last.Sub(t0)
	f.printf("  without fleet (v3 → v4, fleet: removed, as before issue 12): commit to last host healthy %s; most switching at once %d (the hosts' histories); migrations run %d\n",
		ms(wall), atOnce, migr)
	return fmt.Sprintf("%s, %d at once, %d migrations", ms(wall), atOnce, migr)
}

func short8(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}
