package desired

import (
	"fmt"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

func (p *parser) shared(n *yaml.Node, s *State) {
	type entry struct {
		path, field string
		node        *yaml.Node
	}
	var all []entry
	p.fields(n, "shared", []string{"dirs", "files"}, func(key string, k, v *yaml.Node) {
		fp := "shared." + key
		vals, nodes := p.strList(v, fp)
		for i, val := range vals {
			field := fmt.Sprintf("%s[%d]", fp, i)
			if err := checkRelPath(val); err != nil {
				p.fail(nodes[i], field, "%v", err)
				continue
			}
			c := filepath.Clean(val)
			if strings.SplitN(c, "/", 2)[0] == ".reconciler" {
				p.fail(nodes[i], field, "%q is reserved for the reconciler's records", val)
				continue
			}
			all = append(all, entry{c, field, nodes[i]})
			if key == "dirs" {
				s.Shared.Dirs = append(s.Shared.Dirs, c)
			} else {
				s.Shared.Files = append(s.Shared.Files, c)
			}
		}
	})
	// Overlapping entries would link one shared path inside another.
	for i := range all {
		for j := 0; j < i; j++ {
			a, b := all[j].path, all[i].path
			if a == b || strings.HasPrefix(b, a+"/") || strings.HasPrefix(a, b+"/") {
				p.fail(all[i].node, all[i].field, "%q overlaps %s (%q)", b, all[j].field, a)
			}
		}
	}
}
