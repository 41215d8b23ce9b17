package actual

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// Files another deploy tool leaves at the top of a release.
const (
	// RevisionFile holds the release's commit, as Capistrano writes it
	// (and the reconciler too, since it writes it for the apps that
	// read it): the full hash and a newline.
	RevisionFile = "REVISION"
	// RevisionTimeFile holds the commit's committer time as a Unix
	// timestamp and a newline (Capistrano 3.19 and later).
	RevisionTimeFile = "REVISION_TIME"
	// unfinishedFile is deploy_helper's marker of a release it never
	// finalized (its unfinished_filename default).
	unfinishedFile = "DEPLOY_UNFINISHED"
)

// Tools whose layouts adopt takes over.
const (
	ToolCapistrano   = "capistrano"
	ToolDeployHelper = "deploy_helper"
)

// Adoption is what `reconciler adopt` finds on a host another tool
// deployed: the releases it can record, those it leaves alone and why.
// It is observed, never written: apply.Adopt records it.
type Adoption struct {
	Root string
	Tool string // ToolCapistrano or ToolDeployHelper: a guess from what lies at the root, for people
	Link Link   // points at one of Releases
	// Releases are the ones to record, oldest first.
	Releases []AdoptRelease
	// Skipped are the entries of releases/ left alone, by name.
	Skipped []Skipped
	// Notes are what the person must know about the rest of the root
	// (another tool's git mirror at repo/).
	Notes []string
}

// AdoptRelease is a release adopt records.
type AdoptRelease struct {
	Name    string
	Commit  string
	Created time.Time
	Linked  bool
	// Again: an adopt that stopped before it finished recorded it
	// already; it is recorded again.
	Again bool
}

// Skipped is an entry of releases/ adopt leaves alone.
type Skipped struct{ Name, Why string }

// Linked is the release the link points at.
func (a *Adoption) Linked() AdoptRelease {
	for _, r := range a.Releases {
		if r.Linked {
			return r
		}
	}
	return AdoptRelease{}
}

// AdoptError is a host adopt refuses to take over; it says why.
type AdoptError struct{ Msg string }

func (e *AdoptError) Error() string { return e.Msg }

// maxRevision bounds what is read of a REVISION file: a hash and a
// newline; a bigger file holds something else.
const maxRevision = 1024

// ObserveAdoption reads the host under d.Root as another tool left it —
// releases/<time>/ with a REVISION file each, the link into releases/ —
// and says what adopt would record. It never writes. It refuses (an
// *AdoptError) a root the reconciler already manages, a link that does
// not point at a release it can adopt, and a root with no releases/.
func ObserveAdoption(d *desired.State) (*Adoption, error) {
	l := layout.New(d.Root, d.Link)
	a := &Adoption{Root: d.Root, Tool: ToolDeployHelper}
	fi, err := os.Lstat(l.ReleasesDir())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, &AdoptError{Msg: fmt.Sprintf("nothing to adopt: %s does not exist", l.ReleasesDir())}
	case err != nil:
		return nil, fmt.Errorf("adopt: %w", err)
	case !fi.IsDir():
		return nil, &AdoptError{Msg: fmt.Sprintf("refusing to adopt: %s is not a directory (a symlink is not followed)", l.ReleasesDir())}
	}
	if _, err := os.Lstat(l.HostFile()); err == nil {
		return nil, &AdoptError{Msg: fmt.Sprintf("refusing to adopt: the reconciler already manages %s (%s exists); adopt takes over a host it has not managed yet", d.Root, l.HostFile())}
	}
	s := &State{Root: d.Root}
	if err := observeLink(l, s); err != nil {
		return nil, err
	}
	a.Link = s.Link
	switch lk := s.Link; {
	case !lk.Exists:
		return nil, &AdoptError{Msg: fmt.Sprintf("refusing to adopt: %s does not exist; adopt takes over a host whose link (link: in %s) points at the release it runs", lk.Path, d.File)}
	case lk.Dangling:
		return nil, &AdoptError{Msg: fmt.Sprintf("refusing to adopt: %s is dangling (it points at %s, which does not exist)", lk.Path, lk.Target)}
	case lk.Problem != "" || lk.Release == "":
		return nil, &AdoptError{Msg: fmt.Sprintf("refusing to adopt: %s points at %s, which is not a release directory in %s; adopt takes over only a link into releases/", lk.Path, lk.Target, l.ReleasesDir())}
	}

	entries, err := os.ReadDir(l.ReleasesDir())
	if err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	for _, e := range entries {
		r, why, err := adoptable(l, e.Name())
		if err != nil {
			return nil, err
		}
		r.Linked = e.Name() == a.Link.Release
		switch {
		case why != "" && r.Linked:
			return nil, &AdoptError{Msg: fmt.Sprintf("refusing to adopt: the linked release %s cannot be adopted: %s", e.Name(), why)}
		case why != "":
			a.Skipped = append(a.Skipped, Skipped{Name: e.Name(), Why: why})
		default:
			a.Releases = append(a.Releases, r)
		}
	}
	// Oldest first, as Observe orders them once recorded.
	sortAdopted(a.Releases)

	if _, err := os.Lstat(filepath.Join(d.Root, "revisions.log")); err == nil {
		a.Tool = ToolCapistrano
	}
	if _, err := os.Lstat(filepath.Join(l.RepoDir(), "HEAD")); err == nil {
		a.Tool = ToolCapistrano
		if _, err := os.Lstat(filepath.Join(l.RepoDir(), gitcache.Marker)); err != nil {
			a.Notes = append(a.Notes, fmt.Sprintf("%s is a git repository the reconciler did not make (Capistrano's mirror); the reconciler keeps its own cache there and will not touch this one: move it away before the first apply (mv %s %s.capistrano)",
				l.RepoDir(), l.RepoDir(), l.RepoDir()))
		}
	}
	return a, nil
}

