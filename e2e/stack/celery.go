package stack

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The article's own stack: the orders project of e2e/testdata, configured
// from examples/django-celery.
const (
	CeleryApp     = "orders"
	CeleryExample = "django-celery"
	// CeleryWeb is gunicorn, reloaded with HUP; Worker the Celery worker,
	// restarted.
	CeleryWeb = "orders-web"
	Worker    = "orders-worker"
)

// CeleryStack is the Stack of the article's own app: gunicorn and a Celery
// worker under supervisord, nginx in front, PostgreSQL, redis as Celery's
// broker and result backend.
type CeleryStack struct {
	*Stack
	PG    *Postgres
	Redis *Redis
}

// RequireCeleryTools says what the Celery stack needs that is missing,
// with the packages that bring it.
func RequireCeleryTools() error {
	if err := RequireTools(); err != nil {
		return err
	}
	for _, c := range [][]string{
		{"/usr/bin/python3", "-c", "import celery, redis, psycopg2"},
		{"redis-server", "--version"},
		{filepath.Join(PGBin, "postgres"), "--version"},
	} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Env = []string{BasePath}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s (install: apt-get install postgresql python3-psycopg2 python3-celery python3-redis redis-server)",
				strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// NewCelery starts PostgreSQL, redis, supervisord (both programs stopped
// until the first deploy) and nginx, and commits the project as v1; all
// stopped by cleanup.
func NewCelery(t T, o Options) *CeleryStack {
	t.Helper()
	if err := RequireCeleryTools(); err != nil {
		t.Fatalf("%v", err)
	}
	s := &CeleryStack{Stack: newStack(t, o, CeleryApp, CeleryExample)}
	s.PG = StartPostgres(t, CeleryApp)
	s.Redis = StartRedis(t, filepath.Join(o.Dir, "redis"))
	s.replace = []string{
		"127.0.0.1:5432", s.PG.Addr,
		"redis://127.0.0.1:6379", "redis://" + s.Redis.Addr,
	}
	s.InitRepo()
	// supervisord refuses a program whose log folder is missing; an admin
	// creates the shared folder once, before the first deploy.
	s.runSupervisord(s.Substitute("supervisor.conf"), []string{filepath.Join(s.Root, "shared", "var")})
	s.startNginx()
	return s
}

// Use makes t receive the stack's failures from now on: a subtest's T
// while it runs.
func (s *CeleryStack) Use(t T) {
	s.T = t
	s.PG.T = t
}

// Release commits on main the files of e2e/testdata/orders-releases/<dir>
// over the project, with / saying tag, and tags it.
func (s *CeleryStack) Release(tag, dir string) {
	s.T.Helper()
	s.Run(".", "cp", "-r", filepath.Join(s.ModRoot, "e2e", "testdata", CeleryApp+"-releases", dir)+"/.", s.Repo)
	s.setVersion(tag)
	s.commit(tag)
}

// Commit returns the commit tag names.
func (s *CeleryStack) Commit(tag string) string {
	s.T.Helper()
	return s.git("rev-parse", tag+"^{commit}")
}

// Render returns the example's desired.yaml for this stack at commit;
// migrate, when not empty, are more keys of the migrate block ("kind:
// django\non_rollback: warn").
func (s *CeleryStack) Render(commit, onRollback string) string {
	s.T.Helper()
	y := s.Substitute("desired.yaml")
	y = s.Replace(y, "  commit: main", "  commit: "+commit)
	y = s.Replace(y, "timeout: 30s", "timeout: 10s")
	if onRollback != "" {
		y = s.Replace(y, "  on_rollback: warn ", "  on_rollback: "+onRollback+" ")
	}
	return y
}

// Desired writes Render(commit, onRollback) as desired.yaml: the example's
// migrate.on_rollback replaced when onRollback is not "".
func (s *CeleryStack) Desired(commit, onRollback string) string {
	s.T.Helper()
	return s.WriteDesired(s.Render(commit, onRollback))
}

// Supervisorctl runs supervisorctl on the stack's supervisord.
func (s *CeleryStack) Supervisorctl(args ...string) string {
	s.T.Helper()
	out, _ := exec.Command("supervisorctl", append([]string{"-c", s.SupConf}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// ProgramState is supervisor's state of program: RUNNING, STOPPING, ...
func (s *CeleryStack) ProgramState(program string) string {
	s.T.Helper()
	if f := strings.Fields(s.Supervisorctl("status", program)); len(f) >= 2 && f[0] == program {
		return f[1]
	}
	return ""
}

// WorkerPID is the worker's main pid, as supervisor has it.
func (s *CeleryStack) WorkerPID() string {
	s.T.Helper()
	return s.Supervisorctl("pid", Worker)
}

// StartTask runs the revision task through the web (nginx, gunicorn,
// redis) and returns its id; gate, when not empty, is a path the task
// waits for (see shop/tasks.py).
func (s *CeleryStack) StartTask(gate string) string {
	s.T.Helper()
	code, body := s.Get("/tasks/revision?gate=" + url.QueryEscape(gate))
	var r struct{ ID string }
	if err := json.Unmarshal([]byte(body), &r); code != 200 || err != nil || r.ID == "" {
		s.T.Fatalf("start the task: %d %s", code, body)
	}
	return r.ID
}

// TaskResult is a task's state and, when it succeeded, the commit of the
// worker that ran it and the pid of the pool process.
type TaskResult struct {
	State  string
	Result struct {
		Commit string
		PID    int
	}
	Error string
}

// WaitTask waits for task id to finish (2 minutes at most: a worker
// starting on a busy machine) and returns how.
func (s *CeleryStack) WaitTask(id string) TaskResult {
	s.T.Helper()
	var r TaskResult
	// Each request waits 8 s at most in the view: under the client's
	// timeout (10 s) and gunicorn's (30 s).
	for i := 0; i < 15; i++ {
		code, body := s.Get("/tasks/" + id + "?wait=8")
		if err := json.Unmarshal([]byte(body), &r); code != 200 || err != nil {
			s.T.Fatalf("task %s: %d %s", id, code, body)
		}
		if r.State == "SUCCESS" || r.State == "FAILURE" {
			return r
		}
	}
	s.T.Fatalf("task %s still %s after 2 minutes; worker log:\n%s", id, r.State, s.WorkerLog())
	return r
}

// WorkerLog is the worker's output so far.
func (s *CeleryStack) WorkerLog() string {
	b, _ := os.ReadFile(filepath.Join(s.Root, "shared", "var", "worker.log"))
	return string(b)
}
