package gitcache

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/kevinburke/ssh_config"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// SSH as git's command line does it (ssh(1) reads the same files):
//
//   - ~/.ssh/config and /etc/ssh/ssh_config: a Host's HostName, Port, User
//     and IdentityFile;
//   - keys: source.ssh_key alone when it is set; else the agent's
//     (SSH_AUTH_SOCK, when it answers), then the IdentityFiles the config
//     names for the host, or the first of ~/.ssh/id_ed25519, id_ecdsa and
//     id_rsa; a key with a passphrase is skipped, and said so;
//   - host keys: ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts
//     (SSH_KNOWN_HOSTS, a list of files, instead, as go-git reads it); an
//     unknown host is refused with the ssh-keyscan line that records it, a
//     changed key is refused, saying so.
//
// "~" is $HOME, or the user's home from the password database when HOME
// is unset (as under systemd without User=).

// defaultIdentities are ssh's default keys, in its order, without the DSA
// key x/crypto/ssh cannot use.
var defaultIdentities = []string{"id_ed25519", "id_ecdsa", "id_rsa"}

func init() {
	// go-git picks the address it dials from this, by the URL's host
	// alone; it is ours, so that it reads the files named above when it
	// dials, not the user's config it read once at its first use (and
	// from the password database's home, not $HOME), and never panics on
	// a Match block. Every use of go-git is in this package.
	gitssh.DefaultSSHConfig = dialConfig{}
}

// sshHome is the folder "~" stands for.
func sshHome() string {
	if h := os.Getenv("HOME"); h != "" {
		return h
	}
	if u, err := user.Current(); err == nil {
		return u.HomeDir
	}
	return "/"
}

// sshConfig is the user's ssh configuration, then the system's: the first
// file that sets a key for a host wins, as in ssh.
type sshConfig struct {
	home  string
	files []*ssh_config.Config
}

// loadSSHConfig reads ~/.ssh/config and /etc/ssh/ssh_config; a missing
// file is no error, one that does not parse is, naming it.
func loadSSHConfig(home string) (*sshConfig, error) {
	c := &sshConfig{home: home}
	for _, name := range []string{filepath.Join(home, ".ssh", "config"), "/etc/ssh/ssh_config"} {
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read ssh config: %w", err)
		}
		cfg, err := decodeSSHConfig(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read ssh config %s: %w", name, err)
		}
		c.files = append(c.files, cfg)
	}
	return c, nil
}

// decodeSSHConfig parses an ssh config. The library panics on what it
// cannot read (a Match block, for one): that is an error, not a crash.
func decodeSSHConfig(r io.Reader) (cfg *ssh_config.Config, err error) {
	defer func() {
		if p := recover(); p != nil {
			cfg, err = nil, fmt.Errorf("%v", p)
		}
	}()
	return ssh_config.Decode(r)
}

// getAll is every value of key in the blocks that match host, from the
// first file that has one.
func (c *sshConfig) getAll(host, key string) (vals []string) {
	defer func() {
		if recover() != nil { // a Match block: ssh_config cannot evaluate it
			vals = nil
		}
	}()
	for _, f := range c.files {
		if v, err := f.GetAll(host, key); err == nil && len(v) > 0 {
			return v
		}
	}
	return nil
}

