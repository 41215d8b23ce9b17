package daemon

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Metrics are the daemon's metrics, served at /metrics in the Prometheus
// text exposition format, version 0.0.4.
//
// They are written here rather than with prometheus/client_golang because
// the daemon is one command of a binary whose other commands start many
// times a minute: importing client_golang registers a Go and a process
// collector in its default registry at init and links protobuf, procfs and
// expfmt, and Go has no lazy imports, so `reconciler version` and every
// `apply` paid for it (about 100 of a run's 730 page faults). The names,
// types, help texts and labels are client_golang's — metric names are a
// contract with dashboards and alerts — and metrics_test.go checks them
// against client_golang itself, fed the same runs.
type Metrics struct {
	mu          sync.Mutex
	runs        map[[2]string]float64 // by result and trigger
	buckets     []uint64              // runs per duration bucket, not cumulative; the last is +Inf
	durSum      float64
	durCount    uint64
	lastSuccess float64
	failures    map[string]float64 // by kind
	linked      []string           // commit and release of the link, nil when there is no link
	blocked     float64
	inSync      float64
	suspended   float64
}

// durationBuckets are the upper bounds of reconciler_run_duration_seconds.
var durationBuckets = [...]float64{.01, .05, .1, .5, 1, 5, 15, 60, 300, 1200}

// NewMetrics makes the metrics, all at zero.
func NewMetrics() *Metrics {
	return &Metrics{runs: map[[2]string]float64{}, failures: map[string]float64{},
		buckets: make([]uint64, len(durationBuckets)+1)}
}

func (m *Metrics) observe(r *Run) {
	// A run's trigger may be several joined: count it under the first.
	trigger, _, _ := strings.Cut(r.Trigger, ",")
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs[[2]string{r.Result, trigger}]++
	// As client_golang: a bucket's bound is inclusive.
	i, _ := slices.BinarySearch(durationBuckets[:], r.Duration)
	m.buckets[i]++
	m.durSum += r.Duration
	m.durCount++
	if r.ErrorKind != "" {
		m.failures[r.ErrorKind]++
	} else {
		m.lastSuccess = float64(r.Started.Add(time.Duration(r.Duration * float64(time.Second))).Unix())
	}
}

// release names the release the link points at; one series at most, so
// the labels' cardinality stays bounded. No link, no series.
func (m *Metrics) release(name, commit string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.linked = nil
	if name != "" {
		m.linked = []string{commit, name} // in the order of the labels' names
	}
}

func (m *Metrics) state(blocked, inSync, suspended bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blocked, m.inSync, m.suspended = b2f(blocked), b2f(inSync), b2f(suspended)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// contentType is what promhttp answered for the text format; a scraper
// that asks for OpenMetrics or protobuf falls back to it.
const contentType = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"

// ServeHTTP writes the metrics, gzipped when the client accepts it (as
// Prometheus does).
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	m.WriteTo(&buf)
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Add("Vary", "Accept-Encoding")
	if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
		w.Write(buf.Bytes())
		return
	}
	h.Set("Content-Encoding", "gzip")
	gz := gzip.NewWriter(w)
	gz.Write(buf.Bytes())
	gz.Close()
}

func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if strings.TrimSpace(coding) == "gzip" && strings.ReplaceAll(strings.TrimSpace(params), " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// WriteTo writes every metric in the text format, families sorted by name
// and series by label values, as client_golang's registry does.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	e := &expo{w: bufio.NewWriter(w)}
	writeGoMetrics(e)
	writeProcessMetrics(e)
	m.mu.Lock()
	m.write(e)
	m.mu.Unlock()
	err := e.w.Flush()
	if err == nil {
		err = e.err
	}
	return e.n, err
}

