package apply

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/record"
)

func (h *host) relink(target string) {
	os.Remove(h.l.LinkPath())
	if err := os.Symlink(target, h.l.LinkPath()); err != nil {
		h.t.Fatal(err)
	}
}

func TestBrokenHosts(t *testing.T) {
	t.Run("dangling link is repaired", func(t *testing.T) {
		h := newHost(t)
		h.mustApply(h.desired(h.commit("v1")))
		good := h.linked()
		h.relink("releases/20200101T000000Z-deadbeef")
		res, _ := h.mustApply(h.desired(h.record(good).Commit))
		if h.linked() != good || !strings.Contains(res.Plan.Steps[0].Reason, "the link is dangling") {
			t.Errorf("linked %s; plan %+v", h.linked(), res.Plan.Steps)
		}
	})
	t.Run("link replaced by a directory is refused and kept", func(t *testing.T) {
		h := newHost(t)
		d := h.desired(h.commit("v1"))
		h.mustApply(d)
		os.Remove(h.l.LinkPath())
		os.MkdirAll(filepath.Join(h.l.LinkPath(), "precious"), 0o755)
		_, _, err := h.apply(context.Background(), d)
		if err == nil || !strings.Contains(err.Error(), "refusing to touch the link: "+h.l.LinkPath()+" is a directory, not a symlink; move it away") {
			t.Fatalf("apply: %v", err)
		}
		if _, err := os.Stat(filepath.Join(h.l.LinkPath(), "precious")); err != nil {
			t.Error("the directory's content is gone")
		}
	})
	t.Run("garbage record is left alone with a warning", func(t *testing.T) {
		h := newHost(t)
		h.mustApply(h.desired(h.commit("v1")))
		old := h.linked()
		h.keep = 1
		h.mustApply(h.desired(h.commit("v2")))
		os.WriteFile(h.l.RecordFile(old), []byte("{not json"), 0o644)
		res, _ := h.mustApply(h.desired(h.commit("v3")))
		if _, err := os.Stat(h.l.ReleaseDir(old)); err != nil {
			t.Error("a release with a garbage record was deleted")
		}
		if len(res.Plan.Warnings) == 0 || !strings.Contains(res.Plan.Warnings[0], "unreadable record") {
			t.Errorf("warnings %v", res.Plan.Warnings)
		}
	})
	t.Run("records of a release whose directory is gone", func(t *testing.T) {
		// Records live inside their release, so they go together; the
		// host record may still name a deleted release.
		h := newHost(t)
		h.mustApply(h.desired(h.commit("v1")))
		prev := h.linked()
		h.mustApply(h.desired(h.commit("v2")))
		os.RemoveAll(h.l.ReleaseDir(prev))
		res, _ := h.mustApply(h.desired(h.commit("v3")))
		if res.Result != "ok" || !strings.HasSuffix(h.linked(), h.repo.Git("rev-parse", "HEAD")[:8]) {
			t.Errorf("deploy after the previous release vanished: %s, %s", res.Result, h.linked())
		}
	})
}

func TestDamagedCacheIsRecloned(t *testing.T) {
	for name, damage := range map[string]func(repo string){
		"missing objects": func(repo string) {
			packs, _ := filepath.Glob(filepath.Join(repo, "objects", "pack", "*"))
			for _, p := range packs {
				os.Remove(p)
			}
		},
		"stale lock files": func(repo string) {
			os.WriteFile(filepath.Join(repo, "refs", "heads", "main.lock"), nil, 0o644)
			os.WriteFile(filepath.Join(repo, "packed-refs.lock"), nil, 0o644)
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHost(t)
			h.mustApply(h.desired(h.commit("v1")))
			damage(h.l.RepoDir())
			v2 := h.commit("v2")
			res, _ := h.mustApply(h.desired("main"))
			if !strings.HasSuffix(h.linked(), v2[:8]) {
				t.Fatalf("linked %s; want v2", h.linked())
			}
			t.Logf("plan: %s", res.Plan.Steps[0].Reason)
			if left, _ := filepath.Glob(filepath.Join(h.l.TmpDir(), "damaged-*")); len(left) != 0 {
				t.Errorf("the damaged copy was left behind: %v", left)
			}
		})
	}
}

func TestRemoteFaults(t *testing.T) {
	h := newHost(t)
	d := h.desired(h.commit("v1"))
	// Nothing listens: the network failed, a later try may pass.
	d.Source.Repo = "http://127.0.0.1:1/app.git"
	_, _, err := h.apply(context.Background(), d)
	var ae *Error
	if !errors.As(err, &ae) || ae.Kind != RetryLater || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unreachable remote: %v", err)
	}
	// Authentication refused: a person must act.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
		http.Error(w, "denied", http.StatusUnauthorized)
	}))
	defer srv.Close()
	d.Source.Repo = srv.URL + "/app.git"
	_, _, err = h.apply(context.Background(), d)
	if !errors.As(err, &ae) || ae.Kind != NeedsPerson || !strings.Contains(err.Error(), "authentication required") {
		t.Errorf("refused credentials: %v", err)
	}
	if _, err := os.Lstat(h.l.LinkPath()); err == nil {
		t.Error("a link appeared after failed fetches")
	}
}

