//go:build e2e

// Package e2e proves the reconciler on a real stack: a Django project
// served by gunicorn under its own supervisord, behind its own nginx, all
// on 127.0.0.1, configured from the files in examples/django.
//
//	go test -tags e2e ./e2e/
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "reconciler-e2e-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "reconciler")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/reconciler").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The commands the stack needs, from Debian's packages.
func requireTools(t *testing.T) {
	for _, c := range [][]string{
		{"/usr/bin/python3", "-c", "import django, gunicorn"},
		{"supervisord", "--version"},
		{"nginx", "-v"},
		{"git", "--version"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s\ninstall: apt-get install python3-django gunicorn nginx-light supervisor python3-venv", strings.Join(c, " "), err, out)
		}
	}
}

const basePath = "PATH=/usr/local/bin:/usr/bin:/bin"

type stack struct {
	t                    *testing.T
	dir, root, repo      string
	gunicorn, plain, web string // 127.0.0.1:port of gunicorn (graceful), gunicorn (plain HUP), nginx
	supConf              string
	client               *http.Client
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *stack) run(dir string, name string, args ...string) string {
	s.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = []string{basePath, "HOME=" + s.dir, "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// substitute rewrites an example file for this stack's paths and ports.
func (s *stack) substitute(example string) string {
	b, err := os.ReadFile(filepath.Join("..", "examples", "django", example))
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.NewReplacer(
		"/srv/git/broken_brackets.git", s.repo,
		"/srv/broken_brackets", s.root,
		"/etc/supervisor/supervisord.conf", s.supConf,
		"127.0.0.1:8000", s.gunicorn,
		"127.0.0.1:8080", s.web,
	).Replace(string(b))
}

func newStack(t *testing.T) *stack {
	requireTools(t)
	dir := t.TempDir()
	s := &stack{t: t, dir: dir, root: filepath.Join(dir, "srv", "broken_brackets"), repo: filepath.Join(dir, "git", "broken_brackets"),
		gunicorn: freeAddr(t), plain: freeAddr(t), web: freeAddr(t), supConf: filepath.Join(dir, "supervisord.conf")}
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}}
	s.makeRepo()
	s.startSupervisor()
	s.startNginx()
	return s
}

// makeRepo commits the Django project three times: v1; v2 with a new
// migration and / saying v2; v3 whose /health answers 500.
func (s *stack) makeRepo() {
	if err := os.MkdirAll(s.repo, 0o755); err != nil {
		s.t.Fatal(err)
	}
	s.run(".", "cp", "-r", "testdata/broken_brackets/.", s.repo)
	git := func(args ...string) string { return s.run(s.repo, "git", args...) }
	git("init", "-q", "-b", "main")
	git("add", "-A")
	git("commit", "-qm", "v1")
	git("tag", "v1")
	views := filepath.Join(s.repo, "shop", "views.py")
	edit := func(path, old, new string) {
		b, _ := os.ReadFile(path)
		if !bytes.Contains(b, []byte(old)) {
			s.t.Fatalf("%s lacks %q", path, old)
		}
		os.WriteFile(path, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644)
	}
	edit(views, `VERSION = "v1"`, `VERSION = "v2"`)
	os.WriteFile(filepath.Join(s.repo, "shop", "migrations", "0002_update.py"), []byte(`from django.db import migrations


def update(apps, schema_editor):
    apps.get_model("shop", "Setting").objects.filter(name="greeting").update(value="updated by 0002")


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [migrations.RunPython(update, migrations.RunPython.noop)]
`), 0o644)
	git("add", "-A")
	git("commit", "-qm", "v2")
	git("tag", "v2")
	edit(views, `VERSION = "v2"`, `VERSION = "v3"`)
	edit(views, `    return HttpResponse(f"ok {revision()}\n", content_type="text/plain")`, `    return HttpResponse("broken\n", status=500, content_type="text/plain")`)
	git("commit", "-qam", "v3")
	git("tag", "v3")
}

