package apply

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// applyRecord is the history record of an apply (or of a revert, with
// its own id and trigger) from one release to another, without its result.
func (e *executor) applyRecord(id, trigger string, from, to history.Ref) history.Record {
	return history.Record{Time: e.Now().UTC(), Kind: history.KindApply, ApplyID: id, Trigger: trigger, User: e.User, Host: e.Host,
		ConfigCommit: e.ConfigCommit, Release: to.Release, Commit: to.Commit, From: &from, To: &to}
}

// linked is what the link points at now, for the history: the release and
// the commit its record names; empty when the link points at no release.
func (e *executor) linked() history.Ref {
	target, err := os.Readlink(e.l.LinkPath())
	if err != nil {
		return history.Ref{}
	}
	name := filepath.Base(target)
	if !layout.IsRecordedName(name) {
		return history.Ref{}
	}
	ref := history.Ref{Release: name}
	if rec, err := record.ReadRelease(e.l.RecordFile(name)); err == nil {
		ref.Commit = rec.Commit
	}
	return ref
}

// CurrentUser is who the history says applied: the user who ran sudo
// (SUDO_USER), else the user's name (USER), else the name of the
// process's uid, else the uid. It is what an audit asks, not a proof:
// whoever can run the reconciler can set these.
func CurrentUser() string {
	for _, v := range []string{"SUDO_USER", "USER"} {
		if u := os.Getenv(v); u != "" {
			return u
		}
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}
