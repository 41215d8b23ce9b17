// Package etcdtest runs a real etcd for tests: Debian's etcd server
// (/usr/bin/etcd, package etcd-server), one member or a cluster of several,
// on free loopback ports, with its data in the test's temporary directory,
// stopped when the test ends.
package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is the etcd server the tests run. .ci/run installs it.
const Binary = "/usr/bin/etcd"

// StartTimeout bounds how long a member may take to answer healthy: long
// enough for a busy 2-core machine, short enough that a broken etcd fails
// the test rather than hanging it.
const StartTimeout = time.Minute

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	Members []*Member
}

// Member is one etcd server of a Cluster.
type Member struct {
	t         testing.TB
	Name      string
	ClientURL string // http://127.0.0.1:port
	PeerURL   string
	Dir       string // its data directory
	log       string // its log file
	args      []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the running process has exited
}

// Start starts a cluster of n members (n ≥ 1) and waits until every member
// answers healthy (a 3-member cluster is healthy once it has a leader). The
// cluster is stopped by t.Cleanup. Without etcd the test is skipped, unless
// CI=true: .ci/run installs it, so there its absence is a failure.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := binary(t)
	if n < 1 {
		t.Fatalf("etcdtest.Start: %d members", n)
	}
	// Ports are picked free and then released, so another process could
	// take one before etcd binds it: a start that fails for that is tried
	// again with new ports.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c, err := start(t, bin, n)
		if err == nil {
			return c
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("etcdtest: %v", lastErr)
	return nil
}

func binary(t testing.TB) string {
	if _, err := os.Stat(Binary); err == nil {
		return Binary
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("etcd is not installed at %s, and CI=true: .ci/run installs it (apt-get install etcd-server)", Binary)
	}
	t.Skipf("etcd is not installed at %s (apt-get install etcd-server; .ci/run does)", Binary)
	return ""
}

func start(t testing.TB, bin string, n int) (*Cluster, error) {
	c := &Cluster{t: t}
	base := t.TempDir()
	var initial []string
	for i := 0; i < n; i++ {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		m := &Member{
			t:         t,
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		}
		m.Dir = filepath.Join(base, m.Name+".etcd")
		m.log = filepath.Join(base, m.Name+".log")
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	token := fmt.Sprintf("etcdtest-%d", time.Now().UnixNano())
	for _, m := range c.Members {
		m.args = []string{bin,
			"--name", m.Name,
			"--data-dir", m.Dir,
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			"--logger", "zap",
			"--log-outputs", m.log,
		}
	}
	t.Cleanup(c.stop)
	for _, m := range c.Members {
		if err := m.spawn(); err != nil {
			c.stop()
			return nil, err
		}
	}
	for _, m := range c.Members {
		if err := m.waitHealthy(); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

// freePorts returns n distinct loopback ports free a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Endpoints are the members' client URLs, for clientv3.Config.Endpoints.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

func (c *Cluster) stop() {
	for _, m := range c.Members {
		m.Stop()
	}
}

func (m *Member) spawn() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("etcd member %s is already running", m.Name)
	}
	cmd := exec.Command(m.args[0], m.args[1:]...)
	// Output other than the log file (flag errors) goes to the log too.
	f, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("etcd member %s: %w", m.Name, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	// A test binary killed by a timeout must not leave etcd running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start etcd member %s: %w", m.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(exited)
	}()
	m.cmd, m.exited = cmd, exited
	return nil
}

// waitHealthy polls the member's /health until it says true, the process
// exits, or StartTimeout passes.
func (m *Member) waitHealthy() error {
	m.mu.Lock()
	exited := m.exited
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if m.healthy(ctx) {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("etcd member %s exited while starting:\n%s", m.Name, m.Log())
		case <-ctx.Done():
			return fmt.Errorf("etcd member %s not healthy within %s:\n%s", m.Name, StartTimeout, m.Log())
		case <-tick.C:
		}
	}
}

func (m *Member) healthy(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.ClientURL+"/health", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode == http.StatusOK && bytes.Contains(b, []byte(`"health":"true"`))
}

// WaitHealthy waits until the member answers healthy, failing the test
// when it does not within StartTimeout.
func (m *Member) WaitHealthy() {
	m.t.Helper()
	if err := m.waitHealthy(); err != nil {
		m.t.Fatal(err)
	}
}

// Log returns the tail of the member's log.
func (m *Member) Log() string {
	b, _ := os.ReadFile(m.log)
	const max = 8 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// Stop stops the member with SIGTERM and waits for it to exit (SIGKILL
// after StartTimeout). Stopping a stopped member does nothing.
func (m *Member) Stop() { m.signal(syscall.SIGTERM) }

// Kill stops the member with SIGKILL, as a crash or power loss would, and
// waits for it to exit.
func (m *Member) Kill() { m.signal(syscall.SIGKILL) }

func (m *Member) signal(sig syscall.Signal) {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(StartTimeout):
		cmd.Process.Kill()
		<-exited
	}
}

// Restart starts a stopped member again on the same ports and data
// directory, and waits until it answers healthy.
func (m *Member) Restart() {
	m.t.Helper()
	if err := m.spawn(); err != nil {
		m.t.Fatal(err)
	}
	m.WaitHealthy()
}
