package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/reconciler-dev/reconciler/internal/notify"
	"github.com/reconciler-dev/reconciler/internal/source"
)

// settableSource is a desired state the test sets; runs come from
// Trigger only.
type settableSource struct {
	mu   sync.Mutex
	data string
}

func (s *settableSource) set(data string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = data
}

func (s *settableSource) Load(context.Context) (*source.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &source.Snapshot{Data: []byte(s.data), Name: "desired.yaml", Rev: s.data, Dir: "/"}, nil
}

func (s *settableSource) Watch(ctx context.Context, _ func(string)) error { <-ctx.Done(); return nil }

// A target whose build failed stays blocked tick after tick: each
// destination hears of it once — the one for every event by the failure,
// the one for blocked only by the first blocked run — not on every tick.
// Once the host converged, the same blocked target is news again.
func TestBlockedTargetIsNotifiedOncePerDestination(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	got := map[string][]string{} // path → events, in order
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct{ Event string }
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &ev)
		mu.Lock()
		got[r.URL.Path] = append(got[r.URL.Path], ev.Event)
		mu.Unlock()
	}))
	defer srv.Close()
	sender := &notify.Sender{Log: zaptest.NewLogger(t)}
	yaml := func(commit string) string {
		// The build fails for v2 only.
		return fmt.Sprintf(`app: site
root: %s
source: {repo: %s, commit: %s}
build:
  - {name: b, run: 'test "$RECONCILER_COMMIT" != %s'}
notify:
  - url: %s/all
    on: [failure, blocked, revert, success]
  - url: %s/blocked
    on: [blocked]
`, e.root, e.app.Dir, commit, e.v2, srv.URL, srv.URL)
	}
	src := &settableSource{data: yaml(e.v1)}
	ra := &realApply{}
	d, stop := start(t, Options{Source: src, Apply: ra.fn(t), Notifier: sender, Hostname: "web1"})
	run := waitRun(t, d, nil)
	// tick runs once more and waits for that run.
	tick := func(want string) {
		t.Helper()
		d.Trigger("schedule")
		run = waitRun(t, d, run)
		if run.Result != want {
			t.Fatalf("run %+v; want %s", run, want)
		}
	}
	if run.Result != "ok" {
		t.Fatalf("first run %+v", run)
	}
	src.set(yaml(e.v2))
	tick("failed") // the build fails
	for range 3 {
		tick("failed") // blocked on it, a person must act
		if !strings.Contains(run.Error, "not retrying it") {
			t.Fatalf("not blocked: %+v", run)
		}
	}
	src.set(yaml(e.v1))
	tick("no-changes") // the host is on v1 already: converged
	src.set(yaml(e.v2))
	tick("failed") // blocked again: news after the host converged
	tick("failed")
	stop()
	if n := sender.Close(context.Background()); n != 0 {
		t.Errorf("%d notifications dropped", n)
	}
	mu.Lock()
	defer mu.Unlock()
	// Sorted: each delivery runs on its own, so they may arrive in any
	// order.
	want := map[string]string{"/all": "blocked,failure,success", "/blocked": "blocked,blocked"}
	for path, w := range want {
		slices.Sort(got[path])
		if g := strings.Join(got[path], ","); g != w {
			t.Errorf("%s received %s; want %s", path, g, w)
		}
	}
}
