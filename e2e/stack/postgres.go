package stack

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PGBin is where Debian's postgresql-15 puts the server's programs (not on
// PATH: pg_wrapper only wraps the clients).
const PGBin = "/usr/lib/postgresql/15/bin"

// Postgres is a PostgreSQL cluster of its own: made by initdb in a
// temporary directory, listening on 127.0.0.1 only (its unix socket in that
// directory), with one database and its owner, both named DB. Stopped and
// removed by cleanup.
type Postgres struct {
	T    T
	Dir  string // the cluster's directory: data/, the socket, the log
	Addr string // 127.0.0.1:port
	DB   string // the database and the role that owns it
	Log  string // the server's log

	cred *syscall.Credential // the postgres user's, when the test runs as root
}

// URL is the DATABASE_URL the app connects with.
func (p *Postgres) URL() string { return "postgres://" + p.DB + "@" + p.Addr + "/" + p.DB }

// Port is the port of Addr.
func (p *Postgres) Port() string {
	_, port, _ := strings.Cut(p.Addr, ":")
	return port
}

// StartPostgres makes and starts a cluster with database db.
//
// PostgreSQL refuses to run as root: as root the cluster is made and run
// as Debian's postgres user, in a directory made for it outside the test's
// 0700 temporary directories, which that user cannot enter.
func StartPostgres(t T, db string) *Postgres {
	t.Helper()
	for _, prog := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(PGBin, prog)); err != nil {
			t.Fatalf("%v (install: apt-get install postgresql)", err)
		}
	}
	dir, err := os.MkdirTemp("", "reconciler-pg-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &Postgres{T: t, Dir: dir, Addr: FreeAddr(t), DB: db, Log: filepath.Join(dir, "postgres.log")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("postgres refuses to run as root, and there is no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("%v", err)
		}
	}
	// trust on loopback: the test's own cluster, reachable from this
	// host only; fsync off: a crash loses nothing a test needs.
	p.server(filepath.Join(PGBin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C").run()

	cmd := p.server(filepath.Join(PGBin, "postgres"), "-D", filepath.Join(dir, "data"),
		"-c", "listen_addresses=127.0.0.1", "-p", p.Port(), "-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
		"-c", "logging_collector=off", "-c", "log_min_messages=warning")
	logf, err := os.Create(p.Log)
	if err != nil {
		t.Fatalf("%v", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGINT is the fast shutdown: sessions are ended, not waited for.
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	for i := 0; ; i++ {
		select {
		case <-exited:
			t.Fatalf("postgres exited:\n%s", p.tail())
		default:
		}
		if exec.Command(filepath.Join(PGBin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", p.Port()).Run() == nil {
			break
		}
		if i == 600 {
			t.Fatalf("postgres did not come up in 30 s:\n%s", p.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.psql("postgres", "postgres", "CREATE ROLE "+db+" LOGIN")
	p.psql("postgres", "postgres", "CREATE DATABASE "+db+" OWNER "+db)
	return p
}

type serverCmd struct {
	*exec.Cmd
	p *Postgres
}

// server is a command run as the cluster's owner.
func (p *Postgres) server(name string, args ...string) serverCmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = p.Dir
	cmd.Env = []string{BasePath, "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	return serverCmd{cmd, p}
}

func (c serverCmd) run() {
	c.p.T.Helper()
	if out, err := c.CombinedOutput(); err != nil {
		c.p.T.Fatalf("%s: %v\n%s", strings.Join(c.Args, " "), err, out)
	}
}

func (p *Postgres) tail() string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// psql runs sql in db as role and returns the rows, one a line, fields
// separated by |.
func (p *Postgres) psql(role, db, sql string) string {
	p.T.Helper()
	cmd := exec.Command(filepath.Join(PGBin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", p.Port(), "-U", role, "-d", db, "-c", sql)
	cmd.Env = []string{BasePath, "LC_ALL=C"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		p.T.Fatalf("psql %q: %v\n%s", sql, err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// Query runs sql in the app's database, as its owner, and returns the
// rows, one a line, fields separated by |.
func (p *Postgres) Query(sql string) []string {
	p.T.Helper()
	out := p.psql(p.DB, p.DB, sql)
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// Columns returns the columns of table as information_schema has them,
// in their order.
func (p *Postgres) Columns(table string) []string {
	p.T.Helper()
	return p.Query(fmt.Sprintf("SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '%s' ORDER BY ordinal_position", table))
}

// Migrations returns the rows of django_migrations for app, "app.name"
// in the order they were applied.
func (p *Postgres) Migrations(app string) []string {
	p.T.Helper()
	return p.Query(fmt.Sprintf("SELECT app || '.' || name FROM django_migrations WHERE app = '%s' ORDER BY id", app))
}
