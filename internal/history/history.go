// Package history keeps the append-only log of applies and steps under
// <root>/.reconciler/history.jsonl, one JSON object a line.
package history

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Record kinds.
const (
	KindApply = "apply"
	KindStep  = "step"
)

// Results.
const (
	ResultOK      = "ok"
	ResultFailed  = "failed"
	ResultNoop    = "no-changes"
	ResultBlocked = "blocked"
	// ResultInterrupted: stopped from outside (Ctrl-C, SIGTERM, the
	// daemon's deadline); the next apply resumes.
	ResultInterrupted = "interrupted"
)

// Record is one line of the history.
type Record struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	ApplyID string    `json:"apply_id"`
	Trigger string    `json:"trigger,omitempty"`
	// ConfigCommit is the config repository commit the desired file came
	// from, for the daemon with --config-repo.
	ConfigCommit string  `json:"config_commit,omitempty"`
	Commit       string  `json:"commit,omitempty"`
	Release      string  `json:"release,omitempty"`
	Step         string  `json:"step,omitempty"` // "build venv", "switch", "restart web"
	Result       string  `json:"result"`
	Duration     float64 `json:"duration_s"`
	Error        string  `json:"error,omitempty"`
	// Output is the tail of what a failed command printed.
	Output string `json:"output,omitempty"`
}

// Append adds rec to the history file at path and syncs it: a history that
// loses its last line in a crash would hide the failure it recorded.
func Append(path string, rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	// One write of a whole line: concurrent appenders (there are none
	// under the lock, but a reader may be tailing) never see half a line.
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("history: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("history: %w", err)
	}
	return f.Close()
}

// Read returns every record in the history at path, oldest first. A line
// that is not a record (a torn write after a crash) is skipped and counted.
func Read(path string) (recs []Record, skipped int, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("history: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			skipped++
			continue
		}
		recs = append(recs, r)
	}
	return recs, skipped, sc.Err()
}

// LastApply returns the newest apply record in recs, or nil.
func LastApply(recs []Record) *Record {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Kind == KindApply {
			return &recs[i]
		}
	}
	return nil
}
