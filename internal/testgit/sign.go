package testgit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Signer is a key git signs commits with: an OpenPGP key of a throwaway
// GNUPGHOME (gpg), or an ssh key (ssh-keygen).
type Signer interface {
	// gitArgs are the -c options that make git sign with the key.
	gitArgs() []string
	// env is what git needs in its environment to run the signer.
	env() []string
}

// GPGKey is an ed25519 OpenPGP key made with gpg in its own GNUPGHOME.
type GPGKey struct {
	t           testing.TB
	Home        string
	Fingerprint string
}

// NewGPGKey makes a key for uid ("Name <email>") in a new GNUPGHOME. The
// home is under the system temp folder, not t.TempDir: gpg-agent's socket
// path must stay short. The agent is stopped when the test ends.
func NewGPGKey(t testing.TB, uid string) *GPGKey {
	t.Helper()
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	k := &GPGKey{t: t, Home: home}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = k.env()
		cmd.Run()
		os.RemoveAll(home)
	})
	k.gpg("--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
	for _, line := range strings.Split(k.gpg("--list-keys", "--with-colons"), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" && len(f) > 9 {
			k.Fingerprint = f[9]
			break
		}
	}
	if k.Fingerprint == "" {
		t.Fatal("gpg made no key")
	}
	return k
}

func (k *GPGKey) env() []string {
	return []string{"PATH=/usr/local/bin:/usr/bin:/bin", "GNUPGHOME=" + k.Home}
}

func (k *GPGKey) gpg(args ...string) string {
	k.t.Helper()
	cmd := exec.Command("gpg", args...)
	cmd.Env = k.env()
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		k.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// Armored is the public key, armored, as a keyring file holds it.
func (k *GPGKey) Armored() string { return k.gpg("--armor", "--export", k.Fingerprint) }

func (k *GPGKey) gitArgs() []string {
	return []string{"-c", "gpg.format=openpgp", "-c", "gpg.program=gpg", "-c", "user.signingkey=" + k.Fingerprint}
}

// SSHKey is an ed25519 ssh key pair made with ssh-keygen.
type SSHKey struct {
	Private string // the private key file
	Public  string // the public key file
	Line    string // the public key: "ssh-ed25519 AAAA... comment"
}

// NewSSHKey makes a key pair without a passphrase.
func NewSSHKey(t testing.TB, comment string) *SSHKey {
	t.Helper()
	priv := filepath.Join(t.TempDir(), "key")
	cmd := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", priv)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(priv + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return &SSHKey{Private: priv, Public: priv + ".pub", Line: strings.TrimSpace(string(pub))}
}

func (k *SSHKey) gitArgs() []string {
	return []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + k.Public}
}

func (k *SSHKey) env() []string { return nil }

// Sign signs data with ssh-keygen -Y sign in namespace and returns the
// armored signature.
func (k *SSHKey) Sign(t testing.TB, namespace string, data []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ssh-keygen", "-Y", "sign", "-n", namespace, "-f", k.Private, f).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
	}
	sig, err := os.ReadFile(f + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	return string(sig)
}

// CommitSigned commits everything in the work tree, signed by s, and
// returns the full SHA.
func (r *Repo) CommitSigned(msg string, s Signer) string {
	r.t.Helper()
	r.n++
	r.Git("add", "-A")
	args := append(s.gitArgs(), "commit", "-q", "-S", "--allow-empty", "-m", msg)
	r.run(append(append([]string{}, r.Env...), s.env()...), "", args...)
	r.last = r.Git("rev-parse", "HEAD")
	return r.last
}

// RawCommit is the commit object sha, exactly as git stores it.
func (r *Repo) RawCommit(sha string) string {
	r.t.Helper()
	return r.run(r.Env, "", "cat-file", "commit", sha)
}

// WriteCommit stores raw as a commit object, points the current branch at
// it and returns its SHA: how a test makes a commit git would not, such
// as one changed after it was signed.
func (r *Repo) WriteCommit(raw string) string {
	r.t.Helper()
	sha := strings.TrimSpace(r.run(r.Env, raw, "hash-object", "-t", "commit", "-w", "--stdin"))
	r.Git("update-ref", "HEAD", sha)
	r.last = sha
	return sha
}

// Unsigned is raw without its gpgsig header: the data a signature of the
// commit is made over.
func Unsigned(raw string) string {
	var out []string
	lines := strings.SplitAfter(raw, "\n")
	for i := 0; i < len(lines); i++ {
		if lines[i] == "\n" { // the end of the headers
			out = append(out, lines[i:]...)
			break
		}
		if strings.HasPrefix(lines[i], "gpgsig ") {
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], " ") {
				i++
			}
			continue
		}
		out = append(out, lines[i])
	}
	return strings.Join(out, "")
}

// WithSignature is the unsigned commit raw with sig in its gpgsig
// header, after the committer as git puts it.
func WithSignature(raw, sig string) string {
	head, body, _ := strings.Cut(raw, "\n\n")
	hdr := "gpgsig " + strings.ReplaceAll(strings.TrimSuffix(sig, "\n"), "\n", "\n ")
	return head + "\n" + hdr + "\n\n" + body
}

func (r *Repo) run(env []string, stdin string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.Dir
	cmd.Env = env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}