func (m *Metrics) write(e *expo) {
	e.family("reconciler_failures_total", "Failed runs by kind: bad-desired, transient, terminal.", "counter", len(m.failures))
	for _, kind := range slices.Sorted(maps.Keys(m.failures)) {
		e.sample("reconciler_failures_total", []string{"kind", kind}, m.failures[kind])
	}
	e.gauge("reconciler_in_sync", "1 when the last run left the host at the desired target.", m.inSync)
	e.gauge("reconciler_last_success_timestamp_seconds", "When a run last succeeded, as a Unix time.", m.lastSuccess)
	if m.linked != nil {
		e.family("reconciler_release_info", "The release the link points at after the last run, read from the host (value 1).", "gauge", 1)
		e.sample("reconciler_release_info", []string{"commit", m.linked[0], "release", m.linked[1]}, 1)
	}
	e.family("reconciler_run_duration_seconds", "Duration of reconcile runs.", "histogram", 1)
	var cum uint64
	for i, n := range m.buckets {
		cum += n
		le := math.Inf(1)
		if i < len(durationBuckets) {
			le = durationBuckets[i]
		}
		e.sample("reconciler_run_duration_seconds_bucket", []string{"le", formatFloat(le)}, float64(cum))
	}
	e.sample("reconciler_run_duration_seconds_sum", nil, m.durSum)
	e.sample("reconciler_run_duration_seconds_count", nil, float64(m.durCount))
	e.family("reconciler_runs_total", "Reconcile runs by result and trigger.", "counter", len(m.runs))
	keys := slices.SortedFunc(maps.Keys(m.runs), func(a, b [2]string) int { return slices.Compare(a[:], b[:]) })
	for _, k := range keys {
		e.sample("reconciler_runs_total", []string{"result", k[0], "trigger", k[1]}, m.runs[k])
	}
	e.gauge("reconciler_suspended", "1 while deploys are suspended (reconciler suspend, or rollback): runs only report.", m.suspended)
	e.gauge("reconciler_target_blocked", "1 while the desired target failed and waits for a person (a new commit, a fixed build, apply --retry).", m.blocked)
}

