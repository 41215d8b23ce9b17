package stack

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// T receives the stack's failures and cleanups. *testing.T satisfies it.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
}

// Programs of the supervisor configuration.
const (
	// Web is the example's program: gunicorn with --chdir <root>/current.
	Web = "broken_brackets-web"
	// Plain is gunicorn without --chdir, run from the same root.
	Plain = "broken_brackets-plain"
	// Bash is the example's program for a second root that a deploy
	// script manages, with its own gunicorn port and nginx server.
	Bash = "broken_brackets-bash"
)

// BasePath is the PATH every command of the stack runs with: Debian's
// python3, not one a developer put first.
const BasePath = "PATH=/usr/local/bin:/usr/bin:/bin"

// Options configure New.
type Options struct {
	// Dir holds everything the stack writes; removed by the caller.
	Dir string
	// ModRoot is the module's root, where examples/ and e2e/testdata are.
	ModRoot string
	// Bin is the reconciler binary.
	Bin string
	// Bash adds a second root, BashRoot, served by the Bash program on
	// BashGunicorn and by nginx on BashWeb, for a deploy script.
	Bash bool
}

// The SQLite stack's project (e2e/testdata) and its configuration
// (examples/).
const (
	defaultApp     = "broken_brackets"
	defaultExample = "django"
)

// Stack is a running supervisord and nginx and the app's repository.
type Stack struct {
	T                    T
	Dir, Root, Repo      string
	ModRoot, Bin         string
	Gunicorn, Plain, Web string // 127.0.0.1:port of gunicorn (graceful), gunicorn (plain HUP), nginx
	// BashRoot, BashGunicorn and BashWeb are the deploy script's, with
	// Options.Bash.
	BashRoot, BashGunicorn, BashWeb string
	SupConf                         string
	// AccessLog is nginx's: one line per response, "status release
	// upstream", release from the app's X-Release header.
	AccessLog string
	Client    *http.Client

	migrations int // migrations committed so far

	// app names the project in e2e/testdata and the paths its example
	// files use (/srv/<app>, /srv/git/<app>.git); example is the
	// directory of examples/ the configuration comes from.
	app, example string
	// replace are more old, new pairs for Substitute: the addresses of
	// the stack's other servers.
	replace []string
}

// RequireTools says which command the stack needs is missing, with the
// packages that bring them.
func RequireTools() error {
	for _, c := range [][]string{
		{"/usr/bin/python3", "-c", "import django, gunicorn, venv"},
		{"supervisord", "--version"},
		{"supervisorctl", "--help"},
		{"nginx", "-v"},
		{"git", "--version"},
	} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Env = []string{BasePath}
		if out, err := cmd.CombinedOutput(); err != nil {
			if o := strings.TrimSpace(string(out)); o != "" {
				err = fmt.Errorf("%w: %s", err, o)
			}
			return fmt.Errorf("%s: %v (install: apt-get install python3-django gunicorn nginx-light supervisor python3-venv)", strings.Join(c, " "), err)
		}
	}
	return nil
}

// FreeAddr returns a 127.0.0.1 address nobody listens on now.
func FreeAddr(t T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// New makes the repository (v1 only: see InitRepo), starts supervisord and
// nginx, and registers their stop with t.Cleanup.
func New(t T, o Options) *Stack {
	t.Helper()
	if err := RequireTools(); err != nil {
		t.Fatalf("%v", err)
	}
	s := newStack(t, o, defaultApp, defaultExample)
	s.Plain = FreeAddr(t)
	if o.Bash {
		s.BashRoot, s.BashGunicorn, s.BashWeb = filepath.Join(o.Dir, "srv", "bash"), FreeAddr(t), FreeAddr(t)
	}
	s.InitRepo()
	s.startSupervisor()
	s.startNginx()
	return s
}

// newStack is a Stack of app configured from examples/<example>, with its
// addresses picked; nothing started yet.
func newStack(t T, o Options, app, example string) *Stack {
	return &Stack{T: t, Dir: o.Dir, ModRoot: o.ModRoot, Bin: o.Bin, app: app, example: example,
		Root: filepath.Join(o.Dir, "srv", app), Repo: filepath.Join(o.Dir, "git", app),
		Gunicorn: FreeAddr(t), Web: FreeAddr(t), SupConf: filepath.Join(o.Dir, "supervisord.conf"),
		AccessLog: filepath.Join(o.Dir, "access.log"),
		Client:    &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}},
	}
}

