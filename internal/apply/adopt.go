package apply

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/lock"
	"github.com/reconciler-dev/reconciler/internal/record"
)

// AdoptOptions configure `reconciler adopt`.
type AdoptOptions struct {
	Desired     *desired.State
	Log         *zap.Logger
	LockTimeout time.Duration
	Now         func() time.Time // time.Now when nil
	User, Host  string           // as in Options
}

// Adopt records the releases another tool deployed under the root, as
// actual.ObserveAdoption finds them under the root's lock: each release a
// complete record of its REVISION commit, the linked one healthy, then
// the host record and a line of history. It writes nothing else: no
// release is moved or changed beyond its record, the link stays.
//
// The host record is written last: a root with adopted records and no
// host record is an adopt that stopped, and adopting it again finishes it.
func Adopt(ctx context.Context, opts AdoptOptions) (*actual.Adoption, error) {
	d := opts.Desired
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.User == "" {
		opts.User = CurrentUser()
	}
	if opts.Host == "" {
		opts.Host, _ = os.Hostname()
	}
	l := layout.New(d.Root, d.Link)
	if err := fsx.CheckDir(l.Root); err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	if err := fsx.EnsureDir(l.StateDir(), 0o700); err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	lk, err := lock.Acquire(ctx, l.LockFile(), opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	defer lk.Release()
	a, err := actual.ObserveAdoption(d)
	if err != nil {
		return nil, err
	}
	now := opts.Now().UTC()
	for _, r := range a.Releases {
		rec := record.Adopt(r.Name, d.App, r.Commit, r.Created, record.Adoption{At: now, By: opts.User, Tool: a.Tool, Linked: r.Linked})
		if err := record.WriteRelease(l.RecordFile(r.Name), rec); err != nil {
			return nil, fmt.Errorf("adopt releases/%s: %w", r.Name, err)
		}
		opts.Log.Info("release adopted", zap.String("release", r.Name), zap.String("commit", r.Commit), zap.Bool("linked", r.Linked))
	}
	linked := a.Linked()
	// The services run from the linked release: nothing is pending for it.
	h := &record.Host{Linked: linked.Name, SwitchedAt: now, ServicesDone: true, Verified: true}
	if err := record.WriteHost(l.HostFile(), h); err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	to := history.Ref{Release: linked.Name, Commit: linked.Commit}
	rec := history.Record{Time: now, Kind: history.KindApply, ApplyID: newID(now), Trigger: "adopt", User: opts.User, Host: opts.Host,
		Release: to.Release, Commit: to.Commit, From: &to, To: &to, Result: history.ResultOK}
	if err := history.Append(l.HistoryFile(), rec); err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	return a, nil
}
