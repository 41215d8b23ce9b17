package desired

import (
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Preflight is the new release started on a free loopback port and checked
// before the switch: a release that fails it never answers a user.
type Preflight struct {
	// Run starts the app in the release; RECONCILER_PREFLIGHT_PORT names
	// the port it must listen on.
	Run string
	// Health are the checks that must pass against it, in order; ${VAR}
	// in their URLs expands RECONCILER_PREFLIGHT_PORT.
	Health []Check
	// Timeout bounds the whole preflight, the start and every check.
	Timeout time.Duration
	// RunAs is who Run and command checks run as: the top-level run_as.
	RunAs string
	// Start is when Run starts: PreflightWithMigrate or
	// PreflightAfterMigrate. Its checks run after the migration either way.
	Start string
}

// When a preflight's server starts, relative to the migration.
const (
	// PreflightWithMigrate (the default) starts the server as the
	// migration starts, so that the app's start (a second or so of
	// Python) runs beside the migration on another core. The checks wait
	// for the migration. A server that fails them is started again once
	// the migration is done, and that one decides: code that needs the
	// new schema to start is judged on it.
	PreflightWithMigrate = "with_migrate"
	// PreflightAfterMigrate starts the server once the migration is done:
	// for an app whose start writes to the database the migration changes.
	PreflightAfterMigrate = "after_migrate"
)

// PreflightStarts are the values of preflight.start.
var PreflightStarts = []string{PreflightWithMigrate, PreflightAfterMigrate}

// DefaultPreflightTimeout bounds a preflight without a timeout.
const DefaultPreflightTimeout = time.Minute

// Fingerprint identifies the preflight by its command and checks. It is
// not part of State.Fingerprint: a preflight does not change what the
// build produces, only whether the release may be linked; a release is
// recorded as preflighted under this one.
func (pf Preflight) Fingerprint() string {
	type check struct {
		Kind, Target, Body string
		Expect             int
	}
	v := struct {
		Run    string
		Checks []check
	}{Run: pf.Run}
	for _, c := range pf.Health {
		v.Checks = append(v.Checks, check{c.Kind, c.Target, c.Body, c.Expect})
	}
	return hashJSON(v)
}

func (p *parser) preflight(n *yaml.Node, s *State) {
	pf := &Preflight{Timeout: DefaultPreflightTimeout, Start: PreflightWithMigrate}
	var haveRun, haveHealth bool
	nerr := len(p.errs)
	if !p.fields(n, "preflight", keysOf("preflight"), func(key string, k, v *yaml.Node) {
		fp := "preflight." + key
		switch key {
		case "run":
			haveRun = true
			if run, ok := p.str(v, fp); ok {
				switch {
				case strings.TrimSpace(run) == "":
					p.fail(v, fp, "must not be empty")
				case strings.ContainsRune(run, 0):
					p.fail(v, fp, "contains a NUL byte")
				}
				pf.Run = run
			}
		case "health":
			haveHealth = true
			pf.Health = p.checks(v, fp)
			if len(pf.Health) == 0 && len(p.errs) == nerr {
				p.fail(v, fp, "needs at least one check: a preflight without checks proves nothing")
			}
		case "timeout":
			if d, ok := p.duration(v, fp, time.Second, time.Hour); ok {
				pf.Timeout = d
			}
		case "start":
			if val, ok := p.str(v, fp); ok {
				if !contains(PreflightStarts, val) {
					p.fail(v, fp, "%q is not a start: want with_migrate (the server starts beside the migration, its checks after it) or after_migrate", val)
				}
				pf.Start = val
			}
		}
	}) {
		return
	}
	if !haveRun {
		p.fail(n, "preflight.run", "is required")
	}
	if !haveHealth {
		p.fail(n, "preflight.health", "is required")
	}
	if len(p.errs) == nerr {
		s.Preflight = pf
	}
}