// Run runs a command in dir with the stack's environment and returns its
// output; a failure is fatal.
func (s *Stack) Run(dir string, name string, args ...string) string {
	s.T.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = []string{BasePath, "HOME=" + s.Dir, "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.T.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Example returns a file of the stack's examples/ directory.
func (s *Stack) Example(name string) string {
	s.T.Helper()
	b, err := os.ReadFile(filepath.Join(s.ModRoot, "examples", s.example, name))
	if err != nil {
		s.T.Fatalf("%v", err)
	}
	return string(b)
}

// Substitute rewrites an example file for this stack's paths and ports.
func (s *Stack) Substitute(example string) string {
	return strings.NewReplacer(append([]string{
		"/srv/git/" + s.app + ".git", s.Repo,
		"/srv/" + s.app, s.Root,
		"/etc/supervisor/supervisord.conf", s.SupConf,
		"127.0.0.1:8000", s.Gunicorn,
		"127.0.0.1:8080", s.Web,
	}, s.replace...)...).Replace(s.Example(example))
}

// bashSite rewrites an example file for the deploy script's root.
func (s *Stack) bashSite(example string) string {
	return strings.NewReplacer(
		"[program:broken_brackets-web]", "[program:"+Bash+"]",
		"/srv/broken_brackets", s.BashRoot,
		"127.0.0.1:8000", s.BashGunicorn,
		"127.0.0.1:8080", s.BashWeb,
	).Replace(s.Example(example))
}

// Replace replaces the first old in text by new; text without old is
// fatal, so that a changed example cannot make a replacement silently do
// nothing.
func (s *Stack) Replace(text, old, new string) string {
	s.T.Helper()
	if !strings.Contains(text, old) {
		s.T.Fatalf("%q not found in\n%s", old, text)
	}
	return strings.Replace(text, old, new, 1)
}

func (s *Stack) git(args ...string) string {
	s.T.Helper()
	return s.Run(s.Repo, "git", args...)
}

// InitRepo commits the Django project of e2e/testdata as v1, tagged v1.
func (s *Stack) InitRepo() {
	s.T.Helper()
	if err := os.MkdirAll(s.Repo, 0o755); err != nil {
		s.T.Fatalf("%v", err)
	}
	s.Run(".", "cp", "-r", filepath.Join(s.ModRoot, "e2e", "testdata", s.app)+"/.", s.Repo)
	s.migrations = 1
	s.git("init", "-q", "-b", "main")
	s.git("add", "-A")
	s.git("commit", "-qm", "v1")
	s.git("tag", "v1")
}

func (s *Stack) edit(rel, old, new string) {
	s.T.Helper()
	path := filepath.Join(s.Repo, rel)
	b, err := os.ReadFile(path)
	if err != nil {
		s.T.Fatalf("%v", err)
	}
	if err := os.WriteFile(path, []byte(s.Replace(string(b), old, new)), 0o644); err != nil {
		s.T.Fatalf("%v", err)
	}
}

var versionLine = regexp.MustCompile(`(?m)^VERSION = "[^"]*"$`)

func (s *Stack) setVersion(v string) {
	s.T.Helper()
	path := filepath.Join(s.Repo, "shop", "views.py")
	b, err := os.ReadFile(path)
	if err != nil {
		s.T.Fatalf("%v", err)
	}
	if !versionLine.Match(b) {
		s.T.Fatalf("%s has no VERSION line", path)
	}
	b = versionLine.ReplaceAll(b, []byte(fmt.Sprintf("VERSION = %q", v)))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		s.T.Fatalf("%v", err)
	}
}

func (s *Stack) commit(tag string) {
	s.T.Helper()
	s.git("add", "-A")
	s.git("commit", "-qm", tag)
	s.git("tag", tag)
}

// Upgrade commits on main a release that says tag on / and adds a
// migration that sets the greeting to "updated by 000N"; requirements, when
// not empty, replace requirements.txt (a change of dependencies).
func (s *Stack) Upgrade(tag, requirements string) {
	s.T.Helper()
	s.setVersion(tag)
	s.migrations++
	n := s.migrations
	mig := fmt.Sprintf(`from django.db import migrations


def update(apps, schema_editor):
    apps.get_model("shop", "Setting").objects.filter(name="greeting").update(value="updated by %04[1]d")


class Migration(migrations.Migration):
    dependencies = [("shop", "%[2]s")]
    operations = [migrations.RunPython(update, migrations.RunPython.noop)]
`, n, s.migrationName(n-1))
	if err := os.WriteFile(filepath.Join(s.Repo, "shop", "migrations", s.migrationName(n)+".py"), []byte(mig), 0o644); err != nil {
		s.T.Fatalf("%v", err)
	}
	if requirements != "" {
		if err := os.WriteFile(filepath.Join(s.Repo, "requirements.txt"), []byte(requirements), 0o644); err != nil {
			s.T.Fatalf("%v", err)
		}
	}
	s.commit(tag)
}

func (s *Stack) migrationName(n int) string {
	if n == 1 {
		return "0001_initial"
	}
	return fmt.Sprintf("%04d_update", n)
}

// Broken commits, on top of base and off main, a release that says tag on
// / and whose /health answers 500. main stays where it was.
func (s *Stack) Broken(tag, base string) {
	s.T.Helper()
	s.git("checkout", "-q", "--detach", base)
	s.setVersion(tag)
	s.edit(filepath.Join("shop", "views.py"), `HttpResponse(f"ok {revision()}\n", content_type="text/plain")`,
		`HttpResponse("broken\n", status=500, content_type="text/plain")`)
	s.commit(tag)
	s.git("checkout", "-q", "main")
}

func (s *Stack) startSupervisor() {
	s.T.Helper()
	web := s.Substitute("supervisor-web.conf")
	plain := strings.NewReplacer(
		"[program:"+Web+"]", "[program:"+Plain+"]",
		"--chdir "+s.Root+"/current ", "",
		s.Gunicorn, s.Plain,
		"gunicorn.log", "gunicorn-plain.log",
	).Replace(web)
	for _, line := range strings.Split(plain, "\n") {
		if strings.HasPrefix(line, "command=") && strings.Contains(line, "--chdir") {
			s.T.Fatalf("the plain program still has --chdir")
		}
	}
	conf := web + "\n" + plain
	// supervisord refuses a program whose log folder is missing; an admin
	// creates the shared folder once, before the first deploy.
	dirs := []string{filepath.Join(s.Root, "shared", "var")}
	if s.BashRoot != "" {
		conf += "\n" + s.bashSite("supervisor-web.conf")
		dirs = append(dirs, filepath.Join(s.BashRoot, "shared", "var"))
	}
	s.runSupervisord(conf, dirs)
}

// runSupervisord writes the daemon's configuration with programs, makes
// dirs and starts supervisord, stopped by cleanup.
func (s *Stack) runSupervisord(programs string, dirs []string) {
	s.T.Helper()
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
`, s.Dir) + programs
	if err := os.WriteFile(s.SupConf, []byte(conf), 0o644); err != nil {
		s.T.Fatalf("%v", err)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			s.T.Fatalf("%v", err)
		}
	}
	cmd := exec.Command("supervisord", "-c", s.SupConf)
	cmd.Env = []string{BasePath, "HOME=" + s.Dir}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.T.Fatalf("%v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Process.Wait(); close(exited) }()
	s.T.Cleanup(func() {
		exec.Command("supervisorctl", "-c", s.SupConf, "stop", "all").Run()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(s.Dir, "supervisor.sock")); err == nil {
			break
		}
		select {
		case <-exited:
			s.T.Fatalf("supervisord exited:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if i == 200 {
			s.T.Fatalf("supervisord did not come up:\n%s", out.String())
		}
	}
}

func (s *Stack) startNginx() {
	s.T.Helper()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must read the release under a 0700 temp dir
	}
	sites := s.Substitute("nginx.conf")
	if s.BashRoot != "" {
		sites += "\n" + s.bashSite("nginx.conf")
	}
	// The access log names the release that answered (the app's
	// X-Release header): responses from a release are counted here, where
	// users' requests pass.
	conf := fmt.Sprintf(`%[2]s
daemon off;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log;
events { worker_connections 512; }
http {
    log_format release '$status $upstream_http_x_release $upstream_addr';
    access_log %[4]s release;
    client_body_temp_path %[1]s/ngx-body;
    proxy_temp_path %[1]s/ngx-proxy;
    fastcgi_temp_path %[1]s/ngx-fastcgi;
    uwsgi_temp_path %[1]s/ngx-uwsgi;
    scgi_temp_path %[1]s/ngx-scgi;
%[3]s
}
`, s.Dir, user, sites, s.AccessLog)
	path := filepath.Join(s.Dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		s.T.Fatalf("%v", err)
	}
	cmd := exec.Command("nginx", "-p", s.Dir, "-c", path, "-e", filepath.Join(s.Dir, "nginx-error.log"))
	cmd.Env = []string{BasePath}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		s.T.Fatalf("%v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.T.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	for _, addr := range []string{s.Web, s.BashWeb} {
		if addr == "" {
			continue
		}
		s.WaitFor("nginx on "+addr, func() bool {
			select {
			case <-done:
				s.T.Fatalf("nginx exited:\n%s", out.String())
			default:
			}
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
}

// WaitFor polls ok every 50 ms for 10 s; a timeout is fatal.
func (s *Stack) WaitFor(what string, ok func() bool) {
	s.T.Helper()
	s.wait(what, 200, ok)
}

// WaitLong is WaitFor for 60 s: for what a busy machine can take long to
// start (Python importing Django and Celery).
func (s *Stack) WaitLong(what string, ok func() bool) {
	s.T.Helper()
	s.wait(what, 1200, ok)
}

func (s *Stack) wait(what string, polls int, ok func() bool) {
	s.T.Helper()
	for i := 0; i < polls; i++ {
		if ok() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.T.Fatalf("%s did not come up", what)
}

// Render returns the supervisor example as desired.yaml for this stack,
// at commit, with the service's program and action changed when asked.
func (s *Stack) Render(commit, program, action string) string {
	s.T.Helper()
	y := s.Substitute("desired-supervisor.yaml")
	y = s.Replace(y, "  commit: main", "  commit: "+commit)
	// The example's health timeout stays: a broken release is refused on
	// its wrong answers (three 500s, in a fraction of a second), not at
	// the timeout, and a machine busy with other work may take seconds
	// to boot gunicorn's workers.
	y = s.Replace(y, "action: reload ", "action: "+action+" ")
	if program == Plain {
		y = s.Replace(y, "program: "+Web, "program: "+Plain)
		y = s.Replace(y, s.Gunicorn, s.Plain)
	}
	return y
}

// WithoutPreflight returns desired.yaml y without its preflight block.
func (s *Stack) WithoutPreflight(y string) string {
	s.T.Helper()
	i := strings.Index(y, "\npreflight:")
	if i < 0 {
		s.T.Fatalf("no preflight block in\n%s", y)
	}
	j := i + len("\npreflight:")
	for j < len(y) {
		k := strings.IndexByte(y[j:], '\n')
		if k < 0 {
			j = len(y)
			break
		}
		next := y[j+k+1:]
		if next == "" || (next[0] != ' ' && next[0] != '#') {
			j += k
			break
		}
		j += k + 1
	}
	return y[:i] + y[j:]
}

// WriteDesired writes y as the stack's desired.yaml and returns its path.
func (s *Stack) WriteDesired(y string) string {
	s.T.Helper()
	path := filepath.Join(s.Dir, "desired.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		s.T.Fatalf("%v", err)
	}
	return path
}

// Desired writes Render(commit, program, action) as desired.yaml.
func (s *Stack) Desired(commit, program, action string) string {
	s.T.Helper()
	return s.WriteDesired(s.Render(commit, program, action))
}

// Result is what a reconciler command did.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Reconciler runs the reconciler with args and the stack's desired.yaml.
func (s *Stack) Reconciler(args ...string) Result {
	s.T.Helper()
	cmd := exec.Command(s.Bin, append(args, "-f", filepath.Join(s.Dir, "desired.yaml"))...)
	cmd.Dir = s.Dir
	cmd.Env = []string{BasePath, "HOME=" + s.Dir}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		s.T.Fatalf("%v", err)
	}
	return r
}

// MustApply runs apply with args; a failure is fatal.
func (s *Stack) MustApply(args ...string) Result {
	s.T.Helper()
	r := s.Reconciler(append([]string{"apply"}, args...)...)
	if r.Code != 0 {
		s.T.Fatalf("apply exited %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// Get requests path through nginx.
func (s *Stack) Get(path string) (int, string) {
	s.T.Helper()
	return s.GetFrom(s.Web, path)
}

// GetFrom requests path from addr.
func (s *Stack) GetFrom(addr, path string) (int, string) {
	s.T.Helper()
	resp, err := s.Client.Get("http://" + addr + path)
	if err != nil {
		s.T.Fatalf("%v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// WaitUp waits until the server at addr answers / with 200: a program
// supervisord reports RUNNING (startsecs) may not handle its signals yet.
func (s *Stack) WaitUp(addr string) {
	s.T.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if resp, err := s.Client.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			s.T.Fatalf("%s does not answer / within a minute", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WantPage fails unless nginx serves want on /.
func (s *Stack) WantPage(want string) {
	s.T.Helper()
	if code, body := s.Get("/"); code != 200 || body != want {
		s.T.Fatalf("GET / through nginx: %d %q; want 200 %q", code, body, want)
	}
}

// Page is the start of what release tag answers on /.
func Page(tag string) string { return "broken_brackets " + tag + ":" }

// History returns `reconciler history --json`.
func (s *Stack) History() []Record {
	s.T.Helper()
	r := s.Reconciler("history", "--json", "--steps", "--limit", "0")
	var applies []struct {
		Record
		Steps []Record `json:"steps"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &applies); err != nil {
		s.T.Fatalf("history --json: %v\n%s", err, r.Stdout)
	}
	// Oldest first, as the log has them.
	var recs []Record
	for _, a := range applies {
		recs = append(recs, a.Record)
		recs = append(recs, a.Steps...)
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
	return recs
}

// Record is a line of `reconciler history --json`.
type Record struct {
	Time     time.Time
	Kind     string
	ApplyID  string `json:"apply_id"`
	Trigger  string
	Release  string
	Step     string
	Result   string
	Duration float64 `json:"duration_s"`
	Error    string
}

// Migrations counts the migrations that ran, from the history.
func (s *Stack) Migrations() int {
	s.T.Helper()
	n := 0
	for _, rec := range s.History() {
		if rec.Step == "migrate migrate" && rec.Result == "ok" {
			n++
		}
	}
	return n
}

// Link returns where root's current link points.
func Link(root string) string {
	l, _ := os.Readlink(filepath.Join(root, "current"))
	return l
}

// ResponsesFrom counts the responses nginx logged from release tag.
func (s *Stack) ResponsesFrom(tag string) int {
	s.T.Helper()
	f, err := os.Open(s.AccessLog)
	if err != nil {
		s.T.Fatalf("%v", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[1] == tag {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		s.T.Fatalf("%s: %v", s.AccessLog, err)
	}
	return n
}

// AddColumn commits on main a release that says tag on / and whose
// migration adds a nullable column, note, to shop's Setting: the
// additive change a release may roll back over.
func (s *Stack) AddColumn(tag string) {
	s.T.Helper()
	s.setVersion(tag)
	s.migrations++
	n := s.migrations
	mig := fmt.Sprintf(`from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "%s")]
    operations = [migrations.AddField("setting", "note", models.CharField(max_length=200, null=True))]
`, s.migrationName(n-1))
	if err := os.WriteFile(filepath.Join(s.Repo, "shop", "migrations", s.migrationName(n)+".py"), []byte(mig), 0o644); err != nil {
		s.T.Fatalf("%v", err)
	}
	s.edit(filepath.Join("shop", "models.py"), "    value = models.CharField(max_length=200)\n",
		"    value = models.CharField(max_length=200)\n    note = models.CharField(max_length=200, null=True)\n")
	s.commit(tag)
}

// sqlite runs a query on the app's database with Debian's python3 and
// returns its rows, one a line, fields joined by a space.
func (s *Stack) sqlite(query string) []string {
	s.T.Helper()
	out := s.Run(s.Dir, "/usr/bin/python3", "-c", `import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for row in c.execute(sys.argv[2]):
    print(" ".join(str(f) for f in row))`, filepath.Join(s.Root, "shared", "var", "db.sqlite3"), query)
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// AppliedMigrations reads the django_migrations table: "app.name" in the
// order they were applied.
func (s *Stack) AppliedMigrations() []string {
	s.T.Helper()
	var out []string
	for _, r := range s.sqlite("select app, name from django_migrations order by id") {
		out = append(out, strings.Replace(r, " ", ".", 1))
	}
	return out
}

// Columns lists the columns of a table.
func (s *Stack) Columns(table string) []string {
	s.T.Helper()
	return s.sqlite("select name from pragma_table_info('" + table + "')")
}
