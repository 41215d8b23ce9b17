// Package history keeps the append-only log of applies and steps under
// <root>/.reconciler/history.jsonl, one JSON object a line. The log is
// bounded: past MaxBytes it is rotated to history.jsonl.1 (one old file
// kept), and it is read from its end, so a long-lived host never pays for
// its whole past.
package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/scrub"
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
	// ResultSuspended: an apply refused because a person suspended deploys.
	ResultSuspended = "suspended"
	// ResultInterrupted: stopped from outside (Ctrl-C, SIGTERM, the
	// daemon's deadline); the next apply resumes.
	ResultInterrupted = "interrupted"
	// ResultUnfinished is never stored: Applies gives it to the steps of an
	// apply whose own record is missing — one still running, or one that
	// stopped before writing it (killed, a crash, a full disk).
	ResultUnfinished = "unfinished"
)

// Bounds of what is kept.
const (
	// MaxBytes is the size past which Append rotates the log: 16 MB is
	// about a month and a half of applies at a one-minute schedule.
	MaxBytes = 16 << 20
	// MaxOutput is the tail of a command's output a record keeps.
	MaxOutput = 4 << 10
	// MaxError is the length of an error a record keeps (head and tail).
	MaxError = 2 << 10
)

// Record is one line of the history. Fields are only ever added, each
// omitted when empty: a log written by an older version reads the same,
// its records without the newer fields.
type Record struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	ApplyID string    `json:"apply_id"`
	Trigger string    `json:"trigger,omitempty"`
	// User and Host say who applied, and where: the user who ran sudo
	// when there is one, else the user running the reconciler. Apply
	// records only.
	User string `json:"user,omitempty"`
	Host string `json:"host,omitempty"`
	// ConfigCommit is the config repository commit the desired file came
	// from, for the daemon with --config-repo.
	ConfigCommit string `json:"config_commit,omitempty"`
	// Commit and Release are a step's release, or an apply's target.
	Commit   string  `json:"commit,omitempty"`
	Release  string  `json:"release,omitempty"`
	Step     string  `json:"step,omitempty"` // "build venv", "switch", "restart web"
	Result   string  `json:"result"`
	Duration float64 `json:"duration_s"`
	Error    string  `json:"error,omitempty"`
	// Output is the tail of what a failed command printed.
	Output string `json:"output,omitempty"`
	// From is what the link pointed at when the apply started (an empty
	// Ref on a first deploy), To the release the apply went to: its
	// target, the same as Release and Commit, whether or not it got
	// there (Result says). Apply records only; nil in older ones. Last,
	// after the flat fields, in JSON too.
	From *Ref `json:"from,omitempty"`
	To   *Ref `json:"to,omitempty"`
}

// Ref names a release and its commit.
type Ref struct {
	Release string `json:"release"`
	Commit  string `json:"commit"`
}

// Clean returns rec as it is stored: every text without control
// characters or URL passwords, the error at most MaxError bytes and the
// output its last MaxOutput bytes. Commands print colours, progress bars
// and anything else; the history is shown on terminals and over HTTP.
func Clean(rec Record) Record {
	for _, s := range Texts(&rec) {
		*s = scrub.Text(*s)
	}
	rec.Error = scrub.Bound(rec.Error, MaxError)
	rec.Output = scrub.Tail(rec.Output, MaxOutput)
	return rec
}

// Texts are the text fields of r, for those who clean or show them. The
// Refs are copied first, so that changing a text never changes a record
// r shares them with.
func Texts(r *Record) []*string {
	out := []*string{&r.Kind, &r.ApplyID, &r.Trigger, &r.User, &r.Host, &r.ConfigCommit, &r.Commit, &r.Release, &r.Step, &r.Result, &r.Error, &r.Output}
	for _, ref := range []**Ref{&r.From, &r.To} {
		if *ref != nil {
			c := **ref
			*ref = &c
			out = append(out, &c.Release, &c.Commit)
		}
	}
	return out
}

// Rotated is the name of the one older file kept beside the log at path.
func Rotated(path string) string { return path + ".1" }

