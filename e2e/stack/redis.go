package stack

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Redis is a redis-server of its own, Celery's broker and result backend:
// on 127.0.0.1, no persistence, stopped by cleanup.
type Redis struct {
	Addr string // 127.0.0.1:port
}

// URL is the URL of database n.
func (r *Redis) URL(n int) string { return fmt.Sprintf("redis://%s/%d", r.Addr, n) }

// StartRedis starts redis-server with its own configuration in dir.
func StartRedis(t T, dir string) *Redis {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	r := &Redis{Addr: FreeAddr(t)}
	host, port, _ := strings.Cut(r.Addr, ":")
	conf := filepath.Join(dir, "redis.conf")
	// No RDB snapshots, no AOF: the queue lives as long as the test.
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`bind %s
port %s
protected-mode yes
daemonize no
save ""
appendonly no
dir %s
logfile %s
`, host, port, dir, filepath.Join(dir, "redis.log"))), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	cmd := exec.Command("redis-server", conf)
	cmd.Env = []string{BasePath}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v (install: apt-get install redis-server)", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	for i := 0; !r.ping(); i++ {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server exited:\n%s", b)
		default:
		}
		if i == 400 {
			t.Fatalf("redis-server did not answer PING in 20 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

func (r *Redis) ping() bool {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == "+PONG"
}
