package gitcache

import (
	"context"
	"fmt"
	"path"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// TreeFile is a file of a commit's tree as an export would write it.
type TreeFile struct {
	Path string // relative to source.path, slash-separated
	Mode string // git mode: 100644, 100755 or 120000
	Hash string // blob hash
}

// Files lists the files of commit sha under subpath that want takes,
// entering only the directories descend allows, and leaving out what
// .gitattributes marks export-ignore, as Export does. It reads no blob but
// the attributes files: the plan asks it for the key files of cached build
// steps before the release exists.
func (c *Cache) Files(ctx context.Context, sha, subpath string, want, descend func(rel string) bool) ([]TreeFile, error) {
	r, done, err := c.open()
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", sha, err)
	}
	defer done()
	commit, err := r.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return nil, readErr("list "+sha, fmt.Errorf("read commit: %w", err))
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, readErr("list "+sha, fmt.Errorf("read tree: %w", err))
	}
	if subpath != "" {
		if tree, err = tree.Tree(subpath); err != nil {
			return nil, &Error{Op: "list " + sha, Err: fmt.Errorf("source.path %q is not a directory in this commit", subpath)}
		}
	}
	x := &exporter{r: r, prefix: subpath}
	if err := x.attributesAbove(commit, subpath); err != nil {
		return nil, fmt.Errorf("list %s: %w", sha, err)
	}
	var out []TreeFile
	var walk func(t *object.Tree, rel string) error
	walk = func(t *object.Tree, rel string) error {
		n := x.attrs.len()
		defer x.attrs.truncate(n)
		if err := x.readAttributes(t, x.full(rel), rel == "" && x.prefix == ""); err != nil {
			return err
		}
		for _, e := range t.Entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			name := path.Join(rel, e.Name)
			if x.attrs.exportIgnore(splitPath(x.full(name)), e.Mode == filemode.Dir) {
				continue
			}
			mode := ""
			switch e.Mode {
			case filemode.Dir:
				if !descend(name) {
					continue
				}
				sub, err := r.TreeObject(e.Hash)
				if err != nil {
					return readErr("read tree "+name, err)
				}
				if err := walk(sub, name); err != nil {
					return err
				}
				continue
			case filemode.Regular, filemode.Deprecated:
				mode = "100644"
			case filemode.Executable:
				mode = "100755"
			case filemode.Symlink:
				mode = "120000"
			default:
				continue // a submodule: the export refuses it, and says so
			}
			if want(name) {
				out = append(out, TreeFile{Path: name, Mode: mode, Hash: e.Hash.String()})
			}
		}
		return nil
	}
	if err := walk(tree, ""); err != nil {
		return nil, fmt.Errorf("list %s: %w", sha, err)
	}
	return out, nil
}
