package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/source"
	"github.com/reconciler-dev/reconciler/internal/testgit"
)

// With a verifier on the config repository (run --config-verify-keyring
// or --config-verify-allowed-signers), a signed config commit deploys; an
// unsigned one is never applied: the run fails needing a person, naming
// the commit, the host is untouched and nothing retries it; the next
// signed commit deploys again.
func TestUnsignedConfigCommitIsNotApplied(t *testing.T) {
	for _, tt := range []struct {
		name   string
		signer func(t *testing.T) (testgit.Signer, gitcache.Verifier)
	}{
		{"gpg", func(t *testing.T) (testgit.Signer, gitcache.Verifier) {
			k := testgit.NewGPGKey(t, "Ops <ops@example.com>")
			f := filepath.Join(t.TempDir(), "trusted.asc")
			os.WriteFile(f, []byte(k.Armored()), 0o644)
			return k, gitcache.Verifier{Keyring: f}
		}},
		{"ssh", func(t *testing.T) (testgit.Signer, gitcache.Verifier) {
			k := testgit.NewSSHKey(t, "ops")
			f := filepath.Join(t.TempDir(), "allowed_signers")
			os.WriteFile(f, []byte("ops@example.com "+k.Line+"\n"), 0o644)
			return k, gitcache.Verifier{AllowedSigners: f}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			signer, verifier := tt.signer(t)
			e := newEnv(t)
			cfg := testgit.New(t)
			cfg.Write("d.yaml", e.yaml(e.v1, ""))
			c1 := cfg.CommitSigned("c1", signer)
			ra := &realApply{}
			src := &source.Repo{URL: cfg.Dir, Path: "d.yaml", Branch: "main", Log: zaptest.NewLogger(t), Verify: verifier}
			d, stop := start(t, Options{Source: src, Apply: ra.fn(t)})
			defer stop()
			waitRunWhere(t, d, "the run of c1", func(r *Run) bool { return r.ConfigCommit == c1 })
			e.waitLinked(e.v1[:8])
			before := treeDigest(t, e.root)

			cfg.Write("d.yaml", e.yaml(e.v2, ""))
			c2 := cfg.Commit("c2")
			run := waitRunWhere(t, d, "the run of c2", func(r *Run) bool { return r.ConfigCommit == c2 })
			if run.Result != "failed" || run.ErrorKind != KindTerminal || !strings.Contains(run.Error, "commit "+c2+": unsigned") {
				t.Errorf("run of the unsigned commit: %+v", run)
			}
			if ra.runs.Load() != 1 {
				t.Errorf("%d applies; the unsigned commit was applied", ra.runs.Load())
			}
			if treeDigest(t, e.root) != before {
				t.Error("an unsigned config commit changed the host")
			}
			d.mu.Lock()
			armed := d.retry != nil
			d.mu.Unlock()
			if armed {
				t.Error("a retry is armed for a commit that needs a person")
			}
			if ok, why := d.Ready(); ok || !strings.Contains(why, "config commit "+c2+" refused: unsigned") {
				t.Errorf("ready %v: %s", ok, why)
			}

			// Signed: deploys, and the daemon is ready again.
			c3 := cfg.CommitSigned("c3", signer)
			waitRunWhere(t, d, "the run of c3", func(r *Run) bool { return r.ConfigCommit == c3 })
			e.waitLinked(e.v2[:8])
			if ok, why := d.Ready(); !ok {
				t.Errorf("not ready after a signed commit deployed: %s", why)
			}
		})
	}
}
