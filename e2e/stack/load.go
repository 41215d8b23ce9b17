package stack

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Load is a load generator: conns clients requesting / through nginx in a
// loop until Stop.
type Load struct {
	expected  atomic.Value // the release every request started now must see; "" for either
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	firstFail atomic.Value

	total, failed, stale atomic.Int64
}

// LoadResult counts a load's requests: failed are errors and non-2xx,
// stale the 2xx from another release than the one expected when the
// request started.
type LoadResult struct {
	Total, Failed, Stale int64
	FirstFailure         string
}

// StartLoad starts conns clients on addr (nginx).
func (s *Stack) StartLoad(addr string, conns int) *Load {
	l := &Load{}
	l.expected.Store("")
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for i := 0; i < conns; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				want := l.expected.Load().(string)
				resp, err := s.Client.Get("http://" + addr + "/")
				l.total.Add(1)
				if err != nil {
					l.failed.Add(1)
					l.firstFail.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					l.failed.Add(1)
					l.firstFail.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode))
					continue
				}
				if want != "" && !strings.HasPrefix(string(b), Page(want)) {
					l.stale.Add(1)
				}
			}
		}()
	}
	return l
}

// Expect makes every response to a request started from now on a stale
// one unless release tag answered it; "" accepts any release.
func (l *Load) Expect(tag string) { l.expected.Store(tag) }

// Stop stops the clients and returns the counts.
func (l *Load) Stop() LoadResult {
	l.cancel()
	l.wg.Wait()
	r := LoadResult{Total: l.total.Load(), Failed: l.failed.Load(), Stale: l.stale.Load()}
	if f, ok := l.firstFail.Load().(string); ok {
		r.FirstFailure = f
	}
	return r
}

// SwitchUnderLoad deploys the releases tags in turn, switches times, under
// conns clients on addr (nginx), and counts failed requests and responses
// from the wrong release once deploy returned. deploy must return only
// when the release serves; its errors are reported to T.
func (s *Stack) SwitchUnderLoad(addr string, tags []string, switches, conns int, deploy func(tag string) error) LoadResult {
	s.T.Helper()
	l := s.StartLoad(addr, conns)
	for i := 0; i < switches; i++ {
		tag := tags[i%len(tags)]
		l.Expect("") // during the switch either release is right
		if err := deploy(tag); err != nil {
			s.T.Errorf("switch %d to %s: %v", i, tag, err)
		}
		l.Expect(tag)
		time.Sleep(300 * time.Millisecond)
	}
	return l.Stop()
}
