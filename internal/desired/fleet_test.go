package desired

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseFleet(t *testing.T) {
	tests := []struct {
		name, in string
		want     *Fleet
	}{
		{"absent", "", nil},
		{"empty", "fleet:\n", nil},
		{"defaults", "fleet: {etcd: [http://127.0.0.1:2379]}\n",
			&Fleet{Etcd: []string{"http://127.0.0.1:2379"}, Group: "default", MaxParallel: 1, Migrate: "once"}},
		{"no etcd: given by --etcd", "fleet: {group: web}\n",
			&Fleet{Group: "web", MaxParallel: 1, Migrate: "once"}},
		{"all", `fleet:
  etcd: [https://10.0.0.5:2379, "https://10.0.0.6:2379/"]
  tls: {ca: ca.pem, cert: /etc/r/cert.pem, key: ./key.pem}
  group: web
  max_parallel: 2
  canary: 1
  soak: 60s
  max_failures: 3
  migrate: each
`, &Fleet{
			Etcd:  []string{"https://10.0.0.5:2379", "https://10.0.0.6:2379"},
			TLS:   FleetTLS{CA: "/srv/cfg/ca.pem", Cert: "/etc/r/cert.pem", Key: "/srv/cfg/key.pem"},
			Group: "web", MaxParallel: 2, Canary: 1, Soak: 60 * time.Second, MaxFailures: 3, Migrate: "each",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(notifyHead+tt.in), "/srv/cfg/d.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(s.Fleet, tt.want) {
				t.Errorf("fleet:\n got %+v\nwant %+v", s.Fleet, tt.want)
			}
		})
	}
	// How hosts take turns does not change what is built.
	a, _ := Parse(strings.NewReader(notifyHead), "d.yaml")
	b, _ := Parse(strings.NewReader(notifyHead+tests[4].in), "/srv/cfg/d.yaml")
	if a.Fingerprint() != b.Fingerprint() {
		t.Error("fleet: changes the release fingerprint")
	}
}

func TestParseFleetErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"not a mapping", "fleet: [a]\n", []string{"d.yaml:4:8: fleet: must be a mapping, got a list"}},
		{"unknown key", "fleet: {parallel: 2}\n", []string{`d.yaml:4:9: fleet.parallel: unknown key "parallel"; known keys: etcd, tls, group, max_parallel, canary, soak, max_failures, migrate`}},
		{"typo", "fleet: {max_paralel: 2}\n", []string{`d.yaml:4:9: fleet.max_paralel: unknown key "max_paralel" (did you mean "max_parallel"?)`}},
		{"etcd string", "fleet: {etcd: http://a:1}\n", []string{"d.yaml:4:15: fleet.etcd: must be a list, got a string"}},
		{"etcd empty", "fleet: {etcd: []}\n", []string{"d.yaml:4:15: fleet.etcd: names no endpoint: list the etcd client URLs, or leave etcd out and give --etcd"}},
		{"etcd scheme", "fleet: {etcd: [\"unix://a:1\"]}\n", []string{`d.yaml:4:16: fleet.etcd[0]: "unix://a:1" is not an http:// or https:// URL`}},
		{"etcd no port", "fleet: {etcd: [\"http://a\"]}\n", []string{`d.yaml:4:16: fleet.etcd[0]: "http://a" names no host and port: write it like https://10.0.0.5:2379`}},
		{"etcd path", "fleet: {etcd: [\"http://a:1/v3\"]}\n", []string{`d.yaml:4:16: fleet.etcd[0]: "http://a:1/v3" has more than scheme://host:port`}},
		{"etcd twice", "fleet: {etcd: [\"http://a:1\", \"http://a:1/\"]}\n", []string{`d.yaml:4:30: fleet.etcd[1]: http://a:1 is named twice (first at fleet.etcd[0])`}},
		{"etcd mixed", "fleet: {etcd: [\"http://a:1\", \"https://b:1\"]}\n", []string{`d.yaml:4:15: fleet.etcd: mixes http:// and https:// endpoints: one cluster speaks one`}},
		{"tls over http", "fleet:\n  etcd: [\"http://a:1\"]\n  tls: {ca: /ca}\n", []string{`d.yaml:5:10: fleet.etcd[0]: http://a:1 is plain http but fleet.tls is set: write https://`}},
		{"tls cert alone", "fleet: {tls: {cert: /c}}\n", []string{`d.yaml:4:14: fleet.tls: cert and key go together: give both or neither`}},
		{"tls unknown", "fleet: {tls: {crt: /c}}\n", []string{`d.yaml:4:15: fleet.tls.crt: unknown key "crt" (did you mean "cert"?)`}},
		{"group", "fleet: {group: \"a/b\"}\n", []string{`d.yaml:4:16: fleet.group: "a/b" is not a plain name: use letters, digits and _ . - only, at most 64 characters`}},
		{"max_parallel 0", "fleet: {max_parallel: 0}\n", []string{`d.yaml:4:23: fleet.max_parallel: must be between 1 and 1000, got 0`}},
		{"canary negative", "fleet: {canary: -1}\n", []string{`d.yaml:4:17: fleet.canary: must be between 0 and 1000, got -1`}},
		{"soak bad", "fleet: {canary: 1, soak: soon}\n", []string{`d.yaml:4:26: fleet.soak: invalid duration "soon": write it like 90s, 5m or 1h30m`}},
		{"soak without canary", "fleet: {soak: 1m}\n", []string{`d.yaml:4:15: fleet.soak: needs canary: soak is how long the canaries stay healthy before the others follow`}},
		{"max_failures string", "fleet: {max_failures: many}\n", []string{`d.yaml:4:23: fleet.max_failures: must be an integer, got a string`}},
		{"migrate", "fleet: {migrate: twice}\n", []string{`d.yaml:4:18: fleet.migrate: "twice" is not once (one host migrates per target) or each (every host migrates its own database)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(notifyHead+tt.in), "d.yaml")
			var got []string
			for _, fe := range Errors(err) {
				got = append(got, fe.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

// Load, as `reconciler validate` runs it, finds a mistyped TLS file.
func TestLoadFleetTLSFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "d.yaml")
	src := notifyHead + "fleet:\n  etcd: [\"https://a:1\"]\n  tls: {ca: ca.pem, cert: cert.pem, key: key.pem}\n"
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file)
	var got []string
	for _, fe := range Errors(err) {
		got = append(got, fe.Field)
	}
	if want := []string{"fleet.tls.cert", "fleet.tls.key"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Load errors on %v, want %v: %v", got, want, err)
	}
}
