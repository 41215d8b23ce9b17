package gitcache

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// allowedSigner is one line of an allowed-signers file, the format of
// ssh-keygen(1) ALLOWED SIGNERS that git's gpg.ssh.allowedSignersFile
// uses:
//
//	principals [options] keytype base64-key [comment]
//
// for instance
//
//	alice@example.com namespaces="git" ssh-ed25519 AAAAC3Nza... alice
type allowedSigner struct {
	Line       int
	Principals string // as written: comma-separated patterns
	Key        ssh.PublicKey
	// CertAuthority: the key signs certificates, which are not supported;
	// such a line never matches.
	CertAuthority bool
	// Namespaces is the pattern list of namespaces="..."; "" for any.
	Namespaces string
	// ValidAfter and ValidBefore bound when the key may have signed;
	// zero for no bound.
	ValidAfter, ValidBefore time.Time
}

// allowedSigners is a parsed allowed-signers file.
type allowedSigners []allowedSigner

// parseAllowedSigners parses an allowed-signers file. Empty lines and
// lines starting with # are skipped. A line that does not parse is an
// error naming the line: unlike ssh-keygen, which skips it, a key list
// the reconciler trusts must mean what it says.
func parseAllowedSigners(data []byte) (allowedSigners, error) {
	var out allowedSigners
	for i, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(bytes.TrimSuffix(line, []byte("\r"))))
		if s == "" || s[0] == '#' {
			continue
		}
		a, err := parseallowedSigner(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		a.Line = i + 1
		out = append(out, a)
	}
	return out, nil
}

func parseallowedSigner(s string) (allowedSigner, error) {
	var a allowedSigner
	var rest string
	if s[0] == '"' {
		end := strings.IndexByte(s[1:], '"')
		if end < 0 {
			return a, errors.New("the quoted principals have no closing quote")
		}
		a.Principals, rest = s[1:1+end], s[2+end:]
		if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
			return a, errors.New("no space after the quoted principals")
		}
	} else {
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			return a, errors.New("no key after the principals")
		}
		a.Principals, rest = s[:i], s[i:]
	}
	if a.Principals == "" {
		return a, errors.New("no principals")
	}
	rest = strings.TrimLeft(rest, " \t")
	if rest == "" {
		return a, errors.New("no key after the principals")
	}
	// The rest, [options] keytype base64-key [comment], is the format of
	// an authorized_keys line.
	key, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(rest))
	if err != nil {
		return a, fmt.Errorf("no public key after the principals: %w", err)
	}
	a.Key = key
	for _, o := range opts {
		name, val, hasVal := strings.Cut(o, "=")
		switch strings.ToLower(name) {
		case "cert-authority":
			if hasVal {
				return a, fmt.Errorf("option %s takes no value", name)
			}
			a.CertAuthority = true
			continue
		case "namespaces", "valid-after", "valid-before":
		default:
			return a, fmt.Errorf("unknown option %q", name)
		}
		v, err := unquote(val, hasVal)
		if err != nil {
			return a, fmt.Errorf("option %s: %w", name, err)
		}
		switch strings.ToLower(name) {
		case "namespaces":
			if v == "" {
				return a, errors.New("option namespaces is empty")
			}
			a.Namespaces = v
		case "valid-after":
			a.ValidAfter, err = parseSSHTime(v)
		case "valid-before":
			a.ValidBefore, err = parseSSHTime(v)
		}
		if err != nil {
			return a, fmt.Errorf("option %s: %w", name, err)
		}
	}
	return a, nil
}

// unquote reads an option's value, which OpenSSH wants in double quotes.
func unquote(v string, hasVal bool) (string, error) {
	if !hasVal || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", errors.New(`the value must be in double quotes, like namespaces="git"`)
	}
	v = v[1 : len(v)-1]
	if strings.ContainsRune(v, '"') {
		return "", errors.New("a quote inside the value")
	}
	return v, nil
}

// parseSSHTime reads a time as OpenSSH's parse_absolute_time does:
// YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, in UTC with a Z or UTC suffix,
// else in local time.
func parseSSHTime(s string) (time.Time, error) {
	loc := time.Local
	v := s
	switch up := strings.ToUpper(s); {
	case len(s) > 1 && strings.HasSuffix(up, "Z"):
		v, loc = s[:len(s)-1], time.UTC
	case len(s) > 3 && strings.HasSuffix(up, "UTC"):
		v, loc = s[:len(s)-3], time.UTC
	}
	var layout string
	switch len(v) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	default:
		return time.Time{}, fmt.Errorf("%q is not a time: use YYYYMMDD[HHMM[SS]], with Z for UTC", s)
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return time.Time{}, fmt.Errorf("%q is not a time: use YYYYMMDD[HHMM[SS]], with Z for UTC", s)
		}
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a time: %w", s, err)
	}
	return t, nil
}

// find returns the first entry for key that allows namespace at time
// when, as ssh-keygen -Y find-principals with -Overify-time does; else
// nil and why not.
func (as allowedSigners) find(key ssh.PublicKey, namespace string, when time.Time) (*allowedSigner, string) {
	want := key.Marshal()
	why := ""
	for i := range as {
		a := &as[i]
		if a.CertAuthority || !bytes.Equal(a.Key.Marshal(), want) {
			continue
		}
		switch {
		case a.Namespaces != "" && !matchPatternList(namespace, a.Namespaces):
			why = fmt.Sprintf("line %d lists the key for namespaces %q, not %q", a.Line, a.Namespaces, namespace)
		case !a.ValidAfter.IsZero() && when.Before(a.ValidAfter):
			why = fmt.Sprintf("line %d lists the key as valid after %s; the commit is of %s", a.Line, a.ValidAfter.UTC().Format(time.RFC3339), when.UTC().Format(time.RFC3339))
		case !a.ValidBefore.IsZero() && when.After(a.ValidBefore):
			why = fmt.Sprintf("line %d lists the key as valid before %s; the commit is of %s", a.Line, a.ValidBefore.UTC().Format(time.RFC3339), when.UTC().Format(time.RFC3339))
		default:
			return a, ""
		}
	}
	return nil, why
}

// matchPatternList is OpenSSH's match_pattern_list: s matches the
// comma-separated list when it matches a pattern and no negated (!)
// one.
func matchPatternList(s, list string) bool {
	matched := false
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		if !matchPattern(s, p) {
			continue
		}
		if neg {
			return false
		}
		matched = true
	}
	return matched
}

// matchPattern matches s against a pattern of * (any run) and ? (any one
// character), in linear time: the last * is backtracked to, never more.
func matchPattern(s, p string) bool {
	si, pi, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			si++
			pi++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
