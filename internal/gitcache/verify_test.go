package gitcache

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// verifyCase is one commit and what verifying it must give: nil when
// reason is "", else a *SignatureError with that reason whose message
// holds every string of want.
type verifyCase struct {
	name   string
	sha    string
	reason string
	want   []string
}

// checkVerify exports every case's commit with c and checks the outcome:
// a refused commit writes nothing, and its error needs a person. It also
// checks VerifyCommit agrees.
func checkVerify(t *testing.T, c *Cache, tests []verifyCase) {
	t.Helper()
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := t.TempDir()
			err := c.Export(ctx, tt.sha, "", dest)
			verr := c.VerifyCommit(ctx, tt.sha)
			entries, _ := os.ReadDir(dest)
			if tt.reason == "" {
				if err != nil || verr != nil {
					t.Fatalf("refused: export %v, verify %v", err, verr)
				}
				if len(entries) == 0 {
					t.Fatal("nothing exported")
				}
				return
			}
			for _, err := range []error{err, verr} {
				var se *SignatureError
				if !errors.As(err, &se) {
					t.Fatalf("want a *SignatureError, got %v", err)
				}
				if se.Reason != tt.reason || se.Commit != tt.sha {
					t.Errorf("reason %q of commit %s, want %q of %s", se.Reason, se.Commit, tt.reason, tt.sha)
				}
				var ge *Error
				if !errors.As(err, &ge) || ge.Transient || ge.Remote {
					t.Errorf("want a *Error that needs a person, got %#v", ge)
				}
				if errors.Is(err, ErrDamaged) {
					t.Errorf("a refused commit is not a damaged cache: %v", err)
				}
				for _, w := range append([]string{"commit " + tt.sha + ": " + tt.reason}, tt.want...) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
			}
			if len(entries) != 0 {
				t.Errorf("a refused commit wrote %d entries", len(entries))
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tamper changes the message of a signed commit, keeping its signature.
func tamper(t *testing.T, r *testgit.Repo, sha string) string {
	t.Helper()
	raw := r.RawCommit(sha)
	changed := strings.Replace(raw, "\n\nv1\n", "\n\nv1, and something else\n", 1)
	if changed == raw {
		t.Fatalf("no message v1 in %q", raw)
	}
	return r.WriteCommit(changed)
}

func TestVerifyOpenPGP(t *testing.T) {
	alice := testgit.NewGPGKey(t, "Alice <alice@example.com>")
	mallory := testgit.NewGPGKey(t, "Mallory <mallory@example.com>")
	sshKey := testgit.NewSSHKey(t, "alice")
	r := testgit.New(t)
	r.Write("app.py", "print(1)\n")
	tags := map[string]string{}
	commit := func(tag, sha string) string { r.Git("tag", tag, sha); tags[tag] = sha; return sha }
	good := commit("good", r.CommitSigned("v1", alice))
	commit("tampered", tamper(t, r, good))
	commit("unsigned", r.Commit("v2"))
	commit("mallory", r.CommitSigned("v3", mallory))
	commit("ssh", r.CommitSigned("v4", sshKey))

	c := newCache(t, r.Dir)
	if err := c.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Verify = Verifier{Keyring: writeFile(t, "trusted.asc", alice.Armored())}
	checkVerify(t, c, []verifyCase{
		{"signed by a trusted key", tags["good"], "", nil},
		{"unsigned", tags["unsigned"], ReasonUnsigned, []string{"verify signature against keyring " + c.Verify.Keyring}},
		{"signed by another key", tags["mallory"], ReasonUnknownKey, []string{"openpgp key " + mallory.Fingerprint}},
		{"changed after it was signed", tags["tampered"], ReasonBadSignature, []string{"openpgp key " + alice.Fingerprint + " Alice <alice@example.com>", "invalid signature"}},
		{"signed with ssh", tags["ssh"], ReasonUnknownKey, []string{"ssh key SHA256:", "an ssh signature"}},
	})

	// A keyring of both keys trusts both.
	c.Verify = Verifier{Keyring: writeFile(t, "both.asc", alice.Armored()+mallory.Armored())}
	checkVerify(t, c, []verifyCase{
		{"either key", tags["mallory"], "", nil},
	})

	// A keyring that can't be used is said to be that, not a bad commit.
	for _, tt := range []struct{ name, keyring, want string }{
		{"missing", filepath.Join(t.TempDir(), "nosuch.asc"), "no such file or directory"},
		{"not a keyring", writeFile(t, "junk.asc", "hello\n"), "holds no armored OpenPGP public keys"},
		{"a private key's place", writeFile(t, "empty.asc", ""), "holds no armored OpenPGP public keys"},
	} {
		t.Run("keyring "+tt.name, func(t *testing.T) {
			c.Verify = Verifier{Keyring: tt.keyring}
			err := c.Export(context.Background(), tags["good"], "", t.TempDir())
			var se *SignatureError
			var ge *Error
			if err == nil || errors.As(err, &se) || !errors.As(err, &ge) || ge.Transient {
				t.Fatalf("want a *Error that needs a person and is no *SignatureError, got %v", err)
			}
			if !strings.Contains(err.Error(), tt.keyring) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s and say %q", err, tt.keyring, tt.want)
			}
			if err := c.Verify.CheckFiles(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckFiles: %v", err)
			}
		})
	}

	// Without a Verifier any commit exports.
	c.Verify = Verifier{}
	checkVerify(t, c, []verifyCase{{"no verification", tags["unsigned"], "", nil}})
}

// sshFingerprint is ssh-keygen's fingerprint of a public key file.
func sshFingerprint(t *testing.T, pub string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-l", "-f", pub).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))[1]
}

func TestVerifySSH(t *testing.T) {
	alice := testgit.NewSSHKey(t, "alice")
	mallory := testgit.NewSSHKey(t, "mallory")
	gpgKey := testgit.NewGPGKey(t, "Alice <alice@example.com>")
	aliceFP, malloryFP := sshFingerprint(t, alice.Public), sshFingerprint(t, mallory.Public)
	r := testgit.New(t)
	r.Write("app.py", "print(1)\n")
	tags := map[string]string{}
	commit := func(tag, sha string) { r.Git("tag", tag, sha); tags[tag] = sha }
	good := r.CommitSigned("v1", alice)
	commit("good", good)
	commit("tampered", tamper(t, r, good))
	unsigned := r.Commit("v2")
	commit("unsigned", unsigned)
	commit("mallory", r.CommitSigned("v3", mallory))
	commit("gpg", r.CommitSigned("v4", gpgKey))
	// Signed by hand with ssh-keygen -Y sign: in namespace git it is what
	// git makes; in another namespace it is a signature made for some
	// other purpose, which must not pass for a commit's.
	payload := testgit.Unsigned(r.RawCommit(unsigned))
	commit("by-hand", r.WriteCommit(testgit.WithSignature(payload, alice.Sign(t, "git", []byte(payload)))))
	commit("file-namespace", r.WriteCommit(testgit.WithSignature(payload, alice.Sign(t, "file", []byte(payload)))))

	c := newCache(t, r.Dir)
	if err := c.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	signers := "# who may sign\n\nalice@example.com,ops@example.com namespaces=\"git\" " + alice.Line + "\n"
	c.Verify = Verifier{AllowedSigners: writeFile(t, "allowed_signers", signers)}
	checkVerify(t, c, []verifyCase{
		{"signed by an allowed key", tags["good"], "", nil},
		{"signed by hand in namespace git", tags["by-hand"], "", nil},
		{"unsigned", tags["unsigned"], ReasonUnsigned, []string{"allowed signers " + c.Verify.AllowedSigners}},
		{"signed by another key", tags["mallory"], ReasonUnknownSigner, []string{"(ssh key " + malloryFP + ")"}},
		{"changed after it was signed", tags["tampered"], ReasonBadSignature, []string{"(ssh key " + aliceFP + ", principal alice@example.com,ops@example.com)"}},
		{"wrong namespace", tags["file-namespace"], ReasonBadSignature, []string{"ssh key " + aliceFP, `made in namespace "file", not "git"`}},
		{"signed with gpg", tags["gpg"], ReasonUnknownSigner, []string{"openpgp key " + gpgKey.Fingerprint, "not an ssh signature"}},
	})

	// The options of the line are kept: the namespaces, and the times
	// (the commits are of 2026-11-25T12:00:00Z).
	for _, tt := range []struct{ name, options, why string }{
		{"namespaces", `namespaces="file,!git,*"`, `line 1 lists the key for namespaces "file,!git,*", not "git"`},
		{"valid-after", `valid-after="20261126Z"`, "line 1 lists the key as valid after 2026-11-26T00:00:00Z; the commit is of 2026-11-25T12:00:00Z"},
		{"valid-before", `valid-before="202611251159Z"`, "line 1 lists the key as valid before 2026-11-25T11:59:00Z"},
		{"cert-authority", `cert-authority`, ""},
	} {
		c.Verify = Verifier{AllowedSigners: writeFile(t, "allowed_signers", "alice@example.com "+tt.options+" "+alice.Line+"\n")}
		checkVerify(t, c, []verifyCase{{"refused by " + tt.name, tags["good"], ReasonUnknownSigner, []string{tt.why}}})
	}
	c.Verify = Verifier{AllowedSigners: writeFile(t, "allowed_signers", `alice@example.com namespaces="file,g?t",valid-after="20261125",valid-before="20261125120000UTC" `+alice.Line+"\n")}
	checkVerify(t, c, []verifyCase{{"allowed by its options", tags["good"], "", nil}})

	// A file that does not parse is an error naming its line, never a
	// silently smaller list of signers.
	c.Verify = Verifier{AllowedSigners: writeFile(t, "allowed_signers", alice.Line+"\n")}
	err := c.Export(context.Background(), tags["good"], "", t.TempDir())
	var se *SignatureError
	if err == nil || errors.As(err, &se) || !strings.Contains(err.Error(), "allowed_signers: line 1: no public key after the principals") {
		t.Errorf("a line without principals: %v", err)
	}
}

// A config repository's commit is verified as an app commit is, in place
// or in its clone.
func TestConfigRepoVerifyCommit(t *testing.T) {
	ctx := context.Background()
	alice := testgit.NewSSHKey(t, "alice")
	r := testgit.New(t)
	r.Write("d.yaml", "app: a\n")
	good := r.CommitSigned("v1", alice)
	unsigned := r.Commit("v2")
	v := Verifier{AllowedSigners: writeFile(t, "allowed_signers", "alice "+alice.Line+"\n")}
	for _, c := range []*ConfigRepo{
		{URL: r.Dir, Branch: "main", Local: true, Verify: v},
		{URL: "file://" + r.Dir, Branch: "main", CacheDir: filepath.Join(t.TempDir(), "cfg"), Verify: v},
	} {
		if err := c.Fetch(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.VerifyCommit(ctx, good); err != nil {
			t.Errorf("%s: signed: %v", c.URL, err)
		}
		err := c.VerifyCommit(ctx, unsigned)
		var se *SignatureError
		if !errors.As(err, &se) || se.Reason != ReasonUnsigned || !strings.HasPrefix(err.Error(), "config repo "+c.URL+": verify signature against allowed signers") {
			t.Errorf("%s: unsigned: %v", c.URL, err)
		}
		c.Verify = Verifier{}
		if err := c.VerifyCommit(ctx, unsigned); err != nil {
			t.Errorf("%s: without a verifier: %v", c.URL, err)
		}
	}
}