// writeGoMetrics writes what client_golang's Go collector did (its
// default: the base metrics and the MemStats-like go_memstats_*), from
// runtime.ReadMemStats and debug.ReadGCStats.
func writeGoMetrics(e *expo) {
	var gc debug.GCStats
	gc.PauseQuantiles = make([]time.Duration, 5)
	debug.ReadGCStats(&gc)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	e.family("go_gc_duration_seconds", "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.", "summary", 1)
	for i, q := range []string{"0", "0.25", "0.5", "0.75", "1"} {
		e.sample("go_gc_duration_seconds", []string{"quantile", q}, gc.PauseQuantiles[i].Seconds())
	}
	e.sample("go_gc_duration_seconds_sum", nil, gc.PauseTotal.Seconds())
	e.sample("go_gc_duration_seconds_count", nil, float64(gc.NumGC))
	e.gauge("go_gc_gogc_percent", "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent.", float64(gogc()))
	// A negative limit reads the limit without changing it.
	e.gauge("go_gc_gomemlimit_bytes", "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function. Sourced from /gc/gomemlimit:bytes.", float64(debug.SetMemoryLimit(-1)))
	e.gauge("go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	e.family("go_info", "Information about the Go environment.", "gauge", 1)
	e.sample("go_info", []string{"version", runtime.Version()}, 1)
	for _, s := range []struct {
		name, help, typ string
		v               uint64
	}{
		{"alloc_bytes", "Number of bytes allocated in heap and currently in use. Equals to /memory/classes/heap/objects:bytes.", "gauge", ms.Alloc},
		{"alloc_bytes_total", "Total number of bytes allocated in heap until now, even if released already. Equals to /gc/heap/allocs:bytes.", "counter", ms.TotalAlloc},
		{"buck_hash_sys_bytes", "Number of bytes used by the profiling bucket hash table. Equals to /memory/classes/profiling/buckets:bytes.", "gauge", ms.BuckHashSys},
		{"frees_total", "Total number of heap objects frees. Equals to /gc/heap/frees:objects + /gc/heap/tiny/allocs:objects.", "counter", ms.Frees},
		{"gc_sys_bytes", "Number of bytes used for garbage collection system metadata. Equals to /memory/classes/metadata/other:bytes.", "gauge", ms.GCSys},
		{"heap_alloc_bytes", "Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.", "gauge", ms.HeapAlloc},
		{"heap_idle_bytes", "Number of heap bytes waiting to be used. Equals to /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", "gauge", ms.HeapIdle},
		{"heap_inuse_bytes", "Number of heap bytes that are in use. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes", "gauge", ms.HeapInuse},
		{"heap_objects", "Number of currently allocated objects. Equals to /gc/heap/objects:objects.", "gauge", ms.HeapObjects},
		{"heap_released_bytes", "Number of heap bytes released to OS. Equals to /memory/classes/heap/released:bytes.", "gauge", ms.HeapReleased},
		{"heap_sys_bytes", "Number of heap bytes obtained from system. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes + /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", "gauge", ms.HeapSys},
	} {
		e.gauge1("go_memstats_"+s.name, s.help, s.typ, float64(s.v))
	}
	e.gauge("go_memstats_last_gc_time_seconds", "Number of seconds since 1970 of last garbage collection.", float64(gc.LastGC.UnixNano())/1e9)
	for _, s := range []struct {
		name, help, typ string
		v               uint64
	}{
		{"mallocs_total", "Total number of heap objects allocated, both live and gc-ed. Semantically a counter version for go_memstats_heap_objects gauge. Equals to /gc/heap/allocs:objects + /gc/heap/tiny/allocs:objects.", "counter", ms.Mallocs},
		{"mcache_inuse_bytes", "Number of bytes in use by mcache structures. Equals to /memory/classes/metadata/mcache/inuse:bytes.", "gauge", ms.MCacheInuse},
		{"mcache_sys_bytes", "Number of bytes used for mcache structures obtained from system. Equals to /memory/classes/metadata/mcache/inuse:bytes + /memory/classes/metadata/mcache/free:bytes.", "gauge", ms.MCacheSys},
		{"mspan_inuse_bytes", "Number of bytes in use by mspan structures. Equals to /memory/classes/metadata/mspan/inuse:bytes.", "gauge", ms.MSpanInuse},
		{"mspan_sys_bytes", "Number of bytes used for mspan structures obtained from system. Equals to /memory/classes/metadata/mspan/inuse:bytes + /memory/classes/metadata/mspan/free:bytes.", "gauge", ms.MSpanSys},
		{"next_gc_bytes", "Number of heap bytes when next garbage collection will take place. Equals to /gc/heap/goal:bytes.", "gauge", ms.NextGC},
		{"other_sys_bytes", "Number of bytes used for other system allocations. Equals to /memory/classes/other:bytes.", "gauge", ms.OtherSys},
		{"stack_inuse_bytes", "Number of bytes obtained from system for stack allocator in non-CGO environments. Equals to /memory/classes/heap/stacks:bytes.", "gauge", ms.StackInuse},
		{"stack_sys_bytes", "Number of bytes obtained from system for stack allocator. Equals to /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes.", "gauge", ms.StackSys},
		{"sys_bytes", "Number of bytes obtained from system. Equals to /memory/classes/total:byte.", "gauge", ms.Sys},
	} {
		e.gauge1("go_memstats_"+s.name, s.help, s.typ, float64(s.v))
	}
	e.gauge("go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously. Sourced from /sched/gomaxprocs:threads.", float64(runtime.GOMAXPROCS(0)))
	threads, _ := runtime.ThreadCreateProfile(nil)
	e.gauge("go_threads", "Number of OS threads created.", float64(threads))
}

// gogc is the GC percentage as the runtime reads it from $GOGC at start
// (runtime.readGOGC): nothing in the reconciler calls
// debug.SetGCPercent, the only other way to change it, and it has no
// read-only form. runtime/metrics would say it too, but its init builds
// its whole table, for every command.
func gogc() int {
	s := os.Getenv("GOGC")
	if s == "off" {
		return -1
	}
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		return int(n)
	}
	return 100
}

// userHZ is the unit of the times in /proc/<pid>/stat on every Linux
// platform procfs supports (as procfs assumes too).
const userHZ = 100

