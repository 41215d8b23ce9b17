package desired

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

// parser walks the yaml node tree itself, rather than decoding into structs,
// so every problem carries its file:line:column and all of them are
// reported at once.
type parser struct {
	file string
	base string // the folder relative paths are relative to
	errs []*FieldError
	// files are the paths the file names that Load checks exist.
	files []namedFile
}

// namedFile is a path read from the desired file, with where it was.
type namedFile struct {
	node  *yaml.Node
	field string
	path  string
}

func (p *parser) errorf(line, col int, field, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{File: p.file, Line: line, Column: col, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) fail(n *yaml.Node, field, format string, args ...any) {
	p.errorf(n.Line, n.Column, field, format, args...)
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		case "!!str":
			return "a string"
		}
		return "a " + strings.TrimPrefix(n.Tag, "!!")
	}
	return "something else"
}

// fields walks a mapping: it reports duplicate and unknown keys, and calls
// handle for each known key with its value. It returns false when n is not a
// mapping.
func (p *parser) fields(n *yaml.Node, path string, known []string, handle func(key string, k, v *yaml.Node)) bool {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "must be a mapping, got %s", kindName(n))
		return false
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		key := k.Value
		fp := join(path, key)
		if prev, dup := seen[key]; dup {
			p.fail(k, fp, "duplicate key (first at line %d)", prev.Line)
			continue
		}
		seen[key] = k
		if !contains(known, key) {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := suggest(key, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += fmt.Sprintf("; known keys: %s", strings.Join(known, ", "))
			}
			p.errorf(k.Line, k.Column, fp, "%s", msg)
			continue
		}
		if isNull(v) {
			continue // an empty value is the same as an absent key
		}
		handle(key, k, v)
	}
	return true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the known key closest to key when it is a likely typo.
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// str reads a scalar as text. Integers and numbers are taken as written, so
// `commit: 12345678` is the commit 12345678; booleans, lists and mappings are
// type errors.
func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float") {
		p.fail(n, path, "must be a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) int(n *yaml.Node, path string, lo, hi int) (int, bool) {
	// Integers too large for int64 come back from yaml.v3 tagged !!float.
	if n.Kind == yaml.ScalarNode && n.Tag == "!!float" && intRE.MatchString(n.Value) {
		p.fail(n, path, "must be between %d and %d, got %s", lo, hi, n.Value)
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		p.fail(n, path, "must be an integer, got %s", kindName(n))
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 0, 64)
	if err != nil || v < int64(lo) || v > int64(hi) {
		p.fail(n, path, "must be between %d and %d, got %s", lo, hi, n.Value)
		return 0, false
	}
	return int(v), true
}

func (p *parser) duration(n *yaml.Node, path string, lo, hi time.Duration) (time.Duration, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.fail(n, path, "invalid duration %q: write it like 90s, 5m or 1h30m", s)
		return 0, false
	}
	if d < lo || d > hi {
		p.fail(n, path, "must be between %s and %s, got %s", lo, hi, s)
		return 0, false
	}
	return d, true
}

// list calls each for every element of a sequence.
func (p *parser) list(n *yaml.Node, path string, each func(i int, v *yaml.Node)) {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, path, "must be a list, got %s", kindName(n))
		return
	}
	for i, v := range n.Content {
		each(i, deref(v))
	}
}

func (p *parser) strList(n *yaml.Node, path string) ([]string, []*yaml.Node) {
	var out []string
	var nodes []*yaml.Node
	p.list(n, path, func(i int, v *yaml.Node) {
		if s, ok := p.str(v, fmt.Sprintf("%s[%d]", path, i)); ok {
			out = append(out, s)
			nodes = append(nodes, v)
		}
	})
	return out, nodes
}

var intRE = lazyre.New(`^[-+]?[0-9]+$`)

// checkRelPath accepts a clean relative path that stays where it is put.
func checkRelPath(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	if strings.ContainsAny(v, "\x00\n\r") {
		return errors.New("contains a control character")
	}
	if filepath.IsAbs(v) {
		return fmt.Errorf("%q is absolute; write a path relative to the release", v)
	}
	for _, part := range strings.Split(v, "/") {
		if part == ".." {
			return fmt.Errorf("%q leaves its folder (..)", v)
		}
	}
	if c := filepath.Clean(v); c == "." {
		return fmt.Errorf("%q names the folder itself", v)
	}
	return nil
}
