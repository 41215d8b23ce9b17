package desired

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/reconciler-dev/reconciler/internal/layout"
)

func (p *parser) shared(n *yaml.Node, s *State) {
	type entry struct {
		path, field string
		node        *yaml.Node
	}
	var all []entry
	p.fields(n, "shared", keysOf("shared"), func(key string, k, v *yaml.Node) {
		fp := "shared." + key
		vals, nodes := p.strList(v, fp)
		for i, val := range vals {
			field := fmt.Sprintf("%s[%d]", fp, i)
			if err := checkRelPath(val); err != nil {
				p.fail(nodes[i], field, "%v", err)
				continue
			}
			c := filepath.Clean(val)
			if strings.SplitN(c, "/", 2)[0] == layout.RecordDirName {
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
	// Sorted with / before every other byte, the paths under an entry
	// come right after it, so a stack of the entries the current one may be
	// under finds each overlap in O(n log n); comparing every pair took
	// minutes and gigabytes for a few thousand entries.
	order := make([]int, len(all))
	keys := make([]string, len(all))
	for i := range order {
		order[i] = i
		keys[i] = strings.ReplaceAll(all[i].path, "/", "\x00") // paths hold no NUL: checkRelPath
	}
	sort.SliceStable(order, func(a, b int) bool { return keys[order[a]] < keys[order[b]] })
	var stack []int
	for _, i := range order {
		for len(stack) > 0 && !under(all[i].path, all[stack[len(stack)-1]].path) {
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 {
			// Reported at whichever of the two comes later in the file.
			j := stack[len(stack)-1]
			a, b := j, i
			if a > b {
				a, b = b, a
			}
			p.fail(all[b].node, all[b].field, "%q overlaps %s (%q)", all[b].path, all[a].field, all[a].path)
		}
		stack = append(stack, i)
	}
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}