// Append adds rec, cleaned (see Clean), to the history file at path and
// syncs it: a history that loses its last line in a crash would hide the
// failure it recorded. When the line would take the file past MaxBytes,
// the file is first renamed to Rotated(path), replacing the older one.
// Appenders hold the apply lock, so nothing appends during a rotation.
func Append(path string, rec Record) error { return appendMax(path, rec, MaxBytes) }

func appendMax(path string, rec Record, max int64) error {
	b, err := json.Marshal(Clean(rec))
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	b = append(b, '\n')
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 && fi.Size()+int64(len(b)) > max {
		if err := rotate(path); err != nil {
			return err
		}
	}
	// Records hold failure output, which may hold secrets: 0600, and never
	// written through a symlink.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, fsx.FileMode(filepath.Dir(path)))
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	// One write of a whole line: concurrent appenders (there are none
	// under the lock, but a reader may be tailing) never see half a line.
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("history: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("history: %w", err)
	}
	return f.Close()
}

// rotate renames the log to its rotated name and syncs the directory, so
// that after a crash the next line never lands in a file the rename
// already moved away.
func rotate(path string) error {
	if err := os.Rename(path, Rotated(path)); err != nil {
		return fmt.Errorf("history: rotate: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("history: rotate: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("history: rotate: sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}

// Read returns every record kept (the rotated file's, then the current
// one's), oldest first. A line that is not a record (a torn write after a
// crash) is skipped and counted. Prefer ReadTail or Last: they read only
// the end of the log.
func Read(path string) (recs []Record, skipped int, err error) {
	return ReadTail(path, 0)
}

// ReadTail returns the last n records (all of them when n <= 0), oldest
// first, reading the log backwards from its end in blocks and going on to
// the rotated file only when the current one has fewer than n. Memory and
// reading are bounded by the records returned, not by the size of the log.
func ReadTail(path string, n int) (recs []Record, skipped int, err error) {
	err = scan(path, func(r Record) bool {
		recs = append(recs, r)
		return n <= 0 || len(recs) < n
	}, &skipped)
	// Collected newest first.
	for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
		recs[i], recs[j] = recs[j], recs[i]
	}
	return recs, skipped, err
}

// Last returns the newest apply record of the log, or nil if there is
// none. It reads backwards from the end and stops at that record: what
// `status` needs, in a few blocks whatever the size of the log.
func Last(path string) (*Record, error) {
	var last *Record
	var skipped int
	err := scan(path, func(r Record) bool {
		if r.Kind == KindApply {
			last = &r
			return false
		}
		return true
	}, &skipped)
	return last, err
}

// scan calls f with each record of the log, newest first, the current
// file's then the rotated one's, until f returns false.
func scan(path string, f func(Record) bool, skipped *int) error {
	for _, p := range []string{path, Rotated(path)} {
		more, err := scanFile(p, f, skipped)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// logFile is what scanning needs of an open log; tests count its reads.
type logFile interface {
	io.ReaderAt
	io.Closer
	Stat() (fs.FileInfo, error)
}

var openLog = func(path string) (logFile, error) { return os.Open(path) }

func scanFile(path string, f func(Record) bool, skipped *int) (bool, error) {
	fh, err := openLog(path)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("history: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return false, fmt.Errorf("history: %w", err)
	}
	more, err := scanBackwards(fh, fi.Size(), f, skipped)
	if err != nil {
		return false, fmt.Errorf("history: %s: %w", path, err)
	}
	return more, nil
}

// blockSize is how much is read at a time from the end of the log.
const blockSize = 64 << 10

// maxLine bounds one line: a longer one is no record of ours (the old
// unbounded output is the reason for the bound) and is skipped without
// being held in memory.
const maxLine = 16 << 20

// scanBackwards reads r[0:size] from its end in blocks and calls f with
// each line's record, last line first, until f returns false (then it
// returns false) or the start is reached. A line that spans blocks is kept
// as its pieces and joined once, so a long line costs its length, not its
// length squared.
func scanBackwards(r io.ReaderAt, size int64, f func(Record) bool, skipped *int) (bool, error) {
	var (
		parts   [][]byte // the pieces of the current line read so far, last piece first
		partLen int
		long    bool // the current line passed maxLine: skip it
	)
	// line ends the current line at seg, its first piece, and passes it on.
	line := func(seg []byte) bool {
		defer func() { parts, partLen, long = parts[:0], 0, false }()
		if long {
			*skipped++
			return true
		}
		l := seg
		if len(parts) > 0 {
			l = make([]byte, 0, len(seg)+partLen)
			l = append(l, seg...)
			for i := len(parts) - 1; i >= 0; i-- {
				l = append(l, parts[i]...)
			}
		}
		if len(bytes.TrimSpace(l)) == 0 {
			return true
		}
		var rec Record
		if err := json.Unmarshal(l, &rec); err != nil {
			*skipped++
			return true
		}
		return f(rec)
	}
	for end := size; end > 0; {
		n := min(int64(blockSize), end)
		end -= n
		// A fresh block each time: parts keep pointing into the old ones.
		block := make([]byte, n)
		if _, err := r.ReadAt(block, end); err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		j := len(block)
		for {
			i := bytes.LastIndexByte(block[:j], '\n')
			if i < 0 {
				break
			}
			if !line(block[i+1 : j]) {
				return false, nil
			}
			j = i
		}
		switch {
		case j == 0 || long:
		case partLen+j > maxLine:
			long, parts, partLen = true, parts[:0], 0
		default:
			parts, partLen = append(parts, block[:j]), partLen+j
		}
	}
	return line(nil), nil
}

const revertSuffix = "-revert"

// RevertID is the apply id of the revert that apply id ran.
func RevertID(id string) string { return id + revertSuffix }

// Apply is an apply's record with the records of its steps, oldest first.
// In JSON the apply's fields come first, then "steps".
type Apply struct {
	Record
	Steps []Record `json:"steps,omitempty"`
}

// Applies returns the last n applies of the log (all of them when n <= 0),
// newest first, and with steps the records of each one's steps. It reads
// the log backwards from its end (see ReadTail) and stops at the first
// record older than the n-th apply and its steps: what it reads is
// bounded by the applies it returns, not by the size of the log.
//
// An apply's steps are written before its own record, which is written
// last, when it ends. Steps whose apply has no record — an apply still
// running, or one killed before it could write it — are returned as an
// apply of their own with Result ResultUnfinished, its time that of its
// last step and its duration the sum of theirs: a killed apply is not
// hidden from an audit.
func Applies(path string, n int, steps bool) (applies []Apply, skipped int, err error) {
	index := map[string]int{} // apply id -> position in applies
	full := func() bool { return n > 0 && len(applies) >= n }
	// A revert runs inside its apply: its record lies between the apply's
	// record and the apply's steps. Past the last apply wanted, its revert
	// is passed over to reach those steps.
	passed := map[string]bool{}
	err = scan(path, func(r Record) bool {
		if passed[r.ApplyID] {
			return true
		}
		if r.Kind == KindApply {
			if full() {
				parent, ok := strings.CutSuffix(r.ApplyID, revertSuffix)
				if _, collected := index[parent]; ok && collected {
					passed[r.ApplyID] = true
					return true
				}
				return false
			}
			if _, dup := index[r.ApplyID]; !dup {
				index[r.ApplyID] = len(applies)
			}
			applies = append(applies, Apply{Record: r})
			return true
		}
		i, ok := index[r.ApplyID]
		if !ok {
			if full() {
				return false
			}
			i = len(applies)
			index[r.ApplyID] = i
			applies = append(applies, Apply{Record: Record{Time: r.Time, Kind: KindApply, ApplyID: r.ApplyID,
				Trigger: r.Trigger, Result: ResultUnfinished}})
		}
		a := &applies[i]
		if a.Result == ResultUnfinished {
			a.Duration += r.Duration
		}
		if steps {
			a.Steps = append(a.Steps, r)
		}
		return true
	}, &skipped)
	// Steps were collected newest first.
	for _, a := range applies {
		slices.Reverse(a.Steps)
	}
	return applies, skipped, err
}