func (c *sshConfig) get(host, key string) string {
	if v := c.getAll(host, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// dialConfig answers go-git's questions, at each dial: where host (the
// URL's) is. go-git takes the port only when a host name is found, so a
// host with a Port but no HostName is its own HostName.
type dialConfig struct{}

func (dialConfig) Get(host, key string) string {
	c, err := loadSSHConfig(sshHome())
	if err != nil {
		return "" // the dial goes to the URL's host; auth said what is wrong
	}
	switch strings.ToLower(key) {
	case "hostname":
		if h := c.hostName(host); h != host || c.get(host, "Port") != "" {
			return h
		}
		return ""
	case "port":
		// Asked only when a host name was found. x/crypto's default,
		// never "": go-git would dial port 0 for a URL without one.
		if p := c.get(host, "Port"); p != "" {
			return p
		}
		return strconv.Itoa(gitssh.DefaultPort)
	}
	return c.get(host, key)
}

// hostName is the host an alias stands for.
func (c *sshConfig) hostName(alias string) string {
	h := c.get(alias, "HostName")
	if h == "" {
		return alias
	}
	return strings.NewReplacer("%h", alias, "%%", "%").Replace(h)
}

// sshTarget is where an ssh URL leads once the config is applied: what
// ssh(1) would connect to, and as whom.
type sshTarget struct {
	alias string // the URL's host
	host  string // after HostName
	port  int
	user  string
}

func (t sshTarget) addr() string { return net.JoinHostPort(t.host, strconv.Itoa(t.port)) }

// target applies the config to the endpoint as go-git's dial does (see
// dialConfig): the config's Port, when it names the host, over the URL's.
func (c *sshConfig) target(ep *transport.Endpoint) sshTarget {
	t := sshTarget{alias: ep.Host, host: c.hostName(ep.Host), port: ep.Port, user: ep.User}
	cfgPort := c.get(ep.Host, "Port")
	if t.host != ep.Host || cfgPort != "" {
		// dialConfig found the host: the config's port, or 22.
		t.port = gitssh.DefaultPort
		if p, err := strconv.Atoi(cfgPort); err == nil {
			t.port = p
		}
	}
	if t.port <= 0 {
		t.port = gitssh.DefaultPort
	}
	if t.user == "" {
		t.user = c.get(ep.Host, "User")
	}
	if t.user == "" {
		// What the reconciler always assumed: the forges' user. (ssh
		// would take the local user's name.)
		t.user = "git"
	}
	return t
}

// identities are the key files to offer for t: the config's IdentityFiles
// for the host, else ssh's defaults.
func (c *sshConfig) identities(t sshTarget) []string {
	var out []string
	for _, f := range c.getAll(t.alias, "IdentityFile") {
		out = append(out, c.expand(f, t))
	}
	if len(out) > 0 {
		return out
	}
	for _, n := range defaultIdentities {
		out = append(out, filepath.Join(c.home, ".ssh", n))
	}
	return out
}

// expand resolves ~ and the tokens ssh_config(5) allows in IdentityFile
// that matter here.
func (c *sshConfig) expand(path string, t sshTarget) string {
	local := ""
	if u, err := user.Current(); err == nil {
		local = u.Username
	}
	path = strings.NewReplacer("%d", c.home, "%h", t.host, "%r", t.user, "%u", local, "%%", "%").Replace(path)
	if path == "~" || strings.HasPrefix(path, "~/") {
		path = filepath.Join(c.home, path[1:])
	}
	return path
}

// sshAuth is the go-git AuthMethod for an ssh remote: its user, the keys
// to offer, and the known_hosts check.
type sshAuth struct {
	target  sshTarget
	signers []ssh.Signer
	offered []string // what the signers are, for an error
	skipped []string // keys not offered, and why
	known   *knownHosts
}

var _ gitssh.AuthMethod = (*sshAuth)(nil)

func (a *sshAuth) Name() string { return "ssh-public-keys" }
func (a *sshAuth) String() string {
	return "user: " + a.target.user + ", keys: " + strings.Join(a.offered, ", ")
}

func (a *sshAuth) ClientConfig() (*ssh.ClientConfig, error) {
	// One publickey method for all the keys: x/crypto/ssh tries a method
	// once, so a second one would never be asked.
	signers := a.signers
	return &ssh.ClientConfig{
		User:              a.target.user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) { return signers, nil })},
		HostKeyCallback:   a.known.callback,
		HostKeyAlgorithms: a.known.algorithms(a.target.addr()),
	}, nil
}

