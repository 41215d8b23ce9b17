package gitcache

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Verifier says whose signature a commit must carry: one of the armored
// OpenPGP public keys in Keyring, or one of the ssh keys of AllowedSigners
// (ssh-keygen's allowed-signers file, for commits signed with git's
// gpg.format=ssh). The zero Verifier verifies nothing. The files are read
// at every verification, so an edited keyring takes effect at once.
type Verifier struct {
	Keyring        string
	AllowedSigners string
}

// Enabled reports whether commits are verified.
func (v Verifier) Enabled() bool { return v.Keyring != "" || v.AllowedSigners != "" }

// String names what commits are verified against, for messages.
func (v Verifier) String() string {
	switch {
	case v.Keyring != "" && v.AllowedSigners != "":
		return "keyring " + v.Keyring + " and allowed signers " + v.AllowedSigners
	case v.Keyring != "":
		return "keyring " + v.Keyring
	case v.AllowedSigners != "":
		return "allowed signers " + v.AllowedSigners
	}
	return "nothing"
}

// Why a commit is refused: SignatureError.Reason.
const (
	ReasonUnsigned = "unsigned"
	// ReasonUnknownKey: signed, but by no key of the keyring (or not
	// with OpenPGP at all).
	ReasonUnknownKey = "signed by a key not in the keyring"
	// ReasonUnknownSigner: signed, but by no key of the allowed signers
	// valid for git at the commit's time (or not with ssh at all).
	ReasonUnknownSigner = "signed by a key not in allowed_signers"
	// ReasonBadSignature: the signature does not verify: the commit was
	// changed after it was signed, the signature is corrupt or made for
	// another purpose, or the key expired or was revoked.
	ReasonBadSignature = "bad signature"
)

// SignatureError is a commit refused by a Verifier. It needs a person:
// someone must sign the commit, or trust its key, or deploy another one.
type SignatureError struct {
	Commit string // the full SHA
	Reason string // one of the Reason constants
	// Signer names the key that signed, as far as the signature tells:
	// "openpgp key <fingerprint or key id>[ <user id>]" or
	// "ssh key SHA256:...[, principal <principals>]"; "" when unsigned or
	// unreadable.
	Signer string
	Detail string // what else is known, or ""
}