func (s *stack) startSupervisor() {
	plain := strings.NewReplacer(
		"[program:broken_brackets-web]", "[program:broken_brackets-plain]",
		"--chdir "+s.root+"/current ", "",
		s.gunicorn, s.plain,
		"gunicorn.log", "gunicorn-plain.log",
	).Replace(s.substitute("supervisor-web.conf"))
	conf := fmt.Sprintf(`[unix_http_server]
file=%[1]s/supervisor.sock
[supervisord]
nodaemon=true
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
childlogdir=%[1]s
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://%[1]s/supervisor.sock
`, s.dir) + s.substitute("supervisor-web.conf") + "\n" + plain
	for _, line := range strings.Split(plain, "\n") {
		if strings.HasPrefix(line, "command=") && strings.Contains(line, "--chdir") {
			s.t.Fatal("the plain program still has --chdir")
		}
	}
	if err := os.WriteFile(s.supConf, []byte(conf), 0o644); err != nil {
		s.t.Fatal(err)
	}
	// supervisord refuses a program whose log folder is missing; an admin
	// creates the shared folder once, before the first deploy.
	if err := os.MkdirAll(filepath.Join(s.root, "shared", "var"), 0o755); err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command("supervisord", "-c", s.supConf)
	cmd.Env = []string{basePath, "HOME=" + s.dir}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Process.Wait(); close(exited) }()
	s.t.Cleanup(func() {
		exec.Command("supervisorctl", "-c", s.supConf, "stop", "all").Run()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(s.dir, "supervisor.sock")); err == nil {
			break
		}
		select {
		case <-exited:
			s.t.Fatalf("supervisord exited:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if i == 200 {
			s.t.Fatalf("supervisord did not come up:\n%s", out.String())
		}
	}
}

