package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshserver AUTHORIZED_KEY KNOWN_HOSTS starts an ssh server on the
// loopback, for the script's lifetime, that accepts the public key in the
// file AUTHORIZED_KEY and serves git upload-pack of the repositories under
// $WORK (a relative path is taken from there), as a forge does. It sets
// $SSHPORT and writes the known_hosts line of its host key to KNOWN_HOSTS,
// as ssh-keyscan would print it. (internal/gitcache's ssh_test.go has the
// same server for the package's tests.)
func sshserver(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: sshserver AUTHORIZED_KEY KNOWN_HOSTS")
	}
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	allowed, _, _, _, err := ssh.ParseAuthorizedKey(b)
	ts.Check(err)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	ts.Check(err)
	hostKey, err := ssh.NewSignerFromKey(priv)
	ts.Check(err)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(key.Marshal(), allowed.Marshal()) {
			return nil, nil
		}
		return nil, os.ErrPermission
	}}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	work := ts.Getenv("WORK")
	var wg sync.WaitGroup
	ts.Defer(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				serveSSH(conn, cfg, work)
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ts.Setenv("SSHPORT", port)
	line := knownhosts.Line([]string{knownhosts.Normalize(ln.Addr().String())}, hostKey.PublicKey()) + "\n"
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(line), 0o644))
}

func serveSSH(conn net.Conn, cfg *ssh.ServerConfig, work string) {
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
		go func() {
			defer ch.Close()
			for req := range chReqs {
				if req.Type != "exec" || len(req.Payload) < 4 {
					req.Reply(false, nil)
					continue
				}
				n := binary.BigEndian.Uint32(req.Payload)
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
				if cmd.Run() != nil {
					status = 1
				}
				ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
				return
			}
		}()
	}
}