// adoptable reads releases/name: the release to record, or why it is left
// alone. An error is a root adopt refuses.
func adoptable(l layout.Layout, name string) (r AdoptRelease, why string, err error) {
	r.Name = name
	dir := l.ReleaseDir(name)
	fi, err := os.Lstat(dir)
	switch {
	case err != nil:
		return r, "unreadable: " + err.Error(), nil
	case fi.Mode()&fs.ModeSymlink != 0:
		return r, "a symlink (the reconciler follows no link it did not make)", nil
	case !fi.IsDir():
		return r, "not a directory", nil
	case !layout.IsRecordedName(name):
		return r, "the name is not a release time (YYYYMMDDHHMMSS, as Capistrano and deploy_helper make them)", nil
	}
	// The record is written inside the release: it must be a directory
	// the reconciler may write in (invariant 12).
	if err := fsx.CheckDir(dir); err != nil {
		return r, err.Error(), nil
	}
	if rec, err := record.ReadRelease(l.RecordFile(name)); err == nil && rec.Adopted != nil && rec.Name == name {
		r.Again = true
	} else if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return r, "", &AdoptError{Msg: fmt.Sprintf("refusing to adopt: releases/%s already has a reconciler record (%s); adopt takes over a host the reconciler has not managed yet", name, l.RecordFile(name))}
	}
	if _, err := os.Lstat(filepath.Join(dir, unfinishedFile)); err == nil {
		return r, "unfinished: deploy_helper's " + unfinishedFile + " marker is in it", nil
	}
	commit, why := readRevision(filepath.Join(dir, RevisionFile))
	if why != "" {
		return r, why, nil
	}
	r.Commit = commit
	r.Created, _ = layout.NameTime(name)
	return r, "", nil
}

// readRevision reads a REVISION file without following a symlink: the
// commit, or why there is none.
func readRevision(path string) (commit, why string) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", "no " + RevisionFile + " file"
	case errors.Is(err, syscall.ELOOP):
		return "", RevisionFile + " is a symlink (the reconciler follows no link it did not make)"
	case err != nil:
		return "", RevisionFile + " is unreadable: " + err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", RevisionFile + " is not a regular file"
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRevision+1))
	if err != nil {
		return "", RevisionFile + " is unreadable: " + err.Error()
	}
	sha := strings.ToLower(strings.TrimSpace(string(b)))
	if len(b) > maxRevision || !desired.IsFullHash(sha) {
		return "", RevisionFile + " does not hold a full commit hash"
	}
	return sha, ""
}

func sortAdopted(rs []AdoptRelease) {
	sort.SliceStable(rs, func(i, j int) bool {
		if !rs[i].Created.Equal(rs[j].Created) {
			return rs[i].Created.Before(rs[j].Created)
		}
		return rs[i].Name < rs[j].Name
	})
}