func (s *stack) startNginx() {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must read the release under a 0700 temp dir
	}
	conf := fmt.Sprintf(`%[2]s
daemon off;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path %[1]s/ngx-body;
    proxy_temp_path %[1]s/ngx-proxy;
    fastcgi_temp_path %[1]s/ngx-fastcgi;
    uwsgi_temp_path %[1]s/ngx-uwsgi;
    scgi_temp_path %[1]s/ngx-scgi;
%[3]s
}
`, s.dir, user, s.substitute("nginx.conf"))
	path := filepath.Join(s.dir, "nginx.conf")
	os.WriteFile(path, []byte(conf), 0o644)
	cmd := exec.Command("nginx", "-p", s.dir, "-c", path, "-e", filepath.Join(s.dir, "nginx-error.log"))
	cmd.Env = []string{basePath}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	waitFor(s.t, "nginx on "+s.web, func() bool {
		c, err := net.Dial("tcp", s.web)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if ok() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not come up", what)
}

// desired writes the desired file: the supervisor example at commit, with
// the service's program and action changed when asked.
func (s *stack) desired(commit, program, action string) string {
	y := s.substitute("desired-supervisor.yaml")
	y = strings.Replace(y, "  commit: main", "  commit: "+commit, 1)
	// A broken release answers 500 at once: no need to wait the example's
	// 30 seconds for it to come good.
	y = strings.Replace(y, "timeout: 30s", "timeout: 5s", 1)
	y = strings.Replace(y, "action: reload ", "action: "+action+" ", 1)
	if program == "broken_brackets-plain" {
		y = strings.Replace(y, "program: broken_brackets-web", "program: broken_brackets-plain", 1)
		y = strings.Replace(y, s.gunicorn, s.plain, 1)
	}
	path := filepath.Join(s.dir, "desired.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		s.t.Fatal(err)
	}
	return path
}

type result struct {
	code           int
	stdout, stderr string
}

func (s *stack) reconciler(args ...string) result {
	s.t.Helper()
	cmd := exec.Command(bin, append(args, "-f", filepath.Join(s.dir, "desired.yaml"))...)
	cmd.Dir = s.dir
	cmd.Env = []string{basePath, "HOME=" + s.dir}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	return r
}

func (s *stack) mustApply(args ...string) result {
	s.t.Helper()
	r := s.reconciler(append([]string{"apply"}, args...)...)
	if r.code != 0 {
		s.t.Fatalf("apply exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}

func (s *stack) get(path string) (int, string) {
	s.t.Helper()
	resp, err := s.client.Get("http://" + s.web + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func (s *stack) wantPage(want string) {
	s.t.Helper()
	if code, body := s.get("/"); code != 200 || body != want {
		s.t.Fatalf("GET / through nginx: %d %q; want 200 %q", code, body, want)
	}
}

func (s *stack) migrations() int {
	s.t.Helper()
	r := s.reconciler("history", "--json")
	var recs []struct{ Step, Result string }
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil {
		s.t.Fatalf("history --json: %v\n%s", err, r.stdout)
	}
	n := 0
	for _, rec := range recs {
		if rec.Step == "migrate migrate" && rec.Result == "ok" {
			n++
		}
	}
	return n
}

func TestDjangoStack(t *testing.T) {
	s := newStack(t)

	t.Log("1. v1: nginx serves v1 and its static file")
	s.desired("v1", "broken_brackets-web", "reload")
	if r := s.reconciler("plan", "--detailed-exitcode"); r.code != 2 {
		t.Fatalf("plan: %d\n%s", r.code, r.stdout)
	}
	// The program is stopped before the first deploy (autostart=false):
	// status says so, and the example's reload starts it.
	if st := s.reconciler("status"); !strings.Contains(st.stdout, "  web  not running (supervisor: STOPPED)\n") {
		t.Errorf("status before the first deploy:\n%s", st.stdout)
	}
	s.mustApply()
	if st := s.reconciler("status"); !regexp.MustCompile(`\n  web  pid [0-9]+, [0-9]+ processes, running from [0-9TZ]+-[0-9a-f]{8}\n`).MatchString(st.stdout) {
		t.Errorf("status after the first deploy:\n%s", st.stdout)
	}
	s.wantPage("broken_brackets v1: seeded by 0001")
	if code, body := s.get("/static/shop/site.css"); code != 200 || !strings.Contains(body, "font-family") {
		t.Fatalf("static file: %d %q", code, body)
	}
	if r := s.reconciler("apply"); r.code != 0 || !strings.Contains(r.stdout, "No changes.") {
		t.Fatalf("converged apply: %d\n%s", r.code, r.stdout)
	}

	t.Log("2. v2: the migration runs once, nginx serves v2")
	s.desired("v2", "broken_brackets-web", "reload")
	s.mustApply()
	s.wantPage("broken_brackets v2: updated by 0002")
	if n := s.migrations(); n != 2 {
		t.Errorf("%d migrations ran for two releases", n)
	}
	s.mustApply()
	if n := s.migrations(); n != 2 {
		t.Errorf("a converged apply ran a migration (%d)", n)
	}

	t.Log("3. commit back to v1: no build step, nginx serves v1")
	s.desired("v1", "broken_brackets-web", "reload")
	r := s.mustApply()
	if strings.Contains(r.stdout, "\n+ build") || strings.Contains(r.stdout, "\n+ migrate") || strings.Contains(r.stdout, "fetch") {
		t.Errorf("rollback ran a build step:\n%s", r.stdout)
	}
	s.wantPage("broken_brackets v1: updated by 0002")

	t.Log("4. v3: /health answers 500, the link returns, v3 is not retried")
	s.desired("v3", "broken_brackets-web", "reload")
	r = s.reconciler("apply")
	if r.code != 1 || !strings.Contains(r.stderr, "failed after the switch: health check") || !strings.Contains(r.stderr, "status 500") ||
		!strings.Contains(r.stderr, "which serves") {
		t.Fatalf("apply v3: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	s.wantPage("broken_brackets v1: updated by 0002")
	st := s.reconciler("status")
	if !strings.Contains(st.stdout, "failed at health") || !strings.Contains(st.stdout, "last apply: failed") {
		t.Errorf("status does not show the failure:\n%s", st.stdout)
	}
	r = s.reconciler("apply")
	if r.code != 1 || !strings.Contains(r.stdout, "Blocked: release") || strings.Contains(r.stdout, "\n~ switch") {
		t.Errorf("second apply of v3: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = s.reconciler("apply", "--retry")
	if r.code != 1 || !strings.Contains(r.stdout, "~ switch") || !strings.Contains(r.stderr, "failed after the switch") {
		t.Errorf("apply --retry of v3: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	s.wantPage("broken_brackets v1: updated by 0002")

	t.Log("5. gunicorn without --chdir, reloaded with HUP, is caught serving the old release")
	// Started by hand from the link, as it would have been before the
	// reconciler managed this host: it runs from the v1 release.
	if out, err := exec.Command("supervisorctl", "-c", s.supConf, "start", "broken_brackets-plain").CombinedOutput(); err != nil {
		t.Fatalf("supervisorctl start: %v\n%s", err, out)
	}
	s.desired("v2", "broken_brackets-plain", "reload")
	r = s.reconciler("apply")
	if r.code != 1 || !strings.Contains(r.stderr, "service web still runs from the old release after reload") ||
		!strings.Contains(r.stderr, "--chdir") {
		t.Fatalf("plain HUP: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	exec.Command("supervisorctl", "-c", s.supConf, "stop", "broken_brackets-plain").Run()
}

// TestZeroDowntime switches v1 and v2 ten times under load through nginx,
// once with the graceful configuration of examples/ (HUP to gunicorn
// started with --chdir) and once with supervisorctl restart, and counts
// failed requests and responses from the wrong version after a switch.
func TestZeroDowntime(t *testing.T) {
	s := newStack(t)
	s.desired("v1", "broken_brackets-web", "reload") // the first reload starts the program
	s.mustApply()
	s.desired("v2", "broken_brackets-web", "restart")
	s.mustApply()

	type mode struct{ name, action string }
	figures := map[string][2]int64{}
	for _, m := range []mode{{"graceful (HUP, --chdir)", "reload"}, {"restart", "restart"}} {
		failed, stale, total := s.switchUnderLoad(m.action, 10, 8)
		figures[m.name] = [2]int64{failed, stale}
		t.Logf("%-24s 10 switches, 8 connections: %d requests, %d failed, %d stale after a switch", m.name, total, failed, stale)
	}
	if f := figures["graceful (HUP, --chdir)"]; f[0] != 0 || f[1] != 0 {
		t.Errorf("graceful switches lost %d requests and served %d stale responses; want 0 and 0", f[0], f[1])
	}
}

func (s *stack) switchUnderLoad(action string, switches, conns int) (failed, stale, total int64) {
	var expected atomic.Value // the version every request started now must see
	expected.Store("")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var firstFail atomic.Value
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				want := expected.Load().(string)
				resp, err := s.client.Get("http://" + s.web + "/")
				atomic.AddInt64(&total, 1)
				if err != nil {
					atomic.AddInt64(&failed, 1)
					firstFail.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					atomic.AddInt64(&failed, 1)
					firstFail.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode))
					continue
				}
				if want != "" && !strings.HasPrefix(string(b), "broken_brackets "+want+":") {
					atomic.AddInt64(&stale, 1)
				}
			}
		}()
	}
	for i := 0; i < switches; i++ {
		v := []string{"v1", "v2"}[i%2]
		expected.Store("") // during the switch either version is right
		s.desired(v, "broken_brackets-web", action)
		r := s.reconciler("apply")
		if r.code != 0 {
			s.t.Errorf("switch %d to %s: exit %d\n%s\n%s", i, v, r.code, r.stdout, r.stderr)
		}
		expected.Store(v)
		time.Sleep(300 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if f := firstFail.Load(); f != nil {
		s.t.Logf("%s: first failure: %v", action, f)
	}
	return failed, stale, total
}
