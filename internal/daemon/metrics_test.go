package daemon

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// refMetrics is what the daemon served /metrics with until the metrics were
// written by hand: client_golang, its registry, Go and process collectors.
// It stays here as the reference the hand-written output must match (a
// test's imports are not linked into the binary).
type refMetrics struct {
	registry    *prometheus.Registry
	runs        *prometheus.CounterVec
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
	releaseInfo *prometheus.GaugeVec
	failures    *prometheus.CounterVec
	blocked     prometheus.Gauge
	inSync      prometheus.Gauge
	suspended   prometheus.Gauge
}

func newRefMetrics() *refMetrics {
	m := &refMetrics{
		registry: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_runs_total",
			Help: "Reconcile runs by result and trigger."}, []string{"result", "trigger"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reconciler_run_duration_seconds",
			Help: "Duration of reconcile runs.", Buckets: []float64{.01, .05, .1, .5, 1, 5, 15, 60, 300, 1200}}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reconciler_last_success_timestamp_seconds",
			Help: "When a run last succeeded, as a Unix time."}),
		releaseInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reconciler_release_info",
			Help: "The release the link points at after the last run, read from the host (value 1)."}, []string{"release", "commit"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_failures_total",
			Help: "Failed runs by kind: bad-desired, transient, terminal."}, []string{"kind"}),
		blocked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reconciler_target_blocked",
			Help: "1 while the desired target failed and waits for a person (a new commit, a fixed build, apply --retry)."}),
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reconciler_in_sync",
			Help: "1 when the last run left the host at the desired target."}),
		suspended: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reconciler_suspended",
			Help: "1 while deploys are suspended (reconciler suspend, or rollback): runs only report."}),
	}
	m.registry.MustRegister(m.runs, m.duration, m.lastSuccess, m.releaseInfo, m.failures, m.blocked, m.inSync, m.suspended,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *refMetrics) observe(r *Run) {
	trigger, _, _ := strings.Cut(r.Trigger, ",")
	m.runs.WithLabelValues(r.Result, trigger).Inc()
	m.duration.Observe(r.Duration)
	if r.ErrorKind != "" {
		m.failures.WithLabelValues(r.ErrorKind).Inc()
	} else {
		m.lastSuccess.Set(float64(r.Started.Add(time.Duration(r.Duration * float64(time.Second))).Unix()))
	}
}

func (m *refMetrics) release(name, commit string) {
	m.releaseInfo.Reset()
	if name != "" {
		m.releaseInfo.WithLabelValues(name, commit).Set(1)
	}
}

func (m *refMetrics) state(blocked, inSync, suspended bool) {
	m.blocked.Set(b2f(blocked))
	m.inSync.Set(b2f(inSync))
	m.suspended.Set(b2f(suspended))
}

// scrape GETs /metrics from h as Prometheus does, gzip accepted.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1")
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	body := io.Reader(resp.Body)
	if resp.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		body = gz
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Get("Content-Type") + "\n" + string(b)
}

