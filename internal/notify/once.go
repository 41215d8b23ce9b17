package notify

import (
	"sync"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

// Once lets each destination hear of one failure once. The daemon applies
// on every tick of its schedule; a target that failed stays blocked, tick
// after tick, until a person acts: the destination that was told of the
// failure (or of the first blocked plan) is not told again. A failure is
// named by Event.Key: the failed release and when it failed, so the
// failure, a revert and the blocked plans after them are one incident, and
// the same target failing again after an `apply --retry` is a new one.
//
// It is memory only: a restarted daemon tells of a standing failure once
// more, which is better than never hearing of it.
type Once struct {
	mu sync.Mutex
	// told holds, per destination, the key it heard last.
	told map[string]string
}

// Filter returns the targets that have not heard of ev's failure yet, and
// notes that they have now. Only those that want ev.Event count as told:
// a destination for blocked only still hears of the first blocked plan
// after a failure it was not sent. An event without a key passes.
func (o *Once) Filter(targets []desired.Notify, ev Event) []desired.Notify {
	if ev.Key == "" {
		return targets
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.told == nil {
		o.told = map[string]string{}
	}
	var out []desired.Notify
	for _, t := range targets {
		if !t.Wants(ev.Event) {
			continue
		}
		id := destination(t)
		if o.told[id] == ev.Key {
			continue
		}
		o.told[id] = ev.Key
		out = append(out, t)
	}
	return out
}

// Clear forgets every failure: the host converged, so the next failure,
// even of the same release at the same second, is news.
func (o *Once) Clear() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.told = nil
}

// destination identifies a target across desired states: its URL or file.
func destination(t desired.Notify) string {
	if t.URLFile != "" {
		return "file:" + t.URLFile
	}
	return "url:" + t.URL.Reveal()
}