func TestStepFaults(t *testing.T) {
	for _, tt := range []struct {
		name, run, want string
		timeout         time.Duration
	}{
		{"timeout", "sleep 30", "build slow: timed out", time.Second},
		{"killed by a signal", "kill -KILL $$", "build slow: killed by signal killed", time.Minute},
		{"missing command", "no-such-compiler --build", "build slow: exited with status 127", time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			h.mustApply(h.desired(h.commit("v1")))
			good := h.linked()
			d := h.desired(h.commit("v2"))
			d.Build = append(d.Build, desired.Step{Name: "slow", Run: tt.run, Timeout: tt.timeout})
			res, _, err := h.apply(context.Background(), d, func(o *Options) { o.Runner.KillGrace = 100 * time.Millisecond })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want %q", err, tt.want)
			}
			if h.linked() != good {
				t.Error("the link moved")
			}
			if r := h.record(res.Release); r.State != record.Failed || r.Failure.Step != "slow" {
				t.Errorf("record %s %+v", r.State, r.Failure)
			}
		})
	}
	t.Run("missing service command reverts", func(t *testing.T) {
		h := newHost(t)
		h.mustApply(h.desired(h.commit("v1")))
		good := h.linked()
		d := h.desired(h.commit("v2"))
		d.Services = []desired.Service{{Name: "web", Manager: "command", Action: "restart", Restart: "no-such-supervisorctl restart web", Timeout: time.Minute}}
		res, _, err := h.apply(context.Background(), d)
		var he *HealthError
		if !errors.As(err, &he) || !strings.Contains(err.Error(), "exited with status 127") || h.linked() != good {
			t.Fatalf("got %v (linked %s)", err, h.linked())
		}
		if r := h.record(res.Release); r.State != record.Failed || r.Failure.Step != "service web" || !strings.Contains(r.Failure.Output, "not found") {
			t.Errorf("record %s %+v", r.State, r.Failure)
		}
	})
}

// TestDiskFullDuringExport deploys onto a 2 MB tmpfs: v2 holds a 3 MB file
// of zeros (tiny in the pack, 3 MB on export). The apply fails naming the
// cause, the link stays, and the release is recorded failed at the export,
// for apply --retry once there is room.
func TestDiskFullDuringExport(t *testing.T) {
	h := newHost(t)
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", h.root).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a small tmpfs here (%v: %s); the disk-full fault is not exercised", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", h.root).Run() })
	os.MkdirAll(filepath.Join(h.root, "shared"), 0o755)
	os.WriteFile(filepath.Join(h.root, "shared", ".env"), []byte("SECRET=1\n"), 0o600)
	h.mustApply(h.desired(h.commit("v1")))
	good := h.linked()
	h.repo.Write("big.bin", string(make([]byte, 3<<20)))
	res, _, err := h.apply(context.Background(), h.desired(h.commit("v2")))
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("apply on a full disk: %v", err)
	}
	if h.linked() != good {
		t.Error("the link moved")
	}
	if r := h.record(res.Release); r.State != record.Failed || r.Failure.Step != plan.StepExport {
		t.Errorf("record %s %+v", r.State, r.Failure)
	}
	if msg := h.record(good); msg.State != record.Complete {
		t.Error("the linked release's record was damaged")
	}
	t.Logf("disk full: %.160s", err.Error())
}

// A kill inside the switch, after the temporary link was made and before
// the rename, leaves only the temporary link: the link itself is intact,
// and the next apply removes the leftover.
func TestKillInsideSwitchLeavesOnlyTheTempLink(t *testing.T) {
	h := newHost(t)
	d := h.desired(h.commit("v1"))
	h.mustApply(d)
	good := h.linked()
	tmp := filepath.Join(h.root, ".current.tmp-0123456789ab")
	if err := os.Symlink("releases/"+good, tmp); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(h.l.TmpDir(), "20991231T000000Z-00000000"), 0o755) // a staged release
	res, _ := h.mustApply(d)
	if res.Result != "no-changes" || h.linked() != good {
		t.Errorf("result %s, linked %s", res.Result, h.linked())
	}
	if _, err := os.Lstat(tmp); err == nil {
		t.Error("the temporary link was left")
	}
	if _, err := os.Stat(h.l.TmpDir()); err == nil {
		t.Error("the staging folder was left")
	}
}
