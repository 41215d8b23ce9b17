package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// do performs one step: its record transition first, then the action,
// then what the host record says after it.
func (e *executor) do(ctx context.Context, p *plan.Plan, s plan.Step) error {
	if s.Before != "" {
		if err := e.transition(s.Release, record.Change{Event: s.Before}); err != nil {
			return err
		}
	}
	var err error
	switch s.Action {
	case plan.Fetch:
		return e.Git.Fetch(ctx)
	case plan.Create:
		return e.create(s)
	case plan.Export, plan.Shared, plan.Build, plan.Migrate, plan.Preflight:
		return e.releaseStep(ctx, p, s)
	case plan.Switch:
		err = e.switchLink(s)
	case plan.Service:
		err = splitOutput(e.serviceAction(ctx, p, s))
	case plan.Health:
		err = splitOutput(e.verify(ctx, p, s))
	case plan.Fail:
		return e.transition(s.Release, record.Change{Event: record.SwitchFailed, Failure: s.Failure})
	case plan.Reverse:
		return e.reverse(ctx, p, s)
	case plan.Schema:
		return e.recordAhead(s)
	case plan.Record:
		// A failure fails the apply, not the release: the host serves as
		// it did, and the next apply lists again.
		if err := e.recordMigrations(ctx, p, s, s.Release, s.Commit, nil); err != nil {
			return fmt.Errorf("record the migrations of release %s: %w", s.Release, err)
		}
		return nil
	case plan.Prune:
		if s.CacheEntry != "" {
			return e.pruneCache(s)
		}
		return e.prune(s)
	default:
		return fmt.Errorf("unknown step %q", s.Action)
	}
	if err != nil {
		return err
	}
	return e.settled(s)
}

func (e *executor) transition(release string, c record.Change) error {
	c.At = e.Now()
	_, err := record.Update(e.l.RecordFile(release), c)
	return err
}

// settled records what a switch, service action or health check leaves
// true: the services acted, the release was verified serving while linked.
func (e *executor) settled(s plan.Step) error {
	h, err := record.ReadHost(e.l.HostFile())
	if err != nil {
		return err
	}
	if s.Action == plan.Switch || h == nil || h.Linked != s.Release {
		// A switch, or the link moved without one of ours (by hand, or a
		// switch that stopped before recording): a new host record.
		h = &record.Host{Linked: s.Release, SwitchedAt: e.Now().UTC()}
	}
	h.ServicesDone = h.ServicesDone || s.ServicesDone
	h.Verified = h.Verified || s.Verified
	if err := record.WriteHost(e.l.HostFile(), h); err != nil {
		return err
	}
	if s.Verified {
		return e.transition(s.Release, record.Change{Event: record.Healthy})
	}
	return nil
}

// create makes the new release directory with its record already inside:
// it is staged under .reconciler/tmp and renamed into releases/, so no
// release directory ever exists without a record.
func (e *executor) create(s plan.Step) error {
	if _, err := os.Lstat(e.l.ReleaseDir(s.Release)); err == nil {
		return fmt.Errorf("releases/%s exists already", s.Release)
	}
	if err := fsx.EnsureDir(e.l.TmpDir(), 0o700); err != nil {
		return err
	}
	stage := filepath.Join(e.l.TmpDir(), s.Release)
	if err := os.Mkdir(stage, 0o755); err != nil {
		return err
	}
	// The record directory is the reconciler's alone, even when a build
	// step runs as another user (run_as) — but readable by the group the
	// operator gave the state directory, if any (see fsx.FileMode).
	if err := e.makeRecordDir(filepath.Join(stage, layout.RecordDirName)); err != nil {
		return err
	}
	rec := &record.Release{Name: s.Release, App: e.Desired.App, Commit: s.Commit, Fingerprint: s.Fingerprint,
		State: record.Building, Created: e.Now().UTC(), Steps: []record.Step{}}
	if err := record.WriteRelease(filepath.Join(stage, layout.RecordDirName, "release.json"), rec); err != nil {
		return err
	}
	if err := os.Rename(stage, e.l.ReleaseDir(s.Release)); err != nil {
		return err
	}
	return fsx.SyncDir(e.l.ReleasesDir())
}

