package desired

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

func (p *parser) source(n *yaml.Node, s *State) {
	var haveRepo, haveCommit bool
	p.fields(n, "source", keysOf("source"), func(key string, k, v *yaml.Node) {
		fp := "source." + key
		switch key {
		case "verify":
			s.Source.Verify = p.verify(v)
			return
		case "allow_external_symlinks":
			if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
				p.fail(v, fp, "must be true or false, got %s", kindName(v))
				return
			}
			s.Source.AllowExternalSymlinks = strings.EqualFold(v.Value, "true")
			return
		}
		val, ok := p.str(v, fp)
		if !ok {
			if key == "repo" {
				haveRepo = true
			} else if key == "commit" {
				haveCommit = true
			}
			return
		}
		switch key {
		case "repo":
			haveRepo = true
			repo, err := checkRepo(val, p.base)
			if err != nil {
				p.fail(v, fp, "%v", err)
			}
			s.Source.Repo = repo
		case "commit":
			haveCommit = true
			if err := CheckRef(val); err != nil {
				p.fail(v, fp, "%v", err)
			}
			s.Source.Commit = val
		case "path":
			if val == "" || val == "." {
				return
			}
			if err := checkRelPath(val); err != nil {
				p.fail(v, fp, "%v", err)
				return
			}
			s.Source.Path = filepath.Clean(val)
		case "ssh_key":
			if val == "" {
				return
			}
			if !filepath.IsAbs(val) {
				val = filepath.Join(p.base, val)
			}
			s.Source.SSHKey = filepath.Clean(val)
		}
	})
	if n.Kind == yaml.MappingNode {
		if !haveRepo {
			p.fail(n, "source.repo", "is required")
		}
		if !haveCommit {
			p.fail(n, "source.commit", "is required")
		}
	}
}

// verify reads source.verify: exactly one of keyring and allowed_signers,
// a path relative to the desired file's folder when not absolute.
//
//	verify: {keyring: FILE}           # armored OpenPGP public keys
//	verify: {allowed_signers: FILE}   # ssh-keygen's allowed-signers format
//
// The files are not read here (Parse does no I/O); Load checks that they
// exist, and the cache reads them when it verifies a commit.
func (p *parser) verify(n *yaml.Node) Verify {
	var v Verify
	seen, errs, files := 0, len(p.errs), len(p.files)
	ok := p.fields(n, "source.verify", keysOf("verify"), func(key string, k, val *yaml.Node) {
		fp := "source.verify." + key
		seen++
		path, ok := p.str(val, fp)
		if !ok {
			return
		}
		if path == "" || strings.ContainsAny(path, "\x00\n") {
			p.fail(val, fp, "must be a file path")
			return
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(p.base, path)
		}
		path = filepath.Clean(path)
		p.files = append(p.files, namedFile{node: val, field: fp, path: path})
		if key == "keyring" {
			v.Keyring = path
		} else {
			v.AllowedSigners = path
		}
	})
	switch {
	case !ok:
	case seen > 1:
		p.fail(n, "source.verify", "give keyring (OpenPGP) or allowed_signers (ssh), not both")
		p.files = p.files[:files] // which file is meant is not known
		return Verify{}
	case seen == 0 && len(p.errs) == errs:
		// An unknown key (a typo) was reported already.
		p.fail(n, "source.verify", "needs keyring (a file of armored OpenPGP public keys) or allowed_signers (an ssh allowed-signers file)")
	}
	return v
}

// repoAddr is a source.repo address read the way git reads it.
type repoAddr struct {
	remote bool   // reached over a transport (URL or scp-like), not a local path
	value  string // what State.Source.Repo holds: go-git's transport reads it as git would
}

var (
	// The parts of an scp-like [user@]host:path address. go-git's
	// transport splits these addresses with a looser pattern; a user with
	// an @ or a host with an odd character would be read differently there.
	scpUserRE = lazyre.New(`^[A-Za-z0-9_.+-]+$`)
	scpHostRE = lazyre.New(`^[A-Za-z0-9_.-]+$`)
	// go-git reads host:NNN:path as a port; git reads NNN:path as the path.
	scpPortRE = lazyre.New(`^[0-9]{1,5}:`)
)

// checkRepo checks source.repo and returns the value State.Source.Repo
// holds.
func checkRepo(repo, base string) (string, error) {
	a, err := parseRepo(repo, base)
	return a.value, err
}

