package testgit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer is an ssh server on the loopback that serves git upload-pack,
// as a forge does: the real git upload-pack runs for each session, its
// input and output the session's. It accepts the keys it is given and
// records as whom each login came.
type SSHServer struct {
	Addr    string // host:port
	Port    string
	HostKey ssh.Signer

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	users []string
}

// NewHostKey is a fresh ed25519 host key.
func NewHostKey() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// StartSSHServer listens on 127.0.0.1 on a free port. A relative
// repository path a client asks for is taken from work. Close stops it.
func StartSSHServer(work string, allowed ...ssh.PublicKey) (*SSHServer, error) {
	hostKey, err := NewHostKey()
	if err != nil {
		return nil, fmt.Errorf("ssh server host key: %w", err)
	}
	s := &SSHServer{HostKey: hostKey}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			for _, a := range allowed {
				if bytes.Equal(a.Marshal(), key.Marshal()) {
					s.mu.Lock()
					s.users = append(s.users, meta.User())
					s.mu.Unlock()
					return nil, nil
				}
			}
			return nil, fmt.Errorf("key %s not allowed", ssh.FingerprintSHA256(key))
		},
	}
	cfg.AddHostKey(hostKey)
	s.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("ssh server: %w", err)
	}
	s.Addr = s.ln.Addr().String()
	_, s.Port, _ = net.SplitHostPort(s.Addr)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conn.Close()
				serveGitSSH(conn, cfg, work)
			}()
		}
	}()
	return s, nil
}

// Close stops listening and waits for the connections being served.
func (s *SSHServer) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// Logins are the users of the logins accepted so far.
func (s *SSHServer) Logins() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.users...)
}

// KnownHostsLine is the server's known_hosts line, as ssh-keyscan prints it.
func (s *SSHServer) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, s.HostKey.PublicKey()) + "\n"
}

// serveGitSSH serves one connection: each session may exec
// git-upload-pack on a path.
func serveGitSSH(conn net.Conn, cfg *ssh.ServerConfig, work string) {
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		go serveSession(ch, chReqs, work)
	}
}

func serveSession(ch ssh.Channel, reqs <-chan *ssh.Request, work string) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" || len(req.Payload) < 4 {
			req.Reply(false, nil) // env and the like: not needed
			continue
		}
		n := binary.BigEndian.Uint32(req.Payload)
		// go-git asks for: git-upload-pack '<path>'
		prog, arg, _ := strings.Cut(string(req.Payload[4:4+n]), " ")
		if prog != "git-upload-pack" {
			req.Reply(false, nil)
			return
		}
		req.Reply(true, nil)
		path := strings.Trim(arg, "'")
		if !filepath.IsAbs(path) {
			path = filepath.Join(work, path)
		}
		cmd := exec.Command("git", "upload-pack", path)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
		status := uint32(0)
		if err := cmd.Run(); err != nil {
			status = 1
		}
		ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
		return
	}
}