func (e *SignatureError) Error() string {
	s := "commit " + e.Commit + ": " + e.Reason
	if e.Signer != "" {
		s += " (" + e.Signer + ")"
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// maxTrustFile bounds what is read of a keyring or allowed-signers file: a
// wrong path (a log, a disk image) is an error, not an out-of-memory.
const maxTrustFile = 4 << 20

// VerifyCommit checks that commit sha of the cache carries a signature
// Verify accepts. It returns nil when Verify is the zero Verifier; a
// *SignatureError inside a *Error (not transient) when the commit is
// refused; a *Error naming the file when the keyring or allowed-signers
// file can't be read or parsed, which needs a person too.
func (c *Cache) VerifyCommit(ctx context.Context, sha string) error {
	if !c.Verify.Enabled() {
		return nil
	}
	r, done, err := c.open()
	if err != nil {
		return fmt.Errorf("verify %s: %w", sha, err)
	}
	defer done()
	commit, err := r.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return readErr("verify "+sha, fmt.Errorf("read commit: %w", err))
	}
	return c.Verify.check(c.Verify.op(), commit)
}

// op is what a verification is called in messages.
func (v Verifier) op() string { return "verify signature against " + v.String() }

// check verifies commit: nil, or a *Error of op wrapping a
// *SignatureError or the failure to read the trusted keys.
func (v Verifier) check(op string, commit *object.Commit) error {
	var err error
	switch {
	case v.Keyring != "" && v.AllowedSigners != "":
		err = errors.New("give a keyring or allowed signers, not both")
	case v.Keyring != "":
		err = v.checkOpenPGP(commit)
	case v.AllowedSigners != "":
		err = v.checkSSH(commit)
	}
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	return nil
}

// CheckFiles reads and parses the keyring or allowed-signers file, so
// that a daemon can refuse to start on one it could never verify with.
func (v Verifier) CheckFiles() error {
	var err error
	switch {
	case v.Keyring != "" && v.AllowedSigners != "":
		err = errors.New("give a keyring or allowed signers, not both")
	case v.Keyring != "":
		_, _, err = v.keyring()
	case v.AllowedSigners != "":
		_, err = v.allowedSigners()
	}
	return err
}

// keyring reads Keyring: its keys, armored as one block, and as read.
//
// The file may hold several armored blocks, as `cat a.asc b.asc` makes;
// go-git's Commit.Verify reads only the first one of its argument, so the
// keys of all the blocks are armored again into one.
func (v Verifier) keyring() (string, openpgp.EntityList, error) {
	data, err := readTrustFile(v.Keyring)
	if err != nil {
		return "", nil, err
	}
	text := string(data)
	var keys openpgp.EntityList
	for {
		i := strings.Index(text, pgpKeyBlock)
		if i < 0 {
			break
		}
		text = text[i:]
		end := len(text)
		if j := strings.Index(text[len(pgpKeyBlock):], pgpKeyBlock); j >= 0 {
			end = len(pgpKeyBlock) + j
		}
		ks, err := openpgp.ReadArmoredKeyRing(strings.NewReader(text[:end]))
		if err != nil {
			return "", nil, fmt.Errorf("%s holds no armored OpenPGP public keys: %w", v.Keyring, err)
		}
		keys = append(keys, ks...)
		text = text[end:]
	}
	if len(keys) == 0 {
		return "", nil, fmt.Errorf("%s holds no armored OpenPGP public keys (no %s)", v.Keyring, pgpKeyBlock)
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		return "", nil, err
	}
	for _, k := range keys {
		if err := k.Serialize(w); err != nil {
			return "", nil, fmt.Errorf("%s: key %X: %w", v.Keyring, k.PrimaryKey.Fingerprint, err)
		}
	}
	if err := w.Close(); err != nil {
		return "", nil, err
	}
	return buf.String(), keys, nil
}

const pgpKeyBlock = "-----BEGIN PGP PUBLIC KEY BLOCK-----"

// allowedSigners reads AllowedSigners.
func (v Verifier) allowedSigners() (allowedSigners, error) {
	data, err := readTrustFile(v.AllowedSigners)
	if err != nil {
		return nil, err
	}
	signers, err := parseAllowedSigners(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", v.AllowedSigners, err)
	}
	return signers, nil
}

// readTrustFile reads a keyring or allowed-signers file.
func readTrustFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTrustFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxTrustFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxTrustFile)
	}
	return b, nil
}

const sshArmorStart = "-----BEGIN SSH SIGNATURE-----"

func isSSHSignature(sig string) bool {
	return strings.HasPrefix(strings.TrimLeft(sig, " \t\r\n"), sshArmorStart)
}

// checkOpenPGP verifies with go-git's Commit.Verify, which checks the
// armored detached signature over the commit without its gpgsig header.
func (v Verifier) checkOpenPGP(commit *object.Commit) error {
	// Parsed here, not only inside Commit.Verify, so that a broken
	// keyring is said to be one and not taken for a bad signature.
	armored, keys, err := v.keyring()
	if err != nil {
		return err
	}
	refuse := func(reason, signer, detail string) error {
		return &SignatureError{Commit: commit.Hash.String(), Reason: reason, Signer: signer, Detail: detail}
	}
	sig := commit.PGPSignature
	switch {
	case strings.TrimSpace(sig) == "":
		return refuse(ReasonUnsigned, "", "")
	case isSSHSignature(sig):
		return refuse(ReasonUnknownKey, sshSigner(sig), "an ssh signature, and the keyring holds OpenPGP keys")
	}
	signer, keyID := pgpSigner(sig)
	_, err = commit.Verify(armored)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return refuse(ReasonUnknownKey, signer, "")
	}
	// A key of the keyring, or a broken signature: the key's name
	// helps a person see whose commit it is.
	if ks := keys.KeysById(keyID); keyID != 0 && len(ks) > 0 {
		if id := ks[0].Entity.PrimaryIdentity(); id != nil {
			signer += " " + id.Name
		}
	}
	return refuse(ReasonBadSignature, signer, err.Error())
}

// pgpSigner names the key an OpenPGP signature says it was made with: its
// fingerprint when the signature carries it, else its key id; and the key
// id, 0 when unknown.
func pgpSigner(sig string) (string, uint64) {
	block, err := armor.Decode(strings.NewReader(sig))
	if err != nil {
		return "", 0
	}
	p, err := packet.Read(block.Body)
	if err != nil {
		return "", 0
	}
	s, ok := p.(*packet.Signature)
	if !ok {
		return "", 0
	}
	var id uint64
	if s.IssuerKeyId != nil {
		id = *s.IssuerKeyId
	}
	switch {
	case len(s.IssuerFingerprint) > 0:
		return fmt.Sprintf("openpgp key %X", s.IssuerFingerprint), id
	case s.IssuerKeyId != nil:
		return fmt.Sprintf("openpgp key id %016X", id), id
	}
	return "", 0
}

