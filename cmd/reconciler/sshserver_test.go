package main

import (
	"os"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/crypto/ssh"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// sshserver AUTHORIZED_KEY KNOWN_HOSTS starts an ssh server on the
// loopback, for the script's lifetime, that accepts the public key in the
// file AUTHORIZED_KEY and serves git upload-pack of the repositories under
// $WORK (a relative path is taken from there), as a forge does. It sets
// $SSHPORT and writes the known_hosts line of its host key to KNOWN_HOSTS,
// as ssh-keyscan would print it.
func sshserver(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: sshserver AUTHORIZED_KEY KNOWN_HOSTS")
	}
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	allowed, _, _, _, err := ssh.ParseAuthorizedKey(b)
	ts.Check(err)
	srv, err := testgit.StartSSHServer(ts.Getenv("WORK"), allowed)
	ts.Check(err)
	ts.Defer(srv.Close)
	ts.Setenv("SSHPORT", srv.Port)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(srv.KnownHostsLine()), 0o644))
}
