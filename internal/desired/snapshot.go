package desired

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode"
)

// Snapshot is the desired state as field paths ("build[1].run",
// "env.SECRET_KEY") mapped to a hash of each value: what an apply keeps,
// so the next plan can say which fields changed since, without a value
// (an env secret, a URL's password) ever being stored or shown.
func (s *State) Snapshot() map[string]string {
	c := *s
	c.File = ""
	c.Env = nil
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		panic(err)
	}
	out := map[string]string{}
	flatten(out, "", v)
	for _, e := range s.Env {
		out["env."+e.Name] = hashValue(e.Value)
	}
	return out
}

func flatten(out map[string]string, path string, v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			p := snake(k)
			if path != "" {
				p = path + "." + p
			}
			flatten(out, p, val)
		}
	case []any:
		for i, val := range x {
			flatten(out, fmt.Sprintf("%s[%d]", path, i), val)
		}
	case nil:
	default:
		if b, _ := json.Marshal(x); string(b) != `""` && string(b) != "0" && string(b) != "false" {
			out[path] = hashValue(string(b))
		}
	}
}

func hashValue(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// snake turns a Go field name into the desired.yaml spelling: RunAs ->
// run_as, SSHKey -> ssh_key.
func snake(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		if unicode.IsUpper(c) {
			if i > 0 && (unicode.IsLower(r[i-1]) || i+1 < len(r) && unicode.IsLower(r[i+1])) {
				b.WriteByte('_')
			}
			c = unicode.ToLower(c)
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Changed lists the fields whose values differ between two snapshots,
// sorted: empty, not nil, when none does; nil when old is nil (nothing to
// compare with).
func Changed(old, cur map[string]string) []string {
	if old == nil {
		return nil
	}
	out := []string{}
	for k, v := range cur {
		if old[k] != v {
			out = append(out, k)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
