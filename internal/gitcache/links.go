package gitcache

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSymlinkOut marks an export refused because a symlink of the tree
// leaves the release. Trying again exports the same tree: a person must
// change the repository or set source.allow_external_symlinks.
var ErrSymlinkOut = errors.New("a symlink leaves the release")

// maxFollow bounds the symlinks followed to resolve one, as the kernel's
// MAXSYMLINKS (40) does: a loop resolves to nothing and leaves nothing.
const maxFollow = 40

// checkLinks refuses the export when a symlink of the tree leads out of
// the release: an absolute target, or a relative one that climbs above
// the release's top once its ".." are resolved from the link's directory —
// through the other symlinks of the tree as the kernel would follow them,
// not only lexically (sub/up -> .. makes sub/up/.. the parent of the
// release). Symlink loops stay inside and are let be, as git archive
// does. source.allow_external_symlinks turns the check off.
func (x *exporter) checkLinks() error {
	if x.allowOut {
		return nil
	}
	for _, name := range x.order {
		if escapes(x.links, name) {
			return fmt.Errorf("%w: %s -> %s points outside the release; remove the link from the repository, or set source.allow_external_symlinks: true to deploy it", ErrSymlinkOut, name, x.links[name])
		}
	}
	return nil
}

// escapes reports whether the symlink name, resolved among links (names
// relative to the release's top, slash-separated), leads outside the top.
// Components that are not links are taken as directories: a path through
// a file or a missing entry fails in the kernel, and is judged here as if
// it did not, which can only refuse more.
func escapes(links map[string]string, name string) bool {
	var at []string // where the resolution stands, below the top
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		at = strings.Split(name[:i], "/")
	}
	todo := splitLink(links[name])
	if strings.HasPrefix(links[name], "/") {
		return true
	}
	followed := 1
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(at) == 0 {
				return true
			}
			at = at[:len(at)-1]
			continue
		}
		at = append(at, c)
		target, ok := links[strings.Join(at, "/")]
		if !ok {
			continue
		}
		if followed++; followed > maxFollow {
			return false // a loop: ELOOP, nothing is reached
		}
		at = at[:len(at)-1]
		if strings.HasPrefix(target, "/") {
			return true
		}
		todo = append(splitLink(target), todo...)
	}
	return false
}

func splitLink(target string) []string { return strings.Split(target, "/") }
