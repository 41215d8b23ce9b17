package desired

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

var stepRE = lazyre.New(`^[a-z0-9][a-z0-9_-]*$`)

// stepNames the reconciler uses itself, so a build step cannot take them.
var stepNames = []string{"export", "shared", "migrate", "preflight"}

func (p *parser) build(n *yaml.Node, s *State) {
	seen := map[string]int{}
	p.list(n, "build", func(i int, v *yaml.Node) {
		fp := fmt.Sprintf("build[%d]", i)
		st, ok := p.step(v, fp, true)
		if !ok {
			return
		}
		if line, dup := seen[st.Name]; dup {
			p.fail(v, fp+".name", "duplicate step name %q (first at line %d)", st.Name, line)
			return
		}
		seen[st.Name] = v.Line
		s.Build = append(s.Build, st)
	})
}

func (p *parser) step(n *yaml.Node, path string, named bool) (Step, bool) {
	known := keysOf("migrate")
	if named {
		known = keysOf("build_step")
	}
	return p.stepWith(n, path, named, known, nil)
}

// stepWith reads a step whose mapping has the keys known: the step's own
// are read here, the others handed to extra.
func (p *parser) stepWith(n *yaml.Node, path string, named bool, known []string, extra func(key string, k, v *yaml.Node)) (Step, bool) {
	st := Step{Timeout: DefaultStepTimeout}
	var haveName, haveRun, bad bool
	nerr := len(p.errs)
	if !p.fields(n, path, known, func(key string, k, v *yaml.Node) {
		fp := path + "." + key
		switch key {
		case "name":
			haveName = true
			if name, ok := p.str(v, fp); ok {
				switch {
				case !stepRE.MatchString(name) || len(name) > 64:
					p.fail(v, fp, "%q is not a valid step name: use lower-case letters, digits, _ and -", name)
				case contains(stepNames, name):
					p.fail(v, fp, "%q is the name of one of the reconciler's own steps", name)
				default:
					st.Name = name
				}
			}
		case "run":
			haveRun = true
			if run, ok := p.str(v, fp); ok {
				if strings.TrimSpace(run) == "" {
					p.fail(v, fp, "must not be empty")
				} else if strings.ContainsRune(run, 0) {
					p.fail(v, fp, "contains a NUL byte")
				}
				st.Run = run
			}
		case "timeout":
			if d, ok := p.duration(v, fp, time.Second, 24*time.Hour); ok {
				st.Timeout = d
			}
		case "run_as":
			st.RunAs = p.userName(v, fp)
		case "cache":
			st.Cache = p.stepCache(v, fp)
		default:
			extra(key, k, v)
		}
	}) {
		return st, false
	}
	if named && !haveName {
		p.fail(n, path+".name", "is required")
		bad = true
	}
	if !haveRun {
		p.fail(n, path+".run", "is required")
		bad = true
	}
	return st, !bad && len(p.errs) == nerr
}

// userRE is what useradd accepts as a user name, or a numeric uid.
var userRE = lazyre.New(`^([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})$`)

// userName reads a run_as: a user name or uid. Whether the user exists is
// asked when the command runs, on the host that runs it.
func (p *parser) userName(v *yaml.Node, field string) string {
	u, ok := p.str(v, field)
	if !ok {
		return ""
	}
	if !userRE.MatchString(u) {
		p.fail(v, field, "%q is not a user name (lower-case letters, digits, _ and -, at most 32) or a uid", u)
		return ""
	}
	return u
}

// stepCache reads a build step's cache: key patterns and output paths,
// each a clean path inside the directory the step runs in.
func (p *parser) stepCache(n *yaml.Node, path string) *StepCache {
	c := &StepCache{}
	var haveKey, havePaths bool
	nerr := len(p.errs)
	p.fields(n, path, keysOf("step_cache"), func(key string, k, v *yaml.Node) {
		fp := path + "." + key
		vals, nodes := p.strList(v, fp)
		for i, val := range vals {
			field := fmt.Sprintf("%s[%d]", fp, i)
			if err := checkRelPath(val); err != nil {
				p.fail(nodes[i], field, "%v", err)
				continue
			}
			val = filepath.Clean(val)
			if strings.SplitN(val, "/", 2)[0] == layout.RecordDirName {
				p.fail(nodes[i], field, "%q is reserved for the reconciler's records", val)
				continue
			}
			if key == "key" {
				if _, err := filepath.Match(val, ""); err != nil {
					p.fail(nodes[i], field, "%q is not a valid pattern: %v", val, err)
					continue
				}
				c.Key = append(c.Key, val)
				continue
			}
			if strings.ContainsAny(val, "*?[\\") {
				p.fail(nodes[i], field, "%q: an output path is a path, not a pattern", val)
				continue
			}
			for j, q := range c.Paths {
				if under(val, q) || under(q, val) {
					p.fail(nodes[i], field, "%q overlaps %s[%d] (%q)", val, fp, j, q)
				}
			}
			c.Paths = append(c.Paths, val)
		}
		if key == "key" {
			haveKey = true
		} else {
			havePaths = true
		}
		if v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
			p.fail(v, fp, "must not be empty")
		}
	})
	if !haveKey {
		p.fail(n, path+".key", "is required: the release files whose contents decide whether the outputs can be reused, e.g. [requirements.txt]")
	}
	if !havePaths {
		p.fail(n, path+".paths", "is required: what the step makes, e.g. [venv]")
	}
	if len(p.errs) != nerr {
		return nil
	}
	return c
}