// parseRepo follows git (url.c is_url, connect.c url_is_local_not_ssh): an
// address with scheme:// is a URL; otherwise, when a colon comes before any
// slash, it is scp-like [user@]host:path, whatever the path starts with
// (git@host:/srv/git/app.git is the common self-hosted form); otherwise it
// is a local path, relative to base. A file:// URL is a local path.
func parseRepo(repo, base string) (repoAddr, error) {
	if repo == "" {
		return repoAddr{}, errors.New("must not be empty")
	}
	if strings.ContainsAny(repo, " \t\r\n\x00") {
		return repoAddr{}, fmt.Errorf("%q contains white space or a control character", repo)
	}
	if scheme, ok := urlScheme(repo); ok {
		return parseRepoURL(repo, strings.ToLower(scheme))
	}
	colon, slash := strings.IndexByte(repo, ':'), strings.IndexByte(repo, '/')
	if colon >= 0 && (slash < 0 || colon < slash) {
		return parseSCP(repo, colon)
	}
	if !filepath.IsAbs(repo) {
		repo = filepath.Join(base, repo)
	}
	return repoAddr{value: filepath.Clean(repo)}, nil
}

// urlScheme is git's is_url (url.c): a scheme of letters, digits, '+',
// '-' and '.', starting with a letter or digit, then "://". A loop, as
// git's: a regexp compiled for it cost every command about a millisecond
// of page faults.
func urlScheme(repo string) (string, bool) {
	i := strings.Index(repo, "://")
	if i <= 0 {
		return "", false
	}
	for j, c := range []byte(repo[:i]) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case j > 0 && (c == '+' || c == '-' || c == '.'):
		default:
			return "", false
		}
	}
	return repo[:i], true
}

func parseRepoURL(repo, scheme string) (repoAddr, error) {
	switch scheme {
	case "https", "http", "ssh", "git":
	case "file":
		// git takes what follows file:// as the path, so file://srv/x
		// would be the relative path srv/x, while URL readers (go-git
		// among them) take srv as a host: only an absolute path is clear.
		rest := repo[len("file://"):]
		if !strings.HasPrefix(rest, "/") {
			return repoAddr{}, fmt.Errorf("%q: a file:// URL needs an absolute path, like file:///srv/git/app.git", repo)
		}
		p, err := url.PathUnescape(rest)
		if err != nil || strings.ContainsRune(p, 0) {
			return repoAddr{}, fmt.Errorf("%q: the path is not a valid URL path", repo)
		}
		return repoAddr{value: filepath.Clean(p)}, nil
	default:
		return repoAddr{}, fmt.Errorf("scheme %q is not supported: use https, ssh, git, file, a user@host:path address or a local path", scheme)
	}
	u, err := url.Parse(repo)
	if err != nil {
		return repoAddr{}, fmt.Errorf("%q is not a valid URL: %w", repo, errors.Unwrap(err))
	}
	if u.Hostname() == "" {
		return repoAddr{}, fmt.Errorf("%q names no host", repo)
	}
	return repoAddr{remote: true, value: repo}, nil
}

func parseSCP(repo string, colon int) (repoAddr, error) {
	hostPart, path := repo[:colon], repo[colon+1:]
	user, host, hasUser := "", hostPart, false
	if i := strings.LastIndexByte(hostPart, '@'); i >= 0 {
		user, host, hasUser = hostPart[:i], hostPart[i+1:], true
	}
	ssh := "write it as ssh://[user@]host[:port]/path"
	switch {
	case strings.HasPrefix(hostPart, "["):
		return repoAddr{}, fmt.Errorf("%q: a bracketed host is not supported in a user@host:path address; %s", repo, ssh)
	case host == "":
		return repoAddr{}, fmt.Errorf("%q names no host before the colon", repo)
	case strings.HasPrefix(host, "-") || strings.HasPrefix(user, "-"):
		return repoAddr{}, fmt.Errorf("%q: a host or user must not start with -", repo)
	case !scpHostRE.MatchString(host):
		return repoAddr{}, fmt.Errorf("%q: %q is not a host name", repo, host)
	case hasUser && !scpUserRE.MatchString(user):
		return repoAddr{}, fmt.Errorf("%q: %q is not a user name", repo, user)
	case path == "":
		return repoAddr{}, fmt.Errorf("%q names no repository path after the colon", repo)
	case strings.HasPrefix(path, "//"):
		// git reads host://path as scp-like when host is no scheme, go-git
		// as a URL with that scheme: the two would fetch different things.
		return repoAddr{}, fmt.Errorf("%q is ambiguous: %q is not a URL scheme; %s", repo, hostPart, ssh)
	case strings.HasPrefix(path, "\\"):
		return repoAddr{}, fmt.Errorf("%q: the path must not start with a backslash", repo)
	case scpPortRE.MatchString(path):
		return repoAddr{}, fmt.Errorf("%q is ambiguous: the digits after the colon could be a port; %s", repo, ssh)
	}
	return repoAddr{remote: true, value: repo}, nil
}
