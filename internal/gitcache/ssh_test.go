package gitcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

func newHostKey(t *testing.T) ssh.Signer {
	t.Helper()
	k, err := testgit.NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func startGitSSHServer(t *testing.T, allowed ...ssh.PublicKey) *testgit.SSHServer {
	t.Helper()
	s, err := testgit.StartSSHServer(t.TempDir(), allowed...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// sshHomeDir is a HOME for one test: the ssh files the reconciler reads,
// and nothing of the machine's (no agent, no SSH_KNOWN_HOSTS).
type sshHomeDir struct {
	t   *testing.T
	dir string
}

func newSSHHome(t *testing.T) *sshHomeDir {
	h := &sshHomeDir{t: t, dir: t.TempDir()}
	if err := os.Mkdir(filepath.Join(h.dir, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", h.dir)
	t.Setenv("SSH_AUTH_SOCK", "")
	t.Setenv("SSH_KNOWN_HOSTS", "")
	return h
}

func (h *sshHomeDir) path(name string) string { return filepath.Join(h.dir, ".ssh", name) }

func (h *sshHomeDir) write(name, content string) {
	h.t.Helper()
	if err := os.WriteFile(h.path(name), []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// keygen makes a key with ssh-keygen at path, with a passphrase when
// given one, and returns its public key.
func keygen(t *testing.T, path, passphrase string) ssh.PublicKey {
	t.Helper()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// knownHostsLine is the known_hosts line of key for the server, as
// ssh-keyscan prints it.
func knownHostsLine(addr string, key ssh.PublicKey) string {
	return xknownhosts.Line([]string{xknownhosts.Normalize(addr)}, key) + "\n"
}

// startAgent runs ssh-agent in the foreground on a socket of the test,
// adds the keys, and points SSH_AUTH_SOCK at it; the agent is killed at
// the end of the test.
func startAgent(t *testing.T, keys ...string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// It prints its environment once it listens: that is when it is ready.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH_AUTH_SOCK=") {
		t.Fatalf("ssh-agent: %q, %v", line, err)
	}
	go io.Copy(io.Discard, out)
	t.Setenv("SSH_AUTH_SOCK", sock)
	for _, k := range keys {
		if b, err := exec.Command("ssh-add", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-add %s: %v\n%s", k, err, b)
		}
	}
}

// SSH as git does it, against a real ssh server serving a real repository:
// the host alias, port, user and key of ~/.ssh/config; a key of ~/.ssh;
// the agent; and known_hosts, whose refusals say what to do.
func TestSSHLikeGit(t *testing.T) {
	ctx := context.Background()
	repo := testgit.New(t)
	repo.Write("VERSION", "1\n")
	head := repo.Commit("v1")

	type setup struct {
		h      *sshHomeDir
		srv    *testgit.SSHServer
		url    string
		wantAs string // the user the server must have seen
	}
	// serve starts a server accepting keys and records it in known_hosts.
	serve := func(t *testing.T, h *sshHomeDir, keys ...ssh.PublicKey) *testgit.SSHServer {
		srv := startGitSSHServer(t, keys...)
		h.write("known_hosts", knownHostsLine(srv.Addr, srv.HostKey.PublicKey()))
		return srv
	}
	cases := []struct {
		name    string
		prepare func(t *testing.T) setup
		wantErr []string // substrings of the error; none for success
		notErr  []string // what the error must not say
		check   func(t *testing.T, err error)
	}{
		{
			name: "a host alias of ~/.ssh/config: HostName, Port, User, IdentityFile",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				srv := serve(t, h, keygen(t, h.path("deploy_key"), ""))
				h.write("config", fmt.Sprintf("Host gitserver\n  HostName 127.0.0.1\n  Port %s\n  User deploy\n  IdentityFile ~/.ssh/deploy_key\n", srv.Port))
				return setup{h, srv, "gitserver:" + repo.Dir, "deploy"}
			},
		},
		{
			name: "a key of ~/.ssh, without agent or config",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				srv := serve(t, h, keygen(t, h.path("id_ed25519"), ""))
				return setup{h, srv, "ssh://git@127.0.0.1:" + srv.Port + repo.Dir, "git"}
			},
		},
		{
			name: "a key with a passphrase is skipped for the next of ~/.ssh",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				keygen(t, h.path("id_ed25519"), "secret passphrase")
				srv := serve(t, h, keygen(t, h.path("id_rsa"), ""))
				return setup{h, srv, "ssh://git@127.0.0.1:" + srv.Port + repo.Dir, "git"}
			},
		},
		{
			name: "only a key with a passphrase: said so, before any network",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				srv := serve(t, h, keygen(t, h.path("id_ed25519"), "secret passphrase"))
				return setup{h, srv, "ssh://git@127.0.0.1:" + srv.Port + repo.Dir, ""}
			},
			wantErr: []string{"no ssh key to offer", "no agent (SSH_AUTH_SOCK is not set)", "(~/.ssh/id_ed25519 has a passphrase (add it to an agent with ssh-add"},
			check:   func(t *testing.T, _ error) {},
		},
		{
			name: "the agent's key",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				key := filepath.Join(t.TempDir(), "agent_key") // not in ~/.ssh
				srv := serve(t, h, keygen(t, key, ""))
				startAgent(t, key)
				return setup{h, srv, "ssh://git@127.0.0.1:" + srv.Port + repo.Dir, "git"}
			},
		},
		{
			name: "an agent that does not answer: the keys of ~/.ssh",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				srv := serve(t, h, keygen(t, h.path("id_ecdsa"), ""))
				t.Setenv("SSH_AUTH_SOCK", filepath.Join(t.TempDir(), "gone.sock"))
				return setup{h, srv, "ssh://git@127.0.0.1:" + srv.Port + repo.Dir, "git"}
			},
		},
		{
			name: "a key the server refuses: what was offered",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				keygen(t, h.path("id_ed25519"), "")
				srv := serve(t, h, keygen(t, filepath.Join(t.TempDir(), "other"), ""))
				return setup{h, srv, "ssh://git@127.0.0.1:" + srv.Port + repo.Dir, ""}
			},
			wantErr: []string{"refused the keys offered (", "(~/.ssh/id_ed25519)", "unable to authenticate"},
		},
		{
			name: "an unknown host: the ssh-keyscan line to run",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				srv := startGitSSHServer(t, keygen(t, h.path("id_ed25519"), ""))
				return setup{h, srv, "ssh://git@127.0.0.1:" + srv.Port + repo.Dir, ""}
			},
			wantErr: []string{"is unknown", "then record the key: ssh-keyscan -p PORT 127.0.0.1 >> ~/.ssh/known_hosts", "SHA256:"},
			check: func(t *testing.T, err error) {
				var he *HostKeyError
				if !errors.As(err, &he) || he.Changed() {
					t.Errorf("not an unknown-host HostKeyError: %#v", err)
				}
			},
		},
		{
			name: "an unknown host behind an alias: the line names the real host and port",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				srv := startGitSSHServer(t, keygen(t, h.path("id_ed25519"), ""))
				h.write("config", "Host gitserver\n  HostName 127.0.0.1\n  Port "+srv.Port+"\n")
				return setup{h, srv, "git@gitserver:" + repo.Dir, ""}
			},
			wantErr: []string{"ssh-keyscan -p PORT 127.0.0.1 >> ~/.ssh/known_hosts"},
		},
		{
			name: "a changed host key: refused, saying so, and no way around",
			prepare: func(t *testing.T) setup {
				h := newSSHHome(t)
				srv := startGitSSHServer(t, keygen(t, h.path("id_ed25519"), ""))
				h.write("known_hosts", knownHostsLine(srv.Addr, newHostKey(t).PublicKey()))
				return setup{h, srv, "ssh://git@127.0.0.1:" + srv.Port + repo.Dir, ""}
			},
			wantErr: []string{"the ssh host key of 127.0.0.1:PORT has changed", "/.ssh/known_hosts:1 has another key", "refusing to connect"},
			notErr:  []string{"ssh-keyscan", "ssh-keygen -R", "StrictHostKeyChecking", "InsecureIgnoreHostKey"},
			check: func(t *testing.T, err error) {
				var he *HostKeyError
				if !errors.As(err, &he) || !he.Changed() {
					t.Errorf("not a changed-key HostKeyError: %#v", err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.prepare(t)
			c := newCache(t, s.url)
			c.Ref = "main"
			sha, err := c.LsRemote(ctx, "main")
			if len(tc.wantErr) == 0 {
				if err != nil || sha != head {
					t.Fatalf("LsRemote = %s, %v; want %s", sha, err, head)
				}
				// A real fetch too, over the same ssh.
				if err := c.Fetch(ctx); err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if got, _, err := c.Resolve(ctx, "main"); err != nil || got != head {
					t.Fatalf("Resolve after the fetch = %s, %v", got, err)
				}
				for _, u := range s.srv.Logins() {
					if u != s.wantAs {
						t.Errorf("logged in as %q, want %q", u, s.wantAs)
					}
				}
				if len(s.srv.Logins()) == 0 {
					t.Error("no login reached the server")
				}
				return
			}
			if err == nil {
				t.Fatal("LsRemote succeeded")
			}
			msg := err.Error()
			t.Log(msg)
			for _, w := range tc.wantErr {
				if w = strings.ReplaceAll(w, "PORT", s.srv.Port); !strings.Contains(msg, w) {
					t.Errorf("the error does not say %q:\n%s", w, msg)
				}
			}
			for _, w := range tc.notErr {
				if strings.Contains(msg, w) {
					t.Errorf("the error says %q:\n%s", w, msg)
				}
			}
			var ge *Error
			if !errors.As(err, &ge) || ge.Transient {
				t.Errorf("not an *Error that needs a person: %#v", err)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
			if len(s.srv.Logins()) != 0 {
				t.Errorf("logins reached the server: %v", s.srv.Logins())
			}
		})
	}
}

// Where a URL leads once ~/.ssh/config is applied, and what go-git is told
// when it dials: the two agree, so the host key checked is the one of the
// host dialled.
func TestSSHTarget(t *testing.T) {
	const config = `Host gitserver
  HostName 10.0.0.7
  Port 2222
  User deploy
Host portonly
  Port 2200
Host *.corp
  HostName %h.example.net
Host useronly
  User deploy2
`
	for _, tc := range []struct {
		url      string
		want     string // user@host:port
		dialHost string // what go-git is told, "" for the URL's own
	}{
		{"gitserver:org/app.git", "deploy@10.0.0.7:2222", "10.0.0.7"},
		{"alice@gitserver:org/app.git", "alice@10.0.0.7:2222", "10.0.0.7"},
		{"ssh://gitserver/org/app.git", "deploy@10.0.0.7:2222", "10.0.0.7"},
		{"ssh://portonly/app.git", "git@portonly:2200", "portonly"},
		{"ssh://git@example.com:2022/app.git", "git@example.com:2022", ""},
		{"git@example.com:org/app.git", "git@example.com:22", ""},
		{"ssh://repo.corp/app.git", "git@repo.corp.example.net:22", "repo.corp.example.net"},
		{"ssh://useronly/app.git", "deploy2@useronly:22", ""},
	} {
		t.Run(tc.url, func(t *testing.T) {
			h := newSSHHome(t)
			h.write("config", config)
			cfg, err := loadSSHConfig(h.dir)
			if err != nil {
				t.Fatal(err)
			}
			ep, err := transport.NewEndpoint(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			tg := cfg.target(ep)
			if got := tg.user + "@" + tg.addr(); got != tc.want {
				t.Errorf("target = %s, want %s", got, tc.want)
			}
			d := dialConfig{}
			if got := d.Get(ep.Host, "Hostname"); got != tc.dialHost {
				t.Errorf("go-git is told host %q, want %q", got, tc.dialHost)
			}
			if tc.dialHost != "" {
				if got := d.Get(ep.Host, "Port"); got != fmt.Sprint(tg.port) {
					t.Errorf("go-git is told port %q, want %d", got, tg.port)
				}
			}
		})
	}
}

// A config the library cannot read (it has no Match) is an error naming
// the file, before any network, not a panic of the deploy.
func TestSSHConfigUnreadable(t *testing.T) {
	h := newSSHHome(t)
	h.write("config", "Host a\n  HostName b\nMatch host c exec \"true\"\n  User d\n")
	_, err := newSSHAuth("ssh://a/app.git", "")
	var ge *Error
	if !errors.As(err, &ge) || !strings.Contains(err.Error(), "read ssh config "+h.path("config")+": ") {
		t.Errorf("newSSHAuth: %v; want an error naming the file", err)
	}
	if (dialConfig{}).Get("a", "Hostname") != "" {
		t.Error("go-git was told a host from a config that does not parse")
	}
}
