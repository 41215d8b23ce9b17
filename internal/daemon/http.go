package daemon

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Metrics are the daemon's Prometheus metrics, in their own registry.
type Metrics struct {
	Registry    *prometheus.Registry
	runs        *prometheus.CounterVec
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
	releaseInfo *prometheus.GaugeVec
	failures    *prometheus.CounterVec
	blocked     prometheus.Gauge
	inSync      prometheus.Gauge
}

// NewMetrics registers the metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
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
	}
	m.Registry.MustRegister(m.runs, m.duration, m.lastSuccess, m.releaseInfo, m.failures, m.blocked, m.inSync,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) observe(r *Run) {
	// A run's trigger may be several joined: count it under the first.
	trigger, _, _ := strings.Cut(r.Trigger, ",")
	m.runs.WithLabelValues(r.Result, trigger).Inc()
	m.duration.Observe(r.Duration)
	if r.ErrorKind != "" {
		m.failures.WithLabelValues(r.ErrorKind).Inc()
	} else {
		m.lastSuccess.Set(float64(r.Started.Add(time.Duration(r.Duration * float64(time.Second))).Unix()))
	}
}

// release names the release the link points at; one series at most, so
// the labels' cardinality stays bounded. No link, no series.
func (m *Metrics) release(name, commit string) {
	m.releaseInfo.Reset()
	if name != "" {
		m.releaseInfo.WithLabelValues(name, commit).Set(1)
	}
}

func (m *Metrics) state(blocked, inSync bool) {
	m.blocked.Set(b2f(blocked))
	m.inSync.Set(b2f(inSync))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Server is the daemon's HTTP interface.
type Server struct {
	Daemon *Daemon
	// Status returns the host's status report (reconciler status --json).
	Status func(ctx context.Context) (any, error)
	// Secret signs webhook bodies; nil disables the webhook.
	Secret []byte
	Log    *zap.Logger
}

// maxHookBody bounds a webhook body.
const maxHookBody = 1 << 20

// Handler routes the endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		// Not ready is a state, not a failure of the server: 503 with the
		// reason in one line, for a load balancer or a person with curl.
		if ok, why := s.Daemon.Ready(); !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		out := map[string]any{"last_run": s.Daemon.Last()}
		if s.Status != nil && s.Daemon.Desired() != nil {
			st, err := s.Status(r.Context())
			if err != nil {
				out["status_error"] = err.Error()
			} else {
				out["status"] = st
			}
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Daemon.opts.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /hooks/reconcile", s.hook)
	return mux
}

// hook triggers a run when the body carries a valid GitHub-style
// X-Hub-Signature-256: "sha256=" + hex(HMAC-SHA256(secret, body)).
func (s *Server) hook(w http.ResponseWriter, r *http.Request) {
	if s.Secret == nil {
		http.Error(w, "webhook disabled: start with --webhook-secret-file", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHookBody+1))
	if err != nil || len(body) > maxHookBody {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	sig, ok := strings.CutPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256=")
	got, err := hex.DecodeString(sig)
	mac := hmac.New(sha256.New, s.Secret)
	mac.Write(body)
	if !ok || err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		s.Log.Warn("webhook rejected: bad or missing signature", zap.String("remote", r.RemoteAddr))
		http.Error(w, "bad or missing X-Hub-Signature-256", http.StatusUnauthorized)
		return
	}
	s.Daemon.Trigger("webhook")
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, "reconcile triggered\n")
}

// Serve listens on addr until ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}
