package desired

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

var (
	unitRE    = lazyre.New(`^[A-Za-z0-9:_.@\\-]+$`)
	programRE = lazyre.New(`^[A-Za-z0-9_.:*-]+$`)
)

func (p *parser) services(n *yaml.Node, s *State) {
	seen := map[string]int{}
	p.list(n, "services", func(i int, v *yaml.Node) {
		fp := fmt.Sprintf("services[%d]", i)
		svc, ok := p.service(v, fp)
		if !ok {
			return
		}
		if line, dup := seen[svc.Name]; dup {
			p.fail(v, fp+".name", "duplicate service name %q (first at line %d)", svc.Name, line)
			return
		}
		seen[svc.Name] = v.Line
		s.Services = append(s.Services, svc)
	})
}

func (p *parser) service(n *yaml.Node, path string) (Service, bool) {
	svc := Service{Action: ActionRestart, Timeout: DefaultActionTimeout}
	nerr := len(p.errs)
	keyNodes := map[string]*yaml.Node{}
	if !p.fields(n, path, keysOf("service"), func(key string, k, v *yaml.Node) {
		fp := path + "." + key
		keyNodes[key] = k
		if key == "supervisor" {
			p.fields(v, fp, keysOf("supervisor"), func(key string, k, v *yaml.Node) {
				if val, ok := p.str(v, fp+"."+key); ok {
					if key == "config" {
						if !filepath.IsAbs(val) {
							val = filepath.Join(p.base, val)
						}
						svc.Supervisor.Config = filepath.Clean(val)
					} else {
						svc.Supervisor.ServerURL = val
					}
				}
			})
			return
		}
		if key == "timeout" {
			if d, ok := p.duration(v, fp, time.Second, 24*time.Hour); ok {
				svc.Timeout = d
			}
			return
		}
		if key == "health" {
			svc.Health = p.checks(v, fp)
			return
		}
		val, ok := p.str(v, fp)
		if !ok {
			return
		}
		switch key {
		case "name":
			if !stepRE.MatchString(val) || len(val) > 64 {
				p.fail(v, fp, "%q is not a valid service name: use lower-case letters, digits, _ and -", val)
			}
			svc.Name = val
		case "manager":
			switch val {
			case ManagerCommand, ManagerSupervisor, ManagerSystemd:
				svc.Manager = val
			default:
				p.fail(v, fp, "unknown manager %q: use command, supervisor or systemd", val)
			}
		case "action":
			switch val {
			case ActionRestart, ActionReload:
				svc.Action = val
			default:
				p.fail(v, fp, "unknown action %q: use restart or reload", val)
			}
		case "restart", "reload":
			if strings.TrimSpace(val) == "" {
				p.fail(v, fp, "must not be empty")
			}
			if key == "restart" {
				svc.Restart = val
			} else {
				svc.Reload = val
			}
		case "unit":
			if !unitRE.MatchString(val) {
				p.fail(v, fp, "%q is not a valid systemd unit name", val)
			}
			svc.Unit = val
		case "program":
			if !programRE.MatchString(val) {
				p.fail(v, fp, "%q is not a valid supervisor program name", val)
			}
			svc.Program = val
		case "pidfile":
			if val == "" || strings.ContainsRune(val, 0) {
				p.fail(v, fp, "must be a path")
			}
			svc.PIDFile = val
		}
	}) {
		return svc, false
	}
	if len(p.errs) != nerr {
		return svc, false
	}
	if svc.Name == "" {
		p.fail(n, path+".name", "is required")
	}
	if svc.Manager == "" {
		p.fail(n, path+".manager", "is required: command, supervisor or systemd")
		return svc, false
	}
	// Each manager takes its own keys; a key of another manager is a mistake
	// the user should hear about, not something silently ignored.
	allowed := map[string][]string{
		ManagerCommand:    {"restart", "reload"},
		ManagerSystemd:    {"unit"},
		ManagerSupervisor: {"program", "supervisor"},
	}[svc.Manager]
	for _, key := range []string{"restart", "reload", "unit", "program", "supervisor"} {
		if k, ok := keyNodes[key]; ok && !contains(allowed, key) {
			p.fail(k, path+"."+key, "is not used by manager %s", svc.Manager)
		}
	}
	switch svc.Manager {
	case ManagerCommand:
		if svc.Action == ActionRestart && svc.Restart == "" {
			p.fail(n, path+".restart", "is required for manager command with action restart")
		}
		if svc.Action == ActionReload && svc.Reload == "" {
			p.fail(n, path+".reload", "is required for manager command with action reload")
		}
	case ManagerSystemd:
		if svc.Unit == "" {
			p.fail(n, path+".unit", "is required for manager systemd")
		}
	case ManagerSupervisor:
		if svc.Program == "" {
			p.fail(n, path+".program", "is required for manager supervisor")
		}
	}
	return svc, len(p.errs) == nerr
}
