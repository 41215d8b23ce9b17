package gitcache

import (
	"compress/flate"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem/dotgit"
)

// ErrDamaged marks a cache that cannot be read: objects missing or
// corrupt, a ref file empty, a path that is not a repository. Fetch and
// Repair clone it afresh.
var ErrDamaged = errors.New("the git cache is damaged")

// ErrNotFound is returned by Resolve when the cache does not have the ref
// (or there is no cache yet): a fetch is needed.
var ErrNotFound = errors.New("not in the cache")

// ErrUnknownRef is returned by LsRemote when the remote has no branch or
// tag of that name.
var ErrUnknownRef = errors.New("no such branch or tag on the remote")

// Error is a failed operation on the cache or the remote. Transient errors
// (the network, a remote that did not answer) may pass on a later try;
// the others need a person (a wrong URL, refused credentials, a missing
// key file, an unknown ref) or, for ErrDamaged, a fresh clone.
type Error struct {
	Op        string
	Err       error
	Transient bool
	// Remote: the remote refused (not found, authentication); the cache
	// is not at fault.
	Remote bool
}

func (e *Error) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Redact hides the password of a URL, as url.URL.Redacted does, so that
// messages and logs never show it. Anything that does not parse as a URL
// with a user (a path, git@host:repo) is returned as it is.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); !ok {
		return raw
	}
	return u.Redacted()
}

// damaged reports whether err is a read error of the local repository:
// what a corrupt or truncated pack, a missing object, a malformed ref file
// or a path that is no repository give.
func damaged(err error) bool {
	var pe *packfile.Error
	var ce flate.CorruptInputError
	var pathErr *fs.PathError
	switch {
	case errors.Is(err, ErrDamaged),
		errors.Is(err, zlib.ErrChecksum), errors.Is(err, zlib.ErrHeader), errors.Is(err, zlib.ErrDictionary),
		errors.As(err, &ce), errors.As(err, &pe),
		errors.Is(err, plumbing.ErrObjectNotFound),
		errors.Is(err, plumbing.ErrInvalidType),
		errors.Is(err, idxfile.ErrMalformedIdxFile), errors.Is(err, idxfile.ErrUnsupportedVersion),
		errors.Is(err, dotgit.ErrPackedRefsBadFormat),
		errors.Is(err, git.ErrRepositoryNotExists),
		errors.Is(err, syscall.ENOTDIR):
		return true
	case errors.As(err, &pathErr) && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EISDIR)):
		// A file of the repository vanished or is of the wrong type.
		return true
	}
	return false
}

// readErr is translate for a read of the cache: whatever go-git says
// (a corrupt or truncated pack, a missing object, a malformed ref), the
// cache is damaged, unless the read was cancelled. A truncated stream
// from the remote, by contrast, is not the cache's fault: translate
// leaves it to a later try.
func readErr(op string, err error) error {
	var ge *Error
	switch {
	case errors.As(err, &ge):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &Error{Op: op, Err: err, Transient: true}
	case errors.Is(err, ErrDamaged):
		return &Error{Op: op, Err: err}
	}
	return &Error{Op: op, Err: fmt.Errorf("%w: %v", ErrDamaged, err)}
}

// translate turns go-git's errors into *Error with a kind, in one place.
func translate(op string, err error) error {
	var ge *Error
	if errors.As(err, &ge) {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &Error{Op: op, Err: err, Transient: true}
	case errors.As(err, new(*HostKeyError)):
		// Needs a person: the error says what to check and what to run.
		var he *HostKeyError
		errors.As(err, &he)
		return &Error{Op: op, Remote: true, Err: he}
	case errors.Is(err, transport.ErrAuthenticationRequired):
		return &Error{Op: op, Remote: true, Err: errors.New("authentication required: set source.ssh_key or credentials for this remote")}
	case errors.Is(err, transport.ErrAuthorizationFailed):
		return &Error{Op: op, Remote: true, Err: errors.New("authorization refused by the remote")}
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return &Error{Op: op, Remote: true, Err: errors.New("repository not found")}
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return &Error{Op: op, Remote: true, Err: errors.New("the remote repository is empty")}
	case errors.Is(err, ErrUnknownRef):
		return &Error{Op: op, Remote: true, Err: err}
	case damaged(err):
		if errors.Is(err, ErrDamaged) {
			return &Error{Op: op, Err: err}
		}
		return &Error{Op: op, Err: fmt.Errorf("%w: %v", ErrDamaged, err)}
	}
	var ne net.Error
	var ue *url.Error
	msg := err.Error()
	if errors.As(err, &ne) || errors.As(err, &ue) || strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "no route to host") || strings.Contains(msg, "i/o timeout") {
		return &Error{Op: op, Err: err, Transient: true, Remote: true}
	}
	if strings.Contains(msg, "unable to authenticate") || strings.Contains(msg, "handshake failed") {
		// golang.org/x/crypto/ssh refused every key the server was offered.
		return &Error{Op: op, Remote: true, Err: err}
	}
	return &Error{Op: op, Err: err}
}

// commitError is a failure to read commit sha from the cache. It says
// what it wraps; Repair reads sha from it, so that a shallow cache made
// afresh holds the commit the failed export needed, not only Ref.
type commitError struct {
	sha string
	err error
}

func (e *commitError) Error() string { return e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }
