package history

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func rec(kind, id string) Record {
	return Record{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Kind: kind, ApplyID: id, Result: ResultOK}
}

func ids(recs []Record) string {
	var s []string
	for _, r := range recs {
		s = append(s, r.ApplyID)
	}
	return strings.Join(s, " ")
}

func TestAppendRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	line := len(mustLine(t, rec(KindApply, "a00"))) // every id has the same length
	max := int64(3 * line)                          // three lines a file
	for i := range 8 {
		if err := appendMax(path, rec(KindApply, fmt.Sprintf("a%02d", i)), max); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() > max {
			t.Fatalf("after %d appends the log is %v, %v; want at most %d bytes", i+1, fi.Size(), err, max)
		}
	}
	// 8 lines: a00-a02 rotated away and replaced, a03-a05 in .1, a06-a07 current.
	if got, _, err := ReadTail(path, 0); err != nil || ids(got) != "a03 a04 a05 a06 a07" {
		t.Errorf("ReadTail(all) = %q, %v; want the rotated file then the current one", ids(got), err)
	}
	for _, tt := range []struct {
		n    int
		want string
	}{{1, "a07"}, {2, "a06 a07"}, {4, "a04 a05 a06 a07"}, {100, "a03 a04 a05 a06 a07"}} {
		if got, _, err := ReadTail(path, tt.n); err != nil || ids(got) != tt.want {
			t.Errorf("ReadTail(%d) = %q, %v; want %q", tt.n, ids(got), err, tt.want)
		}
	}
	if _, err := os.Stat(path + ".2"); err == nil {
		t.Error("a second rotated file was kept")
	}
}

func mustLine(t *testing.T, r Record) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "h")
	if err := Append(path, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLastFallsBackToRotated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "history.jsonl")
	for _, r := range []Record{rec(KindStep, "s1"), rec(KindApply, "old"), rec(KindStep, "s2")} {
		if err := Append(Rotated(path), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, []byte(`{"kind":"step","apply_id":"s3"}`+"\n"+"torn {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	last, err := Last(path)
	if err != nil || last == nil || last.ApplyID != "old" {
		t.Fatalf("Last = %+v, %v; want the apply in the rotated file", last, err)
	}
	if last, err := Last(filepath.Join(dir, "none")); last != nil || err != nil {
		t.Errorf("Last of no log = %+v, %v; want nil, nil", last, err)
	}
	recs, skipped, err := ReadTail(path, 0)
	if err != nil || ids(recs) != "s1 old s2 s3" || skipped != 1 {
		t.Errorf("ReadTail = %q, skipped %d, %v; want s1 old s2 s3 and the torn line skipped", ids(recs), skipped, err)
	}
}

// countingFile counts the bytes read from the log.
type countingFile struct {
	*os.File
	n *atomic.Int64
}

func (f countingFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	f.n.Add(int64(n))
	return n, err
}

// TestLastReadsOnlyTheTail: a 200 MB log, as an older version left it
// (status then took 4 s and 712 MB), is read from its end: Last and a
// short ReadTail read a few blocks, not the file. The file is sparse: its
// first 200 MB are a hole, then the last records.
func TestLastReadsOnlyTheTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(200 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := appendMax(path, rec(KindStep, "s0"), 1<<40); err != nil {
		t.Fatal(err)
	}
	if err := appendMax(path, rec(KindApply, "last"), 1<<40); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := appendMax(path, rec(KindStep, fmt.Sprintf("s%d", i+1)), 1<<40); err != nil {
			t.Fatal(err)
		}
	}
	var read atomic.Int64
	defer func(old func(string) (logFile, error)) { openLog = old }(openLog)
	openLog = func(p string) (logFile, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		return countingFile{f, &read}, nil
	}
	last, err := Last(path)
	if err != nil || last == nil || last.ApplyID != "last" {
		t.Fatalf("Last = %+v, %v", last, err)
	}
	if read.Load() > 2*blockSize {
		t.Errorf("Last read %d bytes of a 200 MB log; want at most %d", read.Load(), 2*blockSize)
	}
	read.Store(0)
	recs, _, err := ReadTail(path, 10)
	if err != nil || len(recs) != 10 || recs[9].ApplyID != "s50" {
		t.Fatalf("ReadTail(10) = %q, %v", ids(recs), err)
	}
	if read.Load() > 2*blockSize {
		t.Errorf("ReadTail(10) read %d bytes of a 200 MB log; want at most %d", read.Load(), 2*blockSize)
	}
}

// TestLongLineSkipped: a line longer than any record (unbounded output
// from an older version) is skipped, not held.
func TestLongLineSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	if err := appendMax(path, rec(KindApply, "before"), 1<<40); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"kind":"apply","apply_id":"huge","output":"` + strings.Repeat("x", maxLine+blockSize) + "\"}\n")
	f.Close()
	if err := appendMax(path, rec(KindStep, "after"), 1<<40); err != nil {
		t.Fatal(err)
	}
	recs, skipped, err := ReadTail(path, 0)
	if err != nil || ids(recs) != "before after" || skipped != 1 {
		t.Errorf("ReadTail = %q, skipped %d, %v; want the long line skipped", ids(recs), skipped, err)
	}
}

func TestAppendCleans(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	r := rec(KindStep, "a1")
	r.Step = "build \x1b[31mred\x1b[0m"
	r.Error = "clone https://deploy:t0ken@example.com/app.git: " + strings.Repeat("e", 5000) + "\x07end"
	r.Output = strings.Repeat("line\n", 2000) + "\x1b]0;title\x07\x1b[2Jfinal\r\n"
	if err := Append(path, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`\u001b`, `\u0007`, `\r`, "t0ken"} {
		if strings.Contains(string(b), bad) {
			t.Errorf("the stored line has %q", bad)
		}
	}
	got, _, err := ReadTail(path, 1)
	if err != nil || len(got) != 1 {
		t.Fatal(got, err)
	}
	g := got[0]
	if g.Step != "build red" || len(g.Error) > MaxError || len(g.Output) > MaxOutput ||
		!strings.HasPrefix(g.Error, "clone https://deploy:xxxxx@example.com/app.git") || !strings.HasSuffix(g.Error, "end") ||
		!strings.HasSuffix(g.Output, "line\nfinal\n") {
		t.Errorf("stored record: step %q, error %d bytes %q…, output %d bytes …%q", g.Step, len(g.Error), g.Error[:50], len(g.Output), g.Output[len(g.Output)-20:])
	}
}

var _ logFile = (*os.File)(nil)

func step(id string) Record { return rec(KindStep, id) }

// applyIDs lists the applies as "id:result[step ids…]".
func applyIDs(as []Apply) string {
	var s []string
	for _, a := range as {
		x := a.ApplyID
		if a.Result == ResultUnfinished {
			x += ":unfinished"
		}
		if len(a.Steps) > 0 {
			x += "[" + fmt.Sprint(len(a.Steps)) + " " + a.Steps[0].Step + ".." + a.Steps[len(a.Steps)-1].Step + "]"
		}
		s = append(s, x)
	}
	return strings.Join(s, " ")
}

// TestApplies: applies newest first, --limit counting applies (not
// lines), each with its own steps in order — also across the rotated
// file, also a revert's under its own id — and the steps of an apply
// killed before its record shown as an unfinished apply.
func TestApplies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	named := func(r Record, name string) Record { r.Step = name; return r }
	lines := []struct {
		r       Record
		rotated bool
	}{
		{rec(KindApply, "a1"), true},
		{named(step("a2"), "fetch"), true},
		{named(step("a2"), "build"), true},
		{rec(KindApply, "a2"), false},       // its steps in the rotated file
		{named(step("k3"), "fetch"), false}, // killed: no apply record
		{named(step("k3"), "create"), false},
		{named(step("a4"), "switch"), false},
		{named(step("a4"), "health"), false},
		{named(step("a4-revert"), "switch back"), false},
		{rec(KindApply, "a4-revert"), false},
		{rec(KindApply, "a4"), false},
		{rec(KindApply, "a5"), false}, // no changes: no steps
	}
	for _, l := range lines {
		p := path
		if l.rotated {
			p = Rotated(path)
		}
		if err := Append(p, l.r); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		n     int
		steps bool
		want  string
	}{
		{0, false, "a5 a4 a4-revert k3:unfinished a2 a1"},
		{0, true, "a5 a4[2 switch..health] a4-revert[1 switch back..switch back] k3:unfinished[2 fetch..create] a2[2 fetch..build] a1"},
		{1, true, "a5"},
		{2, true, "a5 a4[2 switch..health]"},
		{4, true, "a5 a4[2 switch..health] a4-revert[1 switch back..switch back] k3:unfinished[2 fetch..create]"},
		{5, true, "a5 a4[2 switch..health] a4-revert[1 switch back..switch back] k3:unfinished[2 fetch..create] a2[2 fetch..build]"},
		{5, false, "a5 a4 a4-revert k3:unfinished a2"},
		{100, false, "a5 a4 a4-revert k3:unfinished a2 a1"},
	} {
		got, skipped, err := Applies(path, tt.n, tt.steps)
		if err != nil || skipped != 0 || applyIDs(got) != tt.want {
			t.Errorf("Applies(%d, steps %v) = %q, %d skipped, %v\nwant %q", tt.n, tt.steps, applyIDs(got), skipped, err, tt.want)
		}
	}
	got, _, _ := Applies(path, 0, false)
	if k := got[3]; k.Duration != 2*rec(KindStep, "").Duration || k.Trigger != "" || k.Kind != KindApply {
		t.Errorf("unfinished apply: %+v", k)
	}
}

// TestOldRecordsRead: a log an older version wrote (no user, host, from
// or to; a revert's steps under the apply's id) reads, the new fields
// empty.
func TestOldRecordsRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	old := `{"time":"2026-01-01T00:00:00Z","kind":"step","apply_id":"x","trigger":"cli","commit":"c2","release":"r2","step":"build deps","result":"ok","duration_s":1}
{"time":"2026-01-01T00:00:01Z","kind":"step","apply_id":"x","trigger":"cli","commit":"c1","release":"r1","step":"switch current -> releases/r1","result":"ok","duration_s":1}
{"time":"2026-01-01T00:00:02Z","kind":"apply","apply_id":"x-revert","trigger":"revert","commit":"c1","release":"r1","result":"ok","duration_s":1}
{"time":"2026-01-01T00:00:03Z","kind":"apply","apply_id":"x","trigger":"cli","commit":"c2","release":"r2","result":"failed","duration_s":3,"error":"boom"}
`
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	got, skipped, err := Applies(path, 0, true)
	if err != nil || skipped != 0 || len(got) != 2 {
		t.Fatalf("Applies = %+v, %d, %v", got, skipped, err)
	}
	x := got[0]
	if x.ApplyID != "x" || x.Release != "r2" || x.Error != "boom" || x.User != "" || x.From != nil || x.To != nil || len(x.Steps) != 2 || x.Steps[0].Step != "build deps" {
		t.Errorf("old apply read as %+v", x)
	}
	// The limit stops after the apply's steps, past its revert's record.
	if got, _, err := Applies(path, 1, true); err != nil || applyIDs(got) != "x[2 build deps..switch current -> releases/r1]" {
		t.Errorf("Applies(1) = %q, %v", applyIDs(got), err)
	}
}

// TestAppliesReadsOnlyTheTail: the newest applies of a 200 MB log, with
// their steps, are read from its end, whatever is before them.
func TestAppliesReadsOnlyTheTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(200 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for i := range 30 {
		for range 5 {
			if err := appendMax(path, step(fmt.Sprintf("a%02d", i)), 1<<40); err != nil {
				t.Fatal(err)
			}
		}
		if err := appendMax(path, rec(KindApply, fmt.Sprintf("a%02d", i)), 1<<40); err != nil {
			t.Fatal(err)
		}
	}
	var read atomic.Int64
	defer func(old func(string) (logFile, error)) { openLog = old }(openLog)
	openLog = func(p string) (logFile, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		return countingFile{f, &read}, nil
	}
	got, _, err := Applies(path, 20, true)
	if err != nil || len(got) != 20 || got[0].ApplyID != "a29" || got[19].ApplyID != "a10" || len(got[19].Steps) != 5 {
		t.Fatalf("Applies(20) = %q, %v", applyIDs(got), err)
	}
	if read.Load() > 2*blockSize {
		t.Errorf("Applies(20) read %d bytes of a 200 MB log; want at most %d", read.Load(), 2*blockSize)
	}
}

// BenchmarkApplies reads the newest 20 applies with their steps from a
// full log (MaxBytes of applies of 8 steps each).
func BenchmarkApplies(b *testing.B) {
	path := filepath.Join(b.TempDir(), "history.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	enc := json.NewEncoder(f) // no fsync a line: a fast setup
	for i := 0; ; i++ {
		id := fmt.Sprintf("20260101T000000Z-%06x", i)
		for range 8 {
			r := step(id)
			r.Step, r.Release, r.Commit = "build deps", "20260101T000000Z-0123abcd", strings.Repeat("c", 40)
			enc.Encode(r)
		}
		enc.Encode(rec(KindApply, id))
		if fi, _ := f.Stat(); fi.Size() > MaxBytes {
			break
		}
	}
	f.Close()
	b.ResetTimer()
	for b.Loop() {
		if got, _, err := Applies(path, 20, true); err != nil || len(got) != 20 {
			b.Fatal(len(got), err)
		}
	}
}
