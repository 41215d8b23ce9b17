package gitcache

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

const fuzzKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIApDDbonk6sH9z+zuYd3vn3ayBJwxtL+PXZUlHszPqnH alice"

// Whatever the file holds, parsing never panics, and what it returns is
// what the file says: a key on every entry, which reads back the same,
// and principals.
func FuzzParseAllowedSigners(f *testing.F) {
	for _, s := range []string{
		"alice@example.com " + fuzzKey,
		"# comment\n\n  alice,bob " + fuzzKey + "\n",
		`"alice smith" namespaces="git,file" ` + fuzzKey,
		`a valid-after="20260101Z",valid-before="20270101123000UTC" ` + fuzzKey,
		`a cert-authority ` + fuzzKey,
		`a namespaces=git ` + fuzzKey,
		`a unknown-option ` + fuzzKey,
		"a\r\nb " + fuzzKey + "\r\n",
		`"unterminated ` + fuzzKey,
		"a ssh-ed25519 AAAA",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		as, err := parseAllowedSigners(data)
		if err != nil {
			return
		}
		lines := strings.Count(string(data), "\n") + 1
		for _, a := range as {
			if a.Key == nil || a.Principals == "" || a.Line < 1 || a.Line > lines {
				t.Fatalf("entry %+v of %q", a, data)
			}
			line := `"` + a.Principals + `" ` + string(ssh.MarshalAuthorizedKey(a.Key))
			again, err := parseAllowedSigners([]byte(line))
			if strings.Contains(a.Principals, `"`) {
				continue
			}
			if err != nil || len(again) != 1 || string(again[0].Key.Marshal()) != string(a.Key.Marshal()) || again[0].Principals != a.Principals {
				t.Fatalf("%q reads back as %+v, %v", line, again, err)
			}
		}
	})
}

// matchPattern agrees with a regular expression made from the pattern.
func FuzzMatchPattern(f *testing.F) {
	for _, s := range [][2]string{{"git", "git"}, {"git", "g?t"}, {"git", "*"}, {"git", "*i*"}, {"", "*"}, {"aaaaaaaaaaaaaaaaaaaaab", "*a*a*a*a*a*a*a*c"}, {"file", "fi"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, s, p string) {
		for _, c := range s + p {
			if c >= 0x80 {
				return // the matcher is bytewise; the regexp is by rune
			}
		}
		var re strings.Builder
		re.WriteString(`^(?s:`)
		for _, c := range p {
			switch c {
			case '*':
				re.WriteString(`.*`)
			case '?':
				re.WriteString(`.`)
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString(`)$`)
		want := regexp.MustCompile(re.String()).MatchString(s)
		if got := matchPattern(s, p); got != want {
			t.Fatalf("matchPattern(%q, %q) = %v, want %v", s, p, got, want)
		}
	})
}

// Whatever a commit's gpgsig header and message hold, verification never
// panics and accepts only the message that was signed.
func FuzzVerifySSH(f *testing.F) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		f.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		f.Fatal(err)
	}
	allowed := filepath.Join(f.TempDir(), "allowed_signers")
	if err := os.WriteFile(allowed, []byte("alice "+string(ssh.MarshalAuthorizedKey(sshPub))), 0o644); err != nil {
		f.Fatal(err)
	}
	v := Verifier{AllowedSigners: allowed}
	const head = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@example.com> 1795608000 +0000\ncommitter A <a@example.com> 1795608000 +0000\n"
	const signed = "v1\n"
	sign := func(ns string) string {
		s, err := sshsig.Sign(strings.NewReader(head+"\n"+signed), signer, sshsig.HashSHA512, ns)
		if err != nil {
			f.Fatal(err)
		}
		return string(sshsig.Armor(s))
	}
	good := sign("git")
	f.Add(good, signed)
	f.Add(good, "v2\n")
	f.Add(sign("file"), signed)
	f.Add(good+good, signed)
	f.Add(strings.Replace(good, "A", "B", 1), signed)
	f.Add("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n", signed)
	f.Add("", signed)
	commit := func(sig, msg string) *object.Commit {
		raw := head
		if sig != "" {
			raw += "gpgsig " + strings.ReplaceAll(strings.TrimSuffix(sig, "\n"), "\n", "\n ") + "\n"
		}
		raw += "\n" + msg
		obj := &plumbing.MemoryObject{}
		obj.SetType(plumbing.CommitObject)
		obj.Write([]byte(raw))
		c := &object.Commit{}
		if err := c.Decode(obj); err != nil {
			return nil
		}
		return c
	}
	// The property below holds of a verifier that accepts nothing: this
	// one accepts the signed commit.
	if err := v.check("verify", commit(good, signed)); err != nil {
		f.Fatalf("the signed commit: %v", err)
	}
	f.Fuzz(func(t *testing.T, sig, msg string) {
		if strings.Contains(sig, "\n\n") || strings.ContainsRune(sig, 0) {
			return // a header can't hold an empty line
		}
		c := commit(sig, msg)
		if c == nil {
			return
		}
		err := v.check("verify", c)
		if err == nil && (msg != signed || c.Message != signed) {
			t.Fatalf("accepted message %q with signature %q", msg, sig)
		}
	})
}
