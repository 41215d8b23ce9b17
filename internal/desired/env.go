package desired

import (
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

var envNameRE = lazyre.New(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (p *parser) env(n *yaml.Node, s *State) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.fail(n, "env", "must be a mapping of NAME: value, got %s", kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		fp := "env." + k.Value
		if line, dup := seen[k.Value]; dup {
			p.fail(k, fp, "duplicate key (first at line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		if !envNameRE.MatchString(k.Value) {
			p.fail(k, fp, "%q is not a valid environment variable name", k.Value)
			continue
		}
		if strings.HasPrefix(k.Value, "RECONCILER_") {
			p.fail(k, fp, "names starting with RECONCILER_ are set by the reconciler")
			continue
		}
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			p.fail(v, fp, "must be a string, got %s", kindName(v))
			continue
		}
		if strings.ContainsRune(v.Value, 0) {
			p.fail(v, fp, "contains a NUL byte")
			continue
		}
		s.Env = append(s.Env, EnvVar{k.Value, v.Value})
	}
	sort.Slice(s.Env, func(i, j int) bool { return s.Env[i].Name < s.Env[j].Name })
}
