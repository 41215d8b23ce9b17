package desired

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Fleet is fleet:, the hosts of one app and group rolling out a target
// together through etcd. Nil in State when absent: a single host needs no
// etcd.
//
//	fleet:
//	  etcd: [https://10.0.0.5:2379, https://10.0.0.6:2379]
//	  tls: {ca: /etc/reconciler/etcd-ca.pem, cert: …, key: …}
//	  group: web
//	  max_parallel: 2
//	  canary: 1
//	  soak: 60s
//	  max_failures: 0
//	  migrate: once
//
// Not part of the Fingerprint: how hosts take turns does not change what
// is built.
type Fleet struct {
	// Etcd are the client URLs of the etcd cluster; empty when the file
	// names none, and then --etcd or RECONCILER_ETCD must.
	Etcd []string
	TLS  FleetTLS
	// Group names the hosts of the app that roll out together.
	Group string
	// MaxParallel is how many hosts may be switching at once.
	MaxParallel int
	// Canary is how many hosts, first in the stable order, switch before
	// the others; 0 for none.
	Canary int
	// Soak is how long the canaries stay healthy before the others follow.
	Soak time.Duration
	// MaxFailures is how many hosts may fail a target before its rollout
	// halts.
	MaxFailures int
	// Migrate is FleetMigrateOnce or FleetMigrateEach.
	Migrate string
}

// FleetTLS are the files of fleet.tls, absolute paths; all empty for none.
type FleetTLS struct {
	CA, Cert, Key string
}

// Enabled reports whether the client presents a certificate or checks the
// server's against its own CA.
func (t FleetTLS) Enabled() bool { return t.CA != "" || t.Cert != "" }

// fleet.migrate values.
const (
	// FleetMigrateOnce: one host migrates per target, the others wait for
	// it: the hosts share one database.
	FleetMigrateOnce = "once"
	// FleetMigrateEach: every host runs the migration, as a single host
	// does: each has a database of its own.
	FleetMigrateEach = "each"
)

// Fleet defaults.
const (
	DefaultFleetGroup       = "default"
	DefaultFleetMaxParallel = 1
)

// fleet reads fleet:.
func (p *parser) fleet(n *yaml.Node, s *State) {
	f := &Fleet{Group: DefaultFleetGroup, MaxParallel: DefaultFleetMaxParallel, Migrate: FleetMigrateOnce}
	var soakNode *yaml.Node
	var etcdNodes []*yaml.Node
	if !p.fields(n, "fleet", keysOf("fleet"), func(key string, k, v *yaml.Node) {
		kp := "fleet." + key
		switch key {
		case "etcd":
			f.Etcd, etcdNodes = p.etcdURLs(v, kp)
		case "tls":
			f.TLS = p.fleetTLS(v, kp)
		case "group":
			if g, ok := p.str(v, kp); ok {
				if !nameRE.MatchString(g) || len(g) > 64 {
					p.fail(v, kp, "%q is not a plain name: use letters, digits and _ . - only, at most 64 characters", g)
				} else {
					f.Group = g
				}
			}
		case "max_parallel":
			if i, ok := p.int(v, kp, 1, 1000); ok {
				f.MaxParallel = i
			}
		case "canary":
			if i, ok := p.int(v, kp, 0, 1000); ok {
				f.Canary = i
			}
		case "soak":
			soakNode = v
			if d, ok := p.duration(v, kp, 0, 24*time.Hour); ok {
				f.Soak = d
			}
		case "max_failures":
			if i, ok := p.int(v, kp, 0, 100000); ok {
				f.MaxFailures = i
			}
		case "migrate":
			if m, ok := p.str(v, kp); ok {
				switch m {
				case FleetMigrateOnce, FleetMigrateEach:
					f.Migrate = m
				default:
					p.fail(v, kp, "%q is not once (one host migrates per target) or each (every host migrates its own database)", m)
				}
			}
		}
	}) {
		return
	}
	if soakNode != nil && f.Soak > 0 && f.Canary == 0 {
		p.fail(soakNode, "fleet.soak", "needs canary: soak is how long the canaries stay healthy before the others follow")
	}
	if f.TLS.Enabled() {
		for i, u := range f.Etcd {
			if strings.HasPrefix(u, "http://") {
				p.fail(etcdNodes[i], fmt.Sprintf("fleet.etcd[%d]", i), "%s is plain http but fleet.tls is set: write https://", u)
			}
		}
	}
	s.Fleet = f
}

// etcdURLs reads fleet.etcd: a non-empty list of http:// or https:// URLs
// of the form scheme://host:port, each once.
func (p *parser) etcdURLs(n *yaml.Node, path string) ([]string, []*yaml.Node) {
	vals, nodes := p.strList(n, path)
	if n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		p.fail(n, path, "names no endpoint: list the etcd client URLs, or leave etcd out and give --etcd")
		return nil, nil
	}
	var out []string
	var outNodes []*yaml.Node
	seen := map[string]int{}
	schemes := map[string]bool{}
	for i, v := range vals {
		field := fmt.Sprintf("%s[%d]", path, i)
		u, err := url.Parse(v)
		switch {
		case err != nil || strings.ContainsAny(v, " \t\r\n\x00"):
			p.fail(nodes[i], field, "%q is not a URL: write it like https://10.0.0.5:2379", v)
			continue
		case u.Scheme != "http" && u.Scheme != "https":
			p.fail(nodes[i], field, "%q is not an http:// or https:// URL", v)
			continue
		case u.Hostname() == "" || u.Port() == "":
			p.fail(nodes[i], field, "%q names no host and port: write it like https://10.0.0.5:2379", v)
			continue
		case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil:
			p.fail(nodes[i], field, "%q has more than scheme://host:port", v)
			continue
		}
		clean := u.Scheme + "://" + u.Host
		if j, dup := seen[clean]; dup {
			p.fail(nodes[i], field, "%s is named twice (first at %s[%d])", clean, path, j)
			continue
		}
		seen[clean] = i
		schemes[u.Scheme] = true
		out = append(out, clean)
		outNodes = append(outNodes, nodes[i])
	}
	if len(schemes) > 1 {
		p.fail(n, path, "mixes http:// and https:// endpoints: one cluster speaks one")
	}
	return out, outNodes
}

// fleetTLS reads fleet.tls: {ca, cert, key}, paths relative to the
// desired file's folder; cert and key go together.
func (p *parser) fleetTLS(n *yaml.Node, path string) FleetTLS {
	var t FleetTLS
	if !p.fields(n, path, keysOf("fleet_tls"), func(key string, k, v *yaml.Node) {
		kp := path + "." + key
		f, ok := p.str(v, kp)
		if !ok {
			return
		}
		if strings.TrimSpace(f) == "" || strings.ContainsAny(f, "\x00\n\r") {
			p.fail(v, kp, "must be a file path")
			return
		}
		if !filepath.IsAbs(f) {
			f = filepath.Join(p.base, f)
		}
		f = filepath.Clean(f)
		p.files = append(p.files, namedFile{node: v, field: kp, path: f})
		switch key {
		case "ca":
			t.CA = f
		case "cert":
			t.Cert = f
		case "key":
			t.Key = f
		}
	}) {
		return FleetTLS{}
	}
	if (t.Cert == "") != (t.Key == "") {
		p.fail(n, path, "cert and key go together: give both or neither")
	}
	return t
}
