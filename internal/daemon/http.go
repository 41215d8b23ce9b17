package daemon

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/netutil"

	"github.com/reconciler-dev/reconciler/internal/scrub"
)

// Server is the daemon's HTTP interface.
type Server struct {
	Daemon *Daemon
	// Status returns the host's status report (reconciler status --json).
	Status func(ctx context.Context) (any, error)
	// Fleet returns the host's part in its fleet and its group's rollout
	// (fleet.HostReport), shown as "fleet"; nil, or a nil answer, for a
	// host without fleet:.
	Fleet func(ctx context.Context) any
	// Secret signs webhook bodies; nil disables the webhook.
	Secret []byte
	Log    *zap.Logger
	// Limits of the server; zero means the default (see Serve).
	Limits Limits
	// Now is the clock webhook deliveries are remembered by; nil is
	// time.Now.
	Now func() time.Time

	mu         sync.Mutex
	deliveries map[string]time.Time // X-GitHub-Delivery ids seen, and when
	order      []delivery           // the same, oldest first
}

// Limits bound what clients can hold of the server: the listen address
// may be reachable by anyone who can reach the host.
type Limits struct {
	ReadHeaderTimeout time.Duration // to read a request's headers: 10s
	ReadTimeout       time.Duration // to read a whole request, body included: 30s
	WriteTimeout      time.Duration // to answer, from the end of the headers: 60s (a /status observes the host)
	IdleTimeout       time.Duration // a keep-alive connection between requests: 60s
	MaxHeaderBytes    int           // 16 KB
	MaxConns          int           // connections open at once: 64
}

func (l Limits) withDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.ReadTimeout, 30*time.Second)
	def(&l.WriteTimeout, 60*time.Second)
	def(&l.IdleTimeout, 60*time.Second)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 16 << 10
	}
	if l.MaxConns <= 0 {
		l.MaxConns = 64
	}
	return l
}

// maxBody bounds every request body: only the webhook reads one.
const maxBody = 1 << 20

// Deliveries are remembered this long, and at most this many: GitHub
// redelivers by hand or on a timeout within minutes, and an attacker who
// captured a signed body can replay it at will; the bound keeps the
// memory of a flood of distinct ids fixed.
const (
	deliveryWindow = 10 * time.Minute
	maxDeliveries  = 10000
)

type delivery struct {
	id string
	at time.Time
}

// Handler routes the endpoints. Every request body is limited to maxBody.
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
		if s.Fleet != nil {
			if f := s.Fleet(r.Context()); f != nil {
				out["fleet"] = f
			}
		}
		b, err := redactJSON(out)
		if err != nil {
			s.Log.Error("status not encoded", zap.Error(err))
			http.Error(w, "status not encoded", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	mux.Handle("GET /metrics", s.Daemon.opts.Metrics)
	mux.HandleFunc("POST /hooks/reconcile", s.hook)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		mux.ServeHTTP(w, r)
	})
}

// redactJSON encodes v with the password of every URL in its strings
// hidden: the status carries errors and command output (a fetch of
// https://user:token@..., a supervisorctl answer naming its serverurl),
// and /status is served to whoever reaches the port. Walking the decoded
// JSON covers every field of every type, present and future.
func redactJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var tree any
	if err := json.Unmarshal(b, &tree); err != nil {
		return nil, err
	}
	var walk func(any) any
	walk = func(x any) any {
		switch x := x.(type) {
		case string:
			return scrub.URLs(x)
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
		case []any:
			for i, e := range x {
				x[i] = walk(e)
			}
		}
		return x
	}
	b, err = json.MarshalIndent(walk(tree), "", "  ")
	return append(b, '\n'), err
}

// hook triggers a run when the body carries a valid GitHub-style
// X-Hub-Signature-256: "sha256=" + hex(HMAC-SHA256(secret, body)).
func (s *Server) hook(w http.ResponseWriter, r *http.Request) {
	if s.Secret == nil {
		http.Error(w, "webhook disabled: start with --webhook-secret-file", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		http.Error(w, fmt.Sprintf("body larger than %d bytes", tooBig.Limit), http.StatusRequestEntityTooLarge)
		return
	}
	if err != nil {
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
	// Checked after the signature: an unsigned request must not fill the
	// memory of ids, nor silence a real delivery by sending its id first.
	if id := r.Header.Get("X-GitHub-Delivery"); id != "" && s.seen(id) {
		s.Log.Info("webhook ignored: duplicate delivery", zap.String("delivery", id), zap.String("remote", r.RemoteAddr))
		io.WriteString(w, "duplicate delivery, ignored\n")
		return
	}
	s.Daemon.Trigger("webhook")
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, "reconcile triggered\n")
}

// seen reports whether the delivery id was seen in the last
// deliveryWindow, and remembers it if not. Ids expire in arrival order;
// past maxDeliveries the oldest is forgotten early.
func (s *Server) seen(id string) bool {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deliveries == nil {
		s.deliveries = map[string]time.Time{}
	}
	for len(s.order) > 0 && (now.Sub(s.order[0].at) >= deliveryWindow || len(s.order) >= maxDeliveries) {
		old := s.order[0]
		s.order = s.order[1:]
		if at, ok := s.deliveries[old.id]; ok && at.Equal(old.at) {
			delete(s.deliveries, old.id)
		}
	}
	if at, ok := s.deliveries[id]; ok && now.Sub(at) < deliveryWindow {
		return true
	}
	s.deliveries[id] = now
	s.order = append(s.order, delivery{id, now})
	return false
}

// Serve serves on ln until ctx is done, within s.Limits: a client that
// sends slowly, sends too much or opens too many connections is cut off,
// so that it holds neither memory nor file descriptors for long.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	l := s.Limits.withDefaults()
	log := s.Log
	if log == nil {
		log = zap.NewNop()
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	// Connections past MaxConns wait in the kernel's backlog, not in
	// goroutines and buffers of ours.
	ln = netutil.LimitListener(ln, l.MaxConns)
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
