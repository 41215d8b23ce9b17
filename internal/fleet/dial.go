package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

// Dial makes the etcd client of fleet: (endpoints already overridden by
// --etcd or RECONCILER_ETCD, when given). It does not wait for etcd: an
// agent starts, and repairs drift, while etcd is down.
func Dial(endpoints []string, t desired.FleetTLS, log *zap.Logger) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("fleet: no etcd endpoint: set fleet.etcd, --etcd or RECONCILER_ETCD")
	}
	cfg := clientv3.Config{
		Endpoints: endpoints,
		Logger:    log.Named("etcd"),
		// Dead connections are noticed by keepalive probes, not only by
		// a request that hangs.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}
	if t.Enabled() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.CA != "" {
			pem, err := os.ReadFile(t.CA)
			if err != nil {
				return nil, fmt.Errorf("fleet.tls.ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("fleet.tls.ca: %s holds no PEM certificate", t.CA)
			}
			tc.RootCAs = pool
		}
		if t.Cert != "" {
			c, err := tls.LoadX509KeyPair(t.Cert, t.Key)
			if err != nil {
				return nil, fmt.Errorf("fleet.tls.cert and key: %w", err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("fleet: etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}

// ConfigOf is the agent's Config for fleet: of app, as host.
func ConfigOf(f *desired.Fleet, app, host string) Config {
	return Config{App: app, Group: f.Group, Host: host, MaxParallel: f.MaxParallel, Canary: f.Canary,
		Soak: f.Soak, MaxFailures: f.MaxFailures, MigrateEach: f.Migrate == desired.FleetMigrateEach}
}