// makeRecordDir makes a release's record directory (and its logs folder)
// with the state directory's group and group-read bit, so the group an
// operator named there (chgrp adm .reconciler; chmod 2750) reads releases'
// records and logs too; 0700 otherwise.
func (e *executor) makeRecordDir(dir string) error {
	mode, gid := os.FileMode(0o700), -1
	if fi, err := os.Stat(e.l.StateDir()); err == nil && fi.Mode().Perm()&0o040 != 0 {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			mode, gid = 0o750|os.ModeSetgid, int(st.Gid)
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, "logs")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
		if err := os.Lchown(d, -1, gid); err != nil {
			return err
		}
		if err := os.Chmod(d, mode); err != nil {
			return err
		}
	}
	return nil
}

// releaseStep runs a step that builds the release and records it done —
// the release complete after the last one — or records the release failed.
func (e *executor) releaseStep(ctx context.Context, p *plan.Plan, s plan.Step) error {
	start := e.Now()
	var err error
	var use cacheUse
	switch s.Action {
	case plan.Export:
		err = e.export(ctx, s)
	case plan.Shared:
		err = e.linkShared(s)
	case plan.Preflight:
		if err = e.ownRelease(s.Release, s.RunAs); err == nil {
			err = e.preflight(ctx, p, s)
		}
	case plan.Build:
		if err = e.ownRelease(s.Release, s.RunAs); err == nil {
			if s.Cache != nil {
				use, err = e.cached(ctx, p, s)
				err = splitOutput(err)
			} else {
				err = splitOutput(e.command(ctx, p, s, e.l.StepLog(s.Release, s.Name), e.l.ReleaseDir(s.Release), true))
			}
		}
	default:
		// A migrate run again is for a complete release: it stays the
		// reconciler's.
		if !s.Rerun {
			err = e.ownRelease(s.Release, s.RunAs)
		}
		switch {
		case err != nil:
		case s.Action == plan.Migrate && e.doneBy != "":
			// Another host of the fleet migrated the shared database
			// for this target: recorded done here, not run again.
			e.View.Note(s, doneByNote(e.doneBy))
		default:
			if s.Action == plan.Migrate && !s.Rerun {
				e.noteAppliedBefore(s)
				e.startPreflightEarly(ctx, p, s, true)
			}
			err = splitOutput(e.command(ctx, p, s, e.l.StepLog(s.Release, s.Name), e.l.ReleaseDir(s.Release), true))
			if s.Action == plan.Migrate {
				e.finishMigration(ctx, err)
			}
		}
		if err == nil && s.Track != nil {
			if s.Action == plan.Migrate && !s.Rerun {
				e.startPreflightEarly(ctx, p, s, false)
				e.recordMigrationsLater(ctx, p, s)
			} else {
				err = e.recordMigrations(ctx, p, s, s.Release, s.Commit, nil)
			}
		}
		if s.Rerun {
			if err != nil {
				return e.failed(ctx, s, record.MigrateFailed, err)
			}
			return nil
		}
	}
	if err != nil {
		return e.failed(ctx, s, record.BuildFailed, err)
	}
	if s.Completes {
		// A complete release is the reconciler's again: the run_as user
		// built it, and may not change it once it can be linked.
		if err := e.ownRelease(s.Release, ""); err != nil {
			return err
		}
	}
	done := &record.Step{Name: s.Name, Fingerprint: s.Fingerprint, Finished: e.Now().UTC(), Duration: e.Now().Sub(start),
		Cache: use.entry, CacheHit: use.hit}
	return e.transition(s.Release, record.Change{Event: record.StepDone, Step: done, Completes: s.Completes})
}

// ownRelease gives the release's files (never its record) to the user a
// build step runs as, so the step can write in the release and nowhere
// else under root; "" gives them back to the reconciler's own user. The
// tree is walked only when its top is not owned so already.
func (e *executor) ownRelease(release, name string) error {
	uid, gid, err := owner(name)
	if err != nil {
		return err
	}
	return chownTree(e.l.ReleaseDir(release), uid, gid, e.l.RecordDir(release))
}

// owner is the uid and gid of the user a command runs as; "" for the
// reconciler's own.
func owner(name string) (uid, gid int, err error) {
	if name == "" {
		return os.Geteuid(), os.Getegid(), nil
	}
	u, err := runner.LookupUser(name)
	if err != nil {
		return 0, 0, err
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// chownTree gives dir and what is under it, but skip, to uid and gid,
// never following a symlink. The tree is walked only when its top is not
// owned so already.
func chownTree(dir string, uid, gid int, skip string) error {
	if fi, err := os.Lstat(dir); err != nil {
		return err
	} else if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) == uid && int(st.Gid) == gid {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		return os.Lchown(p, uid, gid)
	})
}

// export writes the commit into the release. An export interrupted before
// it was recorded is redone from an empty directory. A damaged cache is
// cloned afresh, once, and the export done again.
func (e *executor) export(ctx context.Context, s plan.Step) error {
	dir := e.l.ReleaseDir(s.Release)
	if err := clearRelease(dir); err != nil {
		return err
	}
	err := e.Git.Export(ctx, s.Commit, s.Path, dir)
	if errors.Is(err, gitcache.ErrDamaged) {
		e.log.Info("git cache damaged; cloning it afresh", zap.Error(err))
		e.View.Note(s, fmt.Sprintf("the git cache is damaged (%v); cloning it afresh", err))
		if rerr := e.Git.Repair(ctx, err); rerr != nil {
			return fmt.Errorf("%v; repairing the cache: %w", err, rerr)
		}
		if err := clearRelease(dir); err != nil {
			return err
		}
		err = e.Git.Export(ctx, s.Commit, s.Path, dir)
	}
	if err == nil {
		// Part of the export, before any build step runs: the apps and
		// error trackers that read them find them from the start.
		err = e.writeRevision(ctx, s, dir)
	}
	if err != nil {
		// A partial export is redone from scratch on the next try; remove
		// it now, so that a full disk has room for the failure record.
		clearRelease(dir)
	}
	return err
}

// clearRelease empties a release directory but for its record.
func clearRelease(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, en := range entries {
		if en.Name() == layout.RecordDirName {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, en.Name())); err != nil {
			return err
		}
	}
	return nil
}

// linkShared links each shared path into the release, replacing what the
// export put there (a placeholder such as media/.gitkeep). The release's
// directories come from the repository: its parents are walked and made
// one component at a time without following any symlink, so a committed
// link (data -> /outside) cannot steer the new link, or the directories
// made for it, out of the release.
func (e *executor) linkShared(s plan.Step) error {
	rel := e.l.ReleaseDir(s.Release)
	link := func(p string, dir bool) error {
		src := filepath.Join(e.l.SharedDir(), p)
		if dir {
			if err := os.MkdirAll(src, 0o755); err != nil {
				return err
			}
		}
		return linkInto(rel, p, src)
	}
	if s.Shared == nil {
		return nil
	}
	for _, d := range s.Shared.Dirs {
		if err := link(d, true); err != nil {
			return fmt.Errorf("shared dir %s: %w", d, err)
		}
	}
	for _, f := range s.Shared.Files {
		if err := link(f, false); err != nil {
			return fmt.Errorf("shared file %s: %w", f, err)
		}
	}
	return nil
}

// linkInto links path p of the release at rel to src, replacing what is
// there (a placeholder such as media/.gitkeep; a symlink is removed, never
// what it points at), with a relative link so the root can move.
func linkInto(rel, p, src string) error {
	dst := filepath.Join(rel, p)
	if err := insideDir(rel, dst); err != nil {
		return err
	}
	parent, err := fsx.OpenBeneath(rel, filepath.Dir(p), true, 0o755)
	if err != nil {
		return err
	}
	defer parent.Close()
	name := filepath.Base(p)
	if err := parent.RemoveAll(name); err != nil {
		return err
	}
	target, err := filepath.Rel(filepath.Dir(dst), src)
	if err != nil {
		return err
	}
	return parent.Symlink(target, name)
}

// insideDir refuses a path p under root whose parent, inside the exported
// tree, passes through a symlink or a non-directory: the repository's
// content must not steer a write outside the release. Each existing
// component is looked at without following it, so a parent still to be
// made is checked as far as it exists (the old check resolved the whole
// parent and skipped it when missing, following data -> /outside).
func insideDir(root, p string) error {
	rel, err := filepath.Rel(root, filepath.Dir(p))
	if err != nil {
		return err
	}
	if err := fsx.CheckBeneath(root, rel); err != nil {
		return fmt.Errorf("in the release: %w", err)
	}
	return nil
}

// env is the environment of a command acting for release at commit.
func (e *executor) env(p *plan.Plan, release, commit string) []string {
	env := append([]string{}, e.Env...)
	for _, v := range p.Env {
		env = append(env, v.Name+"="+v.Value)
	}
	return append(env,
		"RECONCILER_APP="+p.App,
		"RECONCILER_COMMIT="+commit,
		"RECONCILER_RELEASE="+e.l.ReleaseDir(release),
		"RECONCILER_ROOT="+p.Root,
		"RECONCILER_SHARED="+e.l.SharedDir(),
	)
}

// command runs the step's command in dir: a build step or the migration
// in its release or cache entry (contained: nothing it starts outlives
// it, its full output kept in logPath), or a service action from root.
func (e *executor) command(ctx context.Context, p *plan.Plan, s plan.Step, logPath, dir string, contain bool) error {
	return e.commandEnv(ctx, s, logPath, dir, contain, e.env(p, s.Release, s.Commit))
}

// commandEnv is command with the whole environment given.
func (e *executor) commandEnv(ctx context.Context, s plan.Step, logPath, dir string, contain bool, env []string) error {
	out := e.View.Output(s)
	if out == nil {
		out = io.Discard
	}
	if logPath != "" {
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			return err
		}
		// A retried step starts a fresh log; the failed attempt's output
		// is in the history's record of it. Output may hold secrets: the
		// log is the reconciler's alone.
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, fsx.FileMode(filepath.Dir(logPath)))
		if err != nil {
			return err
		}
		defer f.Close()
		e.stepLog = logPath
		out = io.MultiWriter(f, out)
	}
	return e.Runner.Run(ctx, runner.Command{
		Name:    string(s.Action) + " " + s.Name,
		Script:  s.Run,
		Dir:     dir,
		Env:     env,
		Timeout: s.Timeout,
		Output:  out,
		Contain: contain,
		User:    s.RunAs,
	})
}

// switchLink points the link at the release, which must be recorded
// complete: this check is the last guard of invariant 1.
func (e *executor) switchLink(s plan.Step) error {
	rec, err := record.ReadRelease(e.l.RecordFile(s.Release))
	if err != nil {
		return fmt.Errorf("release %s: %w", s.Release, err)
	}
	if rec.State != record.Complete {
		return fmt.Errorf("release %s is %s, not complete; refusing to link it", s.Release, rec.State)
	}
	if err := e.slotLost(); err != nil {
		return err
	}
	return fsx.SwitchLink(e.l.LinkPath(), layout.LinkTarget(s.Release))
}

// prune deletes a release: it is first renamed out of releases/ so that a
// half-deleted release is never seen as a release. Whether a process still
// runs from it is asked here, once, when it is about to go.
func (e *executor) prune(s plan.Step) error {
	if target, err := os.Readlink(e.l.LinkPath()); err == nil && filepath.Base(target) == s.Release {
		return fmt.Errorf("refusing to prune %s: the link points at it", s.Release)
	}
	if pids := actual.ObserveInUse(e.Desired)[s.Release]; len(pids) > 0 {
		e.View.Note(s, fmt.Sprintf("skipped: %s in use by pid %s", s.Release, pidList(pids)))
		return nil
	}
	if err := fsx.EnsureDir(e.l.TmpDir(), 0o700); err != nil {
		return err
	}
	trash := filepath.Join(e.l.TmpDir(), "prune-"+s.Release)
	if err := os.Rename(e.l.ReleaseDir(s.Release), trash); err != nil {
		return err
	}
	if err := fsx.SyncDir(e.l.ReleasesDir()); err != nil {
		return err
	}
	return os.RemoveAll(trash)
}

func pidList(pids []int) string {
	var s []string
	for i, p := range pids {
		if i == 3 {
			s = append(s, fmt.Sprintf("and %d more", len(pids)-3))
			break
		}
		s = append(s, fmt.Sprint(p))
	}
	return strings.Join(s, ", ")
}

type nopView struct{}

func (nopView) Plan(*plan.Plan)            {}
func (nopView) Fetched(*plan.Plan)         {}
func (nopView) Replanned(*plan.Plan)       {}
func (nopView) Reverting(*plan.Plan)       {}
func (nopView) StepStarted(plan.Step)      {}
func (nopView) Output(plan.Step) io.Writer { return nil }
func (nopView) Note(plan.Step, string)     {}
func (nopView) StepDone(StepResult)        {}
func (nopView) Done(*Result, error)        {}
