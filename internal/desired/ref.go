package desired

import (
	"errors"
	"fmt"
	"strings"

	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

var hexRE = lazyre.New(`^[0-9a-f]{4,40}$`)

// IsHash reports whether ref is written as a full or abbreviated commit SHA.
func IsHash(ref string) bool { return hexRE.MatchString(ref) }

// IsFullHash reports whether ref is a full 40-character commit SHA.
func IsFullHash(ref string) bool { return len(ref) == 40 && hexRE.MatchString(ref) }

// CheckRef accepts what source.commit may be: a full or short SHA, or a
// branch or tag name that git's check-ref-format would accept.
func CheckRef(ref string) error {
	switch {
	case ref == "":
		return errors.New("must not be empty")
	case IsHash(ref):
		return nil
	case ref == "@" || ref == "HEAD":
		return fmt.Errorf("%q is not pinned; name a commit, tag or branch", ref)
	case strings.HasPrefix(ref, "-"):
		return fmt.Errorf("%q is not a commit, tag or branch: must not start with -", ref)
	case strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/") || strings.Contains(ref, "//"):
		return fmt.Errorf("%q is not a commit, tag or branch: bad use of /", ref)
	case strings.Contains(ref, "..") || strings.Contains(ref, "@{"):
		return fmt.Errorf("%q is not a commit, tag or branch: contains .. or @{", ref)
	case strings.HasSuffix(ref, ".") || strings.HasSuffix(ref, ".lock"):
		return fmt.Errorf("%q is not a commit, tag or branch: must not end with . or .lock", ref)
	}
	for _, r := range ref {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			return fmt.Errorf("%q is not a commit, tag or branch: %q is not allowed in a ref", ref, r)
		}
	}
	for _, part := range strings.Split(ref, "/") {
		if strings.HasPrefix(part, ".") {
			return fmt.Errorf("%q is not a commit, tag or branch: a component starts with a dot", ref)
		}
	}
	return nil
}
