package cli

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/notify"
)

// notifyWait bounds how long a finished `apply`, or a stopping daemon,
// waits for notifications still being delivered: a webhook that does not
// answer delays the exit by this much at most, never the deploy. What is
// cut off is logged as dropped.
const notifyWait = 5 * time.Second

// notifyApply posts the event of a finished apply to notify: and waits,
// within notifyWait, for the deliveries. It never fails: a notification
// that is not delivered is logged.
func notifyApply(ctx context.Context, d *desired.State, res *apply.Result, err error, log *zap.Logger) {
	if len(d.Notify) == 0 {
		return
	}
	// The host as the apply left it, without git: the commits of the
	// releases it went from and to. Not read, the event has none.
	host, oerr := actual.Observe(ctx, d, nil)
	if oerr != nil {
		log.Warn("host not observed for the notification", zap.Error(oerr))
		host = nil
	}
	ev, ok := notify.New(notify.Input{Desired: d, Result: res, Err: err, Host: host, Trigger: "cli", Hostname: notify.Hostname(), Time: time.Now()})
	if !ok {
		return
	}
	s := &notify.Sender{Log: log}
	s.Send(d.Notify, ev)
	wctx, cancel := context.WithTimeout(ctx, notifyWait)
	defer cancel()
	s.Close(wctx)
}