// writeProcessMetrics writes what client_golang's process collector did,
// from /proc/self. A value that can't be read is left out, as the
// collector did without ReportErrors.
func writeProcessMetrics(e *expo) {
	stat, statErr := readProcStat()
	if statErr == nil {
		e.gauge1("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", float64(stat.utime+stat.stime)/userHZ)
	}
	var nofile, as syscall.Rlimit
	limitErr := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile)
	if limitErr == nil {
		limitErr = syscall.Getrlimit(syscall.RLIMIT_AS, &as)
	}
	if limitErr == nil {
		e.gauge("process_max_fds", "Maximum number of open file descriptors.", float64(nofile.Cur))
	}
	if in, out, err := readNetstat(); err == nil {
		e.gauge1("process_network_receive_bytes_total", "Number of bytes received by the process over the network.", "counter", in)
		e.gauge1("process_network_transmit_bytes_total", "Number of bytes sent by the process over the network.", "counter", out)
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		e.gauge("process_open_fds", "Number of open file descriptors.", float64(len(fds)))
	}
	if statErr == nil {
		e.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", float64(stat.rss*int64(os.Getpagesize())))
		if btime, err := bootTime(); err == nil {
			e.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", float64(btime)+float64(stat.starttime)/userHZ)
		}
		e.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", float64(stat.vsize))
	}
	if limitErr == nil {
		e.gauge("process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes.", float64(as.Cur))
	}
}

type procStat struct {
	utime, stime, starttime, vsize uint64
	rss                            int64
}

// readProcStat reads /proc/self/stat, proc(5): the fields after the
// command, which is in parentheses and may hold anything, spaces and
// parentheses included.
func readProcStat() (procStat, error) {
	var s procStat
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return s, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, syscall.EINVAL
	}
	// f[0] is field 3 (state).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return s, syscall.EINVAL
	}
	for _, v := range []struct {
		field int
		dst   *uint64
	}{{14, &s.utime}, {15, &s.stime}, {22, &s.starttime}, {23, &s.vsize}} {
		if *v.dst, err = strconv.ParseUint(f[v.field-3], 10, 64); err != nil {
			return s, err
		}
	}
	s.rss, err = strconv.ParseInt(f[24-3], 10, 64)
	return s, err
}

// bootTime is the btime line of /proc/stat: when the system booted, in
// seconds since the epoch.
func bootTime() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, syscall.ENOENT
}

// readNetstat reads InOctets and OutOctets of the IpExt lines of
// /proc/self/net/netstat (a header line of names, then one of values).
// A missing field counts as 0, as in client_golang.
func readNetstat() (in, out float64, err error) {
	b, err := os.ReadFile("/proc/self/net/netstat")
	if err != nil {
		return 0, 0, err
	}
	var names []string
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "IpExt:")
		if !ok {
			continue
		}
		if names == nil {
			names = strings.Fields(rest)
			continue
		}
		for i, v := range strings.Fields(rest) {
			if i >= len(names) {
				break
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, 0, err
			}
			switch names[i] {
			case "InOctets":
				in = f
			case "OutOctets":
				out = f
			}
		}
		break
	}
	return in, out, nil
}

// expo writes the text exposition format; the first write error sticks.
type expo struct {
	w   *bufio.Writer
	n   int64
	err error
}

func (e *expo) str(s string) {
	if e.err != nil {
		return
	}
	n, err := e.w.WriteString(s)
	e.n += int64(n)
	e.err = err
}

// family writes the HELP and TYPE lines; a family without series is left
// out whole, as client_golang does with an empty vector.
func (e *expo) family(name, help, typ string, series int) {
	if series > 0 {
		e.str("# HELP " + name + " " + escape(help, false) + "\n# TYPE " + name + " " + typ + "\n")
	}
}

// sample writes one line; labels are name, value pairs, names sorted.
func (e *expo) sample(name string, labels []string, v float64) {
	e.str(name)
	for i := 0; i+1 < len(labels); i += 2 {
		sep := ","
		if i == 0 {
			sep = "{"
		}
		e.str(sep + labels[i] + `="` + escape(labels[i+1], true) + `"`)
	}
	if len(labels) > 0 {
		e.str("}")
	}
	e.str(" " + formatFloat(v) + "\n")
}

func (e *expo) gauge(name, help string, v float64) { e.gauge1(name, help, "gauge", v) }

// gauge1 writes a family of one series without labels.
func (e *expo) gauge1(name, help, typ string, v float64) {
	e.family(name, help, typ, 1)
	e.sample(name, nil, v)
}

// escape escapes a help text (backslash, newline) or a label value
// (double quotes too). Not a strings.Replacer in a package variable: it
// would be built at init, for every command.
func escape(s string, quote bool) string {
	if !strings.ContainsAny(s, "\\\n\"") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '"' && quote:
			b.WriteString(`\"`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// formatFloat formats as expfmt does: the shortest representation, with
// Prometheus's spellings of the infinities and NaN.
func formatFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
