package apply

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// snapshot lists what is under dir — names, modes, link targets and file
// contents — to show nothing was written there.
func snapshot(t *testing.T, dir string) string {
	var names []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			line := p + " " + fi.Mode().String()
			if fi.Mode()&os.ModeSymlink != 0 {
				target, _ := os.Readlink(p)
				line += " -> " + target
			}
			if fi.Mode().IsRegular() {
				b, _ := os.ReadFile(p)
				line += fmt.Sprintf(" %x", sha256.Sum256(b))
			}
			names = append(names, line)
		}
		return nil
	})
	return strings.Join(names, "\n")
}

// Issue 9, attack 3: a `.reconciler` symlink planted in the root steered
// the lock, the history and deletions to its target. Now the apply refuses
// the root, names why, and writes nothing anywhere.
func TestPlantedStateDirIsRefused(t *testing.T) {
	h := newHost(t)
	victim := t.TempDir()
	os.WriteFile(filepath.Join(victim, "precious"), []byte("root's file"), 0o600)
	before := snapshot(t, victim)
	if err := os.Symlink(victim, h.l.StateDir()); err != nil {
		t.Fatal(err)
	}
	_, _, err := h.apply(context.Background(), h.desired(h.commit("v1")))
	var ue *fsx.UnsafeDirError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), h.l.StateDir()+": it is a symlink (to "+victim+")") {
		t.Fatalf("apply with a planted state dir: %v", err)
	}
	if after := snapshot(t, victim); after != before {
		t.Errorf("the apply wrote through the link:\n%s", after)
	}
	if _, err := os.Lstat(h.l.ReleasesDir()); err == nil {
		t.Error("the apply went on to make releases/")
	}
}

// The same attack by the app user who owns the root: the root itself is
// refused, naming its owner and mode, before anything inside is touched.
func TestRootOwnedByAnotherUserIsRefused(t *testing.T) {
	uid, gid := testgit.Attacker(t)
	h := newHost(t)
	if err := os.Chown(h.root, uid, gid); err != nil {
		t.Fatal(err)
	}
	victim := t.TempDir()
	before := snapshot(t, victim)
	os.Symlink(victim, h.l.StateDir())
	os.Lchown(h.l.StateDir(), uid, gid)
	_, _, err := h.apply(context.Background(), h.desired(h.commit("v1")))
	if err == nil || !strings.Contains(err.Error(), "refusing to write in "+h.root+": it is owned by rcattacker (uid "+strconv.Itoa(uid)+")") {
		t.Fatalf("apply on a root the app user owns: %v", err)
	}
	if after := snapshot(t, victim); after != before {
		t.Errorf("the apply wrote through the link:\n%s", after)
	}
}

// A root others may write in is refused too: they could plant the link.
func TestRootWritableByOthersIsRefused(t *testing.T) {
	h := newHost(t)
	os.Chmod(h.root, 0o777)
	_, _, err := h.apply(context.Background(), h.desired(h.commit("v1")))
	if err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("apply on a world-writable root: %v", err)
	}
}

// Records, the history and step logs are the reconciler's alone.
func TestRecordsAreNotWorldReadable(t *testing.T) {
	h := newHost(t)
	h.mustApply(h.desired(h.commit("v1")))
	rel := h.linked()
	for _, p := range []string{h.l.StateDir(), h.l.RecordFile(rel), h.l.HostFile(), h.l.HistoryFile(), h.l.StepLog(rel, "count"), h.l.RecordDir(rel)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is %s; want no access for group or others", p, fi.Mode())
		}
	}
}