// explain adds to a refused authentication what was offered, and what was
// not, which is what a person needs to fix it.
func (a *sshAuth) explain(err error) error {
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		return err
	}
	msg := fmt.Sprintf("%s@%s refused the keys offered (%s)", a.target.user, a.target.addr(), strings.Join(a.offered, ", "))
	if len(a.skipped) > 0 {
		msg += "; not offered: " + strings.Join(a.skipped, "; ")
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// explainAuth is explain for any AuthMethod: only ours has more to say.
func explainAuth(err error, auth transport.AuthMethod) error {
	if a, ok := auth.(*sshAuth); ok {
		return a.explain(err)
	}
	return err
}

// newSSHAuth builds the auth for url, nil when url is not ssh. keyFile is
// source.ssh_key: when set, that key alone.
func newSSHAuth(rawURL, keyFile string) (transport.AuthMethod, error) {
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return nil, &Error{Op: "parse " + Redact(rawURL), Err: err}
	}
	if ep.Protocol != "ssh" {
		return nil, nil
	}
	home := sshHome()
	cfg, err := loadSSHConfig(home)
	if err != nil {
		return nil, &Error{Op: "ssh to " + ep.Host, Err: err}
	}
	a := &sshAuth{target: cfg.target(ep)}
	if a.known, err = loadKnownHosts(home); err != nil {
		return nil, &Error{Op: "ssh to " + ep.Host, Err: err}
	}
	if keyFile != "" {
		s, err := readKey(keyFile)
		if err != nil {
			return nil, &Error{Op: "read source.ssh_key " + keyFile, Err: err}
		}
		a.signers, a.offered = []ssh.Signer{s}, []string{keyFile}
		return a, nil
	}
	a.fromAgent()
	for _, f := range cfg.identities(a.target) {
		s, err := readKey(f)
		var pe *ssh.PassphraseMissingError
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case errors.As(err, &pe):
			a.skipped = append(a.skipped, tilde(f, home)+" has a passphrase (add it to an agent with ssh-add, or set source.ssh_key to a key without one)")
			continue
		case err != nil:
			a.skipped = append(a.skipped, fmt.Sprintf("%s: %v", tilde(f, home), err))
			continue
		}
		a.signers = append(a.signers, s)
		a.offered = append(a.offered, tilde(f, home))
		if len(cfg.getAll(a.target.alias, "IdentityFile")) == 0 {
			break // ssh's defaults: the first that is usable
		}
	}
	if len(a.signers) == 0 {
		return nil, &Error{Op: "ssh to " + a.target.addr(), Err: a.noKey(cfg)}
	}
	return a, nil
}

// fromAgent adds the keys of the agent at SSH_AUTH_SOCK, when there is one
// and it answers.
func (a *sshAuth) fromAgent() {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		a.skipped = append(a.skipped, fmt.Sprintf("the agent at SSH_AUTH_SOCK=%s does not answer: %v", sock, err))
		return
	}
	defer conn.Close()
	keys, err := agent.NewClient(conn).List()
	if err != nil {
		a.skipped = append(a.skipped, fmt.Sprintf("the agent at SSH_AUTH_SOCK=%s: %v", sock, err))
		return
	}
	if len(keys) == 0 {
		a.skipped = append(a.skipped, fmt.Sprintf("the agent at SSH_AUTH_SOCK=%s holds no key", sock))
	}
	for _, k := range keys {
		pub, err := ssh.ParsePublicKey(k.Blob)
		if err != nil {
			continue
		}
		a.signers = append(a.signers, &agentSigner{sock: sock, pub: pub})
		a.offered = append(a.offered, "agent key "+ssh.FingerprintSHA256(pub))
	}
}

func (a *sshAuth) noKey(cfg *sshConfig) error {
	var b strings.Builder
	b.WriteString("no ssh key to offer: ")
	if os.Getenv("SSH_AUTH_SOCK") == "" {
		b.WriteString("no agent (SSH_AUTH_SOCK is not set), ")
	}
	files := cfg.identities(a.target)
	for i, f := range files {
		files[i] = tilde(f, cfg.home)
	}
	fmt.Fprintf(&b, "no usable key in %s", strings.Join(files, ", "))
	if len(a.skipped) > 0 {
		b.WriteString(" (" + strings.Join(a.skipped, "; ") + ")")
	}
	b.WriteString("; set source.ssh_key, or make one with ssh-keygen -t ed25519")
	return errors.New(b.String())
}

// tilde writes a path under home as ssh's messages do: ~/.ssh/id_rsa.
func tilde(path, home string) string {
	if rest, ok := strings.CutPrefix(path, home+"/"); ok && home != "/" {
		return "~/" + rest
	}
	return path
}

// readKey reads a private key file without a passphrase.
func readKey(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ssh.ParsePrivateKey(b)
}

// agentSigner signs with a key of the agent, connecting for each
// signature: nothing stays open between fetches, and an agent that went
// away fails the signature, not the process.
type agentSigner struct {
	sock string
	pub  ssh.PublicKey
}

var _ ssh.AlgorithmSigner = (*agentSigner)(nil)

func (s *agentSigner) PublicKey() ssh.PublicKey { return s.pub }