// linesOf keeps the content type and the lines (HELP, TYPE and samples)
// of the families whose names start with prefix.
func linesOf(text, prefix string) string {
	lines := strings.Split(text, "\n")
	out := []string{lines[0]}
	for _, l := range lines[1:] {
		name := strings.TrimPrefix(strings.TrimPrefix(l, "# HELP "), "# TYPE ")
		if strings.HasPrefix(name, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// recorder is what the daemon tells its metrics.
type recorder interface {
	observe(*Run)
	release(name, commit string)
	state(blocked, inSync, suspended bool)
}

var _, _ recorder = (*Metrics)(nil), (*refMetrics)(nil)

// The reconciler's own metrics are byte for byte what client_golang wrote,
// fed the same runs: names, help, types, label names, order, escaping,
// histogram buckets, and families left out while empty.
func TestMetricsAsClientGolang(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	type event func(m recorder)
	run := func(r Run) event {
		return func(m recorder) {
			m.observe(&r)
		}
	}
	link := func(name, commit string) event {
		return func(m recorder) {
			m.release(name, commit)
		}
	}
	state := func(blocked, inSync bool, suspended ...bool) event {
		return func(m recorder) {
			m.state(blocked, inSync, len(suspended) > 0)
		}
	}
	for _, tt := range []struct {
		name   string
		events []event
	}{
		{"no run yet", nil},
		{"one good run", []event{
			run(Run{Trigger: "startup", Started: t0, Duration: 0.2031, Result: "ok"}),
			link("20261126T070000Z-9ca550ed", "9ca550edfbbff54a25d8804d1778dd6165e5cf85"),
			state(false, true),
		}},
		{"failures of every kind, joined triggers, bucket bounds", []event{
			run(Run{Trigger: "startup", Started: t0, Duration: 0.5, Result: "ok"}),
			run(Run{Trigger: "file,cron", Started: t0.Add(time.Minute), Duration: 0.01, Result: "failed", ErrorKind: KindBadDesired}),
			run(Run{Trigger: "commit", Started: t0.Add(2 * time.Minute), Duration: 1200, Result: "failed", ErrorKind: KindTransient}),
			run(Run{Trigger: "webhook", Started: t0.Add(3 * time.Minute), Duration: 5000, Result: "failed", ErrorKind: KindTerminal}),
			run(Run{Trigger: "cron", Started: t0.Add(4 * time.Minute), Duration: 0, Result: "no-changes"}),
			run(Run{Trigger: "cron", Started: t0.Add(5 * time.Minute), Duration: 1e-9, Result: "no-changes"}),
			link("20261126T070000Z-9ca550ed", "9ca550edfbbff54a25d8804d1778dd6165e5cf85"),
			link("20261126T070400Z-1234abcd", "1234abcd"),
			state(true, false),
		}},
		{"the link gone", []event{
			link("20261126T070000Z-9ca550ed", "9ca550edfbbff54a25d8804d1778dd6165e5cf85"),
			link("", ""),
			state(false, false),
		}},
		{"suspended", []event{
			run(Run{Trigger: "cron", Started: t0, Duration: 0.01, Result: "suspended"}),
			state(false, false, true),
		}},
		{"label values escaped", []event{
			run(Run{Trigger: "we\"ird\\trigger\nname,cron", Started: t0, Duration: 3, Result: "ok"}),
			link("a\"b", "c\\d\ne"),
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ours, ref := NewMetrics(), newRefMetrics()
			for _, e := range tt.events {
				e(ours)
				e(ref)
			}
			want := linesOf(scrape(t, promhttp.HandlerFor(ref.registry, promhttp.HandlerOpts{})), "reconciler_")
			got := linesOf(scrape(t, ours), "reconciler_")
			if got != want {
				t.Errorf("/metrics, reconciler's own:\n%s\nclient_golang wrote:\n%s", got, want)
			}
		})
	}
}

// The Go and process metrics have client_golang's names, types, help and
// labels; the values that do not move while the test runs are equal.
func TestRuntimeMetricsAsClientGolang(t *testing.T) {
	parse := func(h http.Handler) map[string]*dto.MetricFamily {
		text := scrape(t, h)
		_, body, _ := strings.Cut(text, "\n")
		p := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("the exposition does not parse: %v\n%s", err, body)
		}
		return fams
	}
	want := parse(promhttp.HandlerFor(newRefMetrics().registry, promhttp.HandlerOpts{}))
	got := parse(NewMetrics())
	names := func(fams map[string]*dto.MetricFamily) []string {
		var out []string
		for n := range fams {
			if !strings.HasPrefix(n, "reconciler_") {
				out = append(out, n)
			}
		}
		slices.Sort(out)
		return out
	}
	if g, w := names(got), names(want); !slices.Equal(g, w) {
		t.Fatalf("families:\n%q\nclient_golang:\n%q", g, w)
	}
	labels := func(f *dto.MetricFamily) []string {
		var out []string
		for _, m := range f.Metric {
			var l []string
			for _, p := range m.Label {
				l = append(l, p.GetName()+"="+p.GetValue())
			}
			out = append(out, strings.Join(l, ","))
		}
		return out
	}
	for _, n := range names(want) {
		g, w := got[n], want[n]
		if g.GetType() != w.GetType() || g.GetHelp() != w.GetHelp() || !slices.Equal(labels(g), labels(w)) {
			t.Errorf("%s: %s %q %q; client_golang: %s %q %q", n, g.GetType(), g.GetHelp(), labels(g), w.GetType(), w.GetHelp(), labels(w))
		}
	}
	value := func(f *dto.MetricFamily) float64 {
		m := f.Metric[0]
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		}
		return -1
	}
	for _, n := range []string{"go_gc_gogc_percent", "go_gc_gomemlimit_bytes", "go_info", "go_sched_gomaxprocs_threads",
		"process_max_fds", "process_virtual_memory_max_bytes", "process_start_time_seconds"} {
		if g, w := value(got[n]), value(want[n]); g != w {
			t.Errorf("%s = %v; client_golang: %v", n, g, w)
		}
	}
	// The others move between the two scrapes (ours is the later one),
	// but not by much: a wrong unit or field would be far off.
	for _, tt := range []struct {
		name   string
		lo, hi func(ref float64) float64
	}{
		{"process_cpu_seconds_total", func(r float64) float64 { return r }, func(r float64) float64 { return r + 1 }},
		{"process_resident_memory_bytes", func(r float64) float64 { return r / 2 }, func(r float64) float64 { return r * 2 }},
		{"process_virtual_memory_bytes", func(r float64) float64 { return r / 2 }, func(r float64) float64 { return r * 2 }},
		{"process_open_fds", func(r float64) float64 { return r - 20 }, func(r float64) float64 { return r + 20 }},
		{"go_threads", func(r float64) float64 { return r }, func(r float64) float64 { return r + 100 }},
		{"go_memstats_sys_bytes", func(r float64) float64 { return r / 2 }, func(r float64) float64 { return r * 2 }},
		{"go_memstats_mallocs_total", func(r float64) float64 { return r }, func(r float64) float64 { return r + 1e6 }},
		{"go_memstats_alloc_bytes_total", func(r float64) float64 { return r }, func(r float64) float64 { return r + 1e9 }},
	} {
		g, w := value(got[tt.name]), value(want[tt.name])
		if w <= 0 || g < tt.lo(w) || g > tt.hi(w) {
			t.Errorf("%s = %v; client_golang, just before: %v", tt.name, g, w)
		}
	}
	if g := value(got["go_goroutines"]); g <= 0 {
		t.Errorf("go_goroutines = %v", g)
	}
	if o, m := value(got["go_memstats_heap_objects"]), value(got["go_memstats_mallocs_total"]); o <= 0 || o > m {
		t.Errorf("go_memstats_heap_objects = %v, mallocs_total %v", o, m)
	}
}

// gogc reads GOGC as the runtime does.
func TestGOGC(t *testing.T) {
	// This process's: what runtime/metrics says.
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if got := gogc(); uint64(got) != s[0].Value.Uint64() {
		t.Errorf("gogc() = %d; runtime/metrics: %d", got, s[0].Value.Uint64())
	}
	for _, tt := range []struct {
		env  string
		want int
	}{{"", 100}, {"off", -1}, {"50", 50}, {"0", 0}, {"junk", 100}} {
		t.Setenv("GOGC", tt.env)
		if got := gogc(); got != tt.want {
			t.Errorf("GOGC=%q: %d; want %d", tt.env, got, tt.want)
		}
	}
}

// Without gzip in Accept-Encoding, the body is plain.
func TestMetricsPlain(t *testing.T) {
	rec := httptest.NewRecorder()
	NewMetrics().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Header().Get("Content-Encoding") != "" || !bytes.Contains(rec.Body.Bytes(), []byte("\nreconciler_in_sync 0\n")) {
		t.Errorf("plain /metrics: %v\n%s", rec.Header(), rec.Body)
	}
}