// run_as: build steps, the migration and command checks run as the app's
// user, who can write in the release being built and nowhere else under
// root, never in the release's record; the complete release is the
// reconciler's again.
func TestRunAsBuildsAsTheAppUser(t *testing.T) {
	uid, _ := testgit.Attacker(t)
	h := newHost(t)
	// The app user must reach the release, as on a real host (a test's
	// temporary folders are 0700).
	for p := h.root; p != filepath.Dir(filepath.Dir(h.dir)); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	h.build = `  - name: whoami
    run: id -un > built-by && echo "$HOME" > home
  - name: escape
    run: |
      touch "$RECONCILER_ROOT/planted" 2>/dev/null && echo "wrote in root" >&2 && exit 1
      touch .reconciler/forged 2>/dev/null && echo "wrote in the record" >&2 && exit 1
      exit 0
`
	h.migrate = `id -un > "$RECONCILER_RELEASE/migrated-by"`
	d := h.desired(h.commit("v1"))
	d.RunAs = "rcattacker"
	for i := range d.Build {
		d.Build[i].RunAs = d.RunAs
	}
	d.Migrate.RunAs = d.RunAs
	d.Health = []desired.Check{{Kind: desired.CheckCommand, Target: `test "$(id -un)" = rcattacker`, Timeout: 5 * time.Second, Interval: time.Second}}
	res, _ := h.mustApply(d)
	rel := h.l.ReleaseDir(h.linked())
	for file, want := range map[string]string{"built-by": "rcattacker", "migrated-by": "rcattacker"} {
		if b, _ := os.ReadFile(filepath.Join(rel, file)); strings.TrimSpace(string(b)) != want {
			t.Errorf("%s: %q, want %q", file, b, want)
		}
	}
	if _, err := os.Stat(filepath.Join(h.root, "planted")); err == nil {
		t.Error("the build step wrote in root")
	}
	// Complete: the release belongs to the reconciler again.
	if fi, _ := os.Stat(filepath.Join(rel, "built-by")); fi.Sys().(*syscall.Stat_t).Uid == uint32(uid) {
		t.Error("the complete release is still the app user's")
	}
	found := false
	for _, s := range res.Plan.Steps {
		found = found || s.RunAs == "rcattacker" && s.Action == plan.Build
	}
	if !found {
		t.Error("the plan does not say who the build steps run as")
	}
}

// Issue 9, attack 7: a bare repository at <root>/repo that the reconciler
// did not make was taken over (branches pruned, origin rewritten). It is
// refused and left exactly as it was.
func TestForeignRepositoryIsNotAdopted(t *testing.T) {
	h := newHost(t)
	theirs := h.l.RepoDir()
	h.repo.Commit("theirs")
	cmd := exec.Command("git", "clone", "-q", "--bare", h.repo.Dir, theirs)
	cmd.Env = h.repo.Env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	exec.Command("git", "-C", theirs, "branch", "keep-me").Run()
	exec.Command("git", "-C", theirs, "remote", "add", "origin", "https://git.example.com/theirs.git").Run()
	before := snapshot(t, theirs)
	_, _, err := h.apply(context.Background(), h.desired(h.commit("v1")))
	if err == nil || !strings.Contains(err.Error(), "without the reconciler's marker file") || !strings.Contains(err.Error(), "move it away") {
		t.Fatalf("apply over a foreign repository: %v", err)
	}
	if after := snapshot(t, theirs); after != before {
		t.Errorf("the foreign repository was changed:\n%s", after)
	}
}

// A group the operator names on the state directory (chgrp; chmod 2750)
// may read records, history and logs: 0640 and 0750, never wider.
func TestRecordsReadableByTheGroupTheOperatorNames(t *testing.T) {
	_, gid := testgit.Attacker(t)
	h := newHost(t)
	os.MkdirAll(h.l.StateDir(), 0o700)
	os.Chown(h.l.StateDir(), -1, gid)
	os.Chmod(h.l.StateDir(), 0o750|os.ModeSetgid)
	h.mustApply(h.desired(h.commit("v1")))
	rel := h.linked()
	for p, want := range map[string]os.FileMode{h.l.HistoryFile(): 0o640, h.l.HostFile(): 0o640, h.l.RecordFile(rel): 0o640,
		h.l.StepLog(rel, "count"): 0o640, h.l.RecordDir(rel): 0o750} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want || int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
			t.Errorf("%s: %s group %d; want %s group %d", p, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, want, gid)
		}
	}
}