// sshSigner names the key of an armored ssh signature, "" when it can't
// be read.
func sshSigner(sig string) string {
	s, err := parseSSHSignature(sig)
	if err != nil {
		return ""
	}
	return "ssh key " + ssh.FingerprintSHA256(s.PublicKey)
}

// parseSSHSignature reads the armored signature of a gpgsig header: one
// PEM block of type SSH SIGNATURE and nothing after it.
func parseSSHSignature(sig string) (*sshsig.Signature, error) {
	block, rest := pem.Decode([]byte(sig))
	switch {
	case block == nil:
		return nil, errors.New("the ssh signature is not valid armor")
	case block.Type != sshsig.PEMType:
		return nil, fmt.Errorf("the armor is %q, not %q", block.Type, sshsig.PEMType)
	case len(bytes.TrimSpace(rest)) > 0:
		// As go-git's Verify refuses several OpenPGP signatures: which
		// one would count is not clear.
		return nil, errors.New("more than one signature")
	}
	return sshsig.ParseSignature(block.Bytes)
}

// sshNamespace is the namespace git signs commits in (ssh-keygen -Y sign
// -n git), so a signature made for something else is never taken for a
// commit's.
const sshNamespace = "git"

// checkSSH verifies an ssh signature as git does with ssh-keygen -Y
// find-principals and -Y verify: the key must be in the allowed signers,
// for the namespace git, at the committer's time; the signature, in
// namespace git, over the commit without its gpgsig header
// (PROTOCOL.sshsig).
func (v Verifier) checkSSH(commit *object.Commit) error {
	signers, err := v.allowedSigners()
	if err != nil {
		return err
	}
	refuse := func(reason, signer, detail string) error {
		return &SignatureError{Commit: commit.Hash.String(), Reason: reason, Signer: signer, Detail: detail}
	}
	sig := commit.PGPSignature
	switch {
	case strings.TrimSpace(sig) == "":
		return refuse(ReasonUnsigned, "", "")
	case !isSSHSignature(sig):
		signer, _ := pgpSigner(sig)
		return refuse(ReasonUnknownSigner, signer, "not an ssh signature")
	}
	s, err := parseSSHSignature(sig)
	if err != nil {
		return refuse(ReasonBadSignature, "", err.Error())
	}
	signer := "ssh key " + ssh.FingerprintSHA256(s.PublicKey)
	if s.Namespace != sshNamespace {
		return refuse(ReasonBadSignature, signer, fmt.Sprintf("made in namespace %q, not %q", s.Namespace, sshNamespace))
	}
	if _, ok := s.PublicKey.(*ssh.Certificate); ok {
		return refuse(ReasonUnknownSigner, signer, "made with an ssh certificate, which is not supported: list the key itself")
	}
	a, why := signers.find(s.PublicKey, sshNamespace, commit.Committer.When)
	if a == nil {
		return refuse(ReasonUnknownSigner, signer, why)
	}
	signer += ", principal " + a.Principals
	payload := &plumbing.MemoryObject{}
	if err := commit.EncodeWithoutSignature(payload); err != nil {
		return fmt.Errorf("encode commit %s: %w", commit.Hash, err)
	}
	rd, err := payload.Reader()
	if err != nil {
		return fmt.Errorf("encode commit %s: %w", commit.Hash, err)
	}
	defer rd.Close()
	if err := sshsig.Verify(rd, s, a.Key, s.HashAlgorithm, sshNamespace); err != nil {
		return refuse(ReasonBadSignature, signer, err.Error())
	}
	return nil
}

// VerifyCommit checks that commit sha of the config repository carries a
// signature Verify accepts; as Cache.VerifyCommit.
func (c *ConfigRepo) VerifyCommit(ctx context.Context, sha string) error {
	if !c.Verify.Enabled() {
		return nil
	}
	r, err := c.open()
	if err != nil {
		return err
	}
	op := fmt.Sprintf("config repo %s", Redact(c.URL))
	commit, err := r.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return translate(op, err)
	}
	return c.Verify.check(op+": "+c.Verify.op(), commit)
}