func (s *agentSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return s.SignWithAlgorithm(rand, data, "")
}

func (s *agentSigner) SignWithAlgorithm(_ io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	var flags agent.SignatureFlags
	switch algorithm {
	case "", s.pub.Type():
	case ssh.KeyAlgoRSASHA256:
		flags = agent.SignatureFlagRsaSha256
	case ssh.KeyAlgoRSASHA512:
		flags = agent.SignatureFlagRsaSha512
	default:
		return nil, fmt.Errorf("the agent cannot sign with %s for a %s key", algorithm, s.pub.Type())
	}
	conn, err := net.Dial("unix", s.sock)
	if err != nil {
		return nil, fmt.Errorf("ssh agent: %w", err)
	}
	defer conn.Close()
	return agent.NewClient(conn).SignWithFlags(s.pub, data, flags)
}

// knownHosts checks host keys against the known_hosts files.
type knownHosts struct {
	files []string // those that exist
	db    *knownhosts.HostKeyDB
}

// loadKnownHosts reads SSH_KNOWN_HOSTS's files, or ~/.ssh/known_hosts and
// /etc/ssh/ssh_known_hosts; those missing are skipped, so that no file at
// all makes every host unknown, not an error.
func loadKnownHosts(home string) (*knownHosts, error) {
	files := filepath.SplitList(os.Getenv("SSH_KNOWN_HOSTS"))
	if len(files) == 0 {
		files = []string{filepath.Join(home, ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"}
	}
	k := &knownHosts{}
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			k.files = append(k.files, f)
		}
	}
	if len(k.files) == 0 {
		return k, nil
	}
	db, err := knownhosts.NewDB(k.files...)
	if err != nil {
		return nil, fmt.Errorf("read known hosts: %w", err)
	}
	k.db = db
	return k, nil
}

// algorithms are the host key types known for addr, so the server shows
// a key of a type known_hosts has (go-git#411); nil for x/crypto's
// defaults when none is known.
func (k *knownHosts) algorithms(addr string) []string {
	if k.db == nil {
		return nil
	}
	return k.db.HostKeyAlgorithms(addr)
}

func (k *knownHosts) callback(hostname string, remote net.Addr, key ssh.PublicKey) error {
	var err error = &xknownhosts.KeyError{}
	if k.db != nil {
		err = k.db.HostKeyCallback()(hostname, remote, key)
	}
	var ke *xknownhosts.KeyError
	if !errors.As(err, &ke) {
		return err
	}
	host, port, splitErr := net.SplitHostPort(hostname)
	if splitErr != nil {
		host, port = hostname, strconv.Itoa(gitssh.DefaultPort)
	}
	he := &HostKeyError{Host: host, Port: port, Fingerprint: ssh.FingerprintSHA256(key), Files: k.files}
	for _, w := range ke.Want {
		he.Known = append(he.Known, fmt.Sprintf("%s:%d", w.Filename, w.Line))
	}
	return he
}

// HostKeyError is a server whose host key known_hosts does not have
// (Known is empty), or has another key for (Known names those lines).
// Either needs a person; the first says how to record the key, the
// second never says how to get past it.
type HostKeyError struct {
	Host, Port  string
	Fingerprint string   // of the key the server showed
	Files       []string // the known_hosts files read
	Known       []string // file:line of the keys known for the host
}

// Changed reports whether known_hosts has another key for the host.
func (e *HostKeyError) Changed() bool { return len(e.Known) > 0 }

func (e *HostKeyError) Error() string {
	where := net.JoinHostPort(e.Host, e.Port)
	if e.Changed() {
		return fmt.Sprintf("the ssh host key of %s has changed: it showed %s, and %s has another key for it. "+
			"Someone may be intercepting the connection, or the host's key was replaced; "+
			"refusing to connect until you have checked with whoever runs the host which key is right", where, e.Fingerprint, strings.Join(e.Known, ", "))
	}
	read := "no known_hosts file exists"
	if len(e.Files) > 0 {
		read = "it is not in " + strings.Join(e.Files, " or ")
	}
	return fmt.Sprintf("the ssh host key of %s is unknown (%s); it showed %s. Check that fingerprint with whoever runs the host, then record the key: ssh-keyscan -p %s %s >> ~/.ssh/known_hosts",
		where, read, e.Fingerprint, e.Port, e.Host)
}
