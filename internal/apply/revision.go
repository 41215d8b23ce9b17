package apply

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/plan"
)

// commitTimer says when a commit was committed; the git cache does.
// Asked for by type, so a Git without it still exports (no REVISION_TIME).
type commitTimer interface {
	CommitTime(ctx context.Context, sha string) (time.Time, error)
}

// writeRevision writes REVISION (the full commit hash) and REVISION_TIME
// (its committer time, Unix seconds) at the top of the release, each with
// the newline Capistrano's `echo` gives them, so what reads Capistrano's
// files reads the reconciler's.
//
// A file of that name in the commit is replaced, as Capistrano replaces
// it: what the release says it runs must be true. A symlink there is
// removed, never written through (invariant 12). A directory is refused:
// deleting a tree of the repository's is not the reconciler's call.
func (e *executor) writeRevision(ctx context.Context, s plan.Step, dir string) error {
	files := []struct{ name, text string }{{actual.RevisionFile, s.Commit + "\n"}}
	if ct, ok := e.Git.(commitTimer); ok {
		t, err := ct.CommitTime(ctx, s.Commit)
		if err != nil {
			return fmt.Errorf("read the time of commit %s: %w", s.Commit, err)
		}
		files = append(files, struct{ name, text string }{actual.RevisionTimeFile, strconv.FormatInt(t.Unix(), 10) + "\n"})
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return err
		case fi.IsDir():
			return fmt.Errorf("the commit has a directory %s at the top of the release, where the reconciler writes the release's %s; rename it in the repository", f.name, f.name)
		default:
			if err := os.Remove(p); err != nil {
				return err
			}
			e.View.Note(s, fmt.Sprintf("the commit's own %s is replaced by the release's", f.name))
		}
		out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
		if err != nil {
			return err
		}
		_, err = out.WriteString(f.text)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}
