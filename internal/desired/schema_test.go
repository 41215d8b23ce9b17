package desired

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite schema/desired.schema.json")

// schemaFile is the committed copy of Schema().
const schemaFile = "../../schema/desired.schema.json"

// jsonSchema is the part of a JSON Schema the tests walk.
type jsonSchema struct {
	Ref                  string                 `json:"$ref"`
	Type                 any                    `json:"type"`
	Properties           map[string]*jsonSchema `json:"properties"`
	AdditionalProperties any                    `json:"additionalProperties"`
	Items                *jsonSchema            `json:"items"`
	Enum                 []string               `json:"enum"`
	Required             []string               `json:"required"`
	Defs                 map[string]*jsonSchema `json:"$defs"`
}

func loadSchema(t *testing.T) *jsonSchema {
	t.Helper()
	var s jsonSchema
	if err := json.Unmarshal(Schema(), &s); err != nil {
		t.Fatalf("Schema() is not JSON: %v", err)
	}
	return &s
}

// mapping is one closed mapping of the schema (additionalProperties
// false), with how to reach it from the top of the file.
type mapping struct {
	where  string // how it is reached, for messages: "services[].health[]"
	schema *jsonSchema
	// wrap puts a value at the mapping's place in a document.
	wrap func(v map[string]any) any
}

// mappings walks the schema from the top and returns every closed mapping
// at every place it can appear.
func mappings(t *testing.T, root *jsonSchema) []mapping {
	t.Helper()
	resolve := func(s *jsonSchema) *jsonSchema {
		if name, ok := strings.CutPrefix(s.Ref, "#/$defs/"); ok {
			d := root.Defs[name]
			if d == nil {
				t.Fatalf("$ref %s names no definition", s.Ref)
			}
			return d
		}
		return s
	}
	var out []mapping
	var walk func(where string, s *jsonSchema, wrap func(map[string]any) any, depth int)
	walk = func(where string, s *jsonSchema, wrap func(map[string]any) any, depth int) {
		if depth > 10 {
			t.Fatalf("%s: the schema nests too deep (a cycle?)", where)
		}
		out = append(out, mapping{where, s, wrap})
		for name, p := range s.Properties {
			p, list := resolve(p), false
			if p.Items != nil {
				p, list = resolve(p.Items), true
			}
			if p.Type != "object" || p.AdditionalProperties != false {
				continue // a value, or env's open mapping
			}
			w := strings.TrimPrefix(where+"."+name, ".")
			inner := func(v map[string]any) any { return wrap(map[string]any{name: v}) }
			if list {
				w += "[]"
				inner = func(v map[string]any) any { return wrap(map[string]any{name: []any{v}}) }
			}
			walk(w, p, inner, depth+1)
		}
	}
	walk("", root, func(v map[string]any) any { return v }, 0)
	return out
}

func parseDoc(t *testing.T, doc any) []*FieldError {
	t.Helper()
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(bytes.NewReader(b), "/srv/desired.yaml")
	return Errors(err)
}

// The parser and the schema accept the same keys in every mapping: the
// parser's "unknown key" message lists what it accepts there, which must
// be the schema's properties, no more and no fewer.
func TestSchemaKeysAreTheParsers(t *testing.T) {
	const bogus = "zzq_no_such_key"
	for _, m := range mappings(t, loadSchema(t)) {
		var inSchema []string
		for k := range m.schema.Properties {
			inSchema = append(inSchema, k)
		}
		var known []string
		found := false
		for _, fe := range parseDoc(t, m.wrap(map[string]any{bogus: 1})) {
			rest, ok := strings.CutPrefix(fe.Msg, `unknown key "`+bogus+`"; known keys: `)
			if !ok {
				continue
			}
			if found {
				t.Errorf("%s: two unknown-key errors for one key", m.where)
			}
			found = true
			known = strings.Split(rest, ", ")
		}
		if !found {
			t.Errorf("%s: the parser did not report the unknown key %s", m.where, bogus)
			continue
		}
		for _, k := range known {
			if !slices.Contains(inSchema, k) {
				t.Errorf("%s: the parser accepts %q, the schema lacks it: add it to keyTable", m.where, k)
			}
		}
		for _, k := range inSchema {
			if !slices.Contains(known, k) {
				t.Errorf("%s: the schema has %q, the parser does not accept it", m.where, k)
			}
		}
	}
}

// typeErr matches the parser's messages for a value of the wrong type.
func typeErr(msg string) bool {
	for _, s := range []string{"must be a string, got", "must be an integer, got", "must be true or false, got", "must be a list, got", "must be a mapping, got", "must be a mapping of NAME: value, got"} {
		if strings.HasPrefix(msg, s) {
			return true
		}
	}
	return false
}

// isField reports whether field (services[0].health[1].http) is name
// (http) or one of its elements.
func isField(field, name string) bool {
	last := field[strings.LastIndexByte(field, '.')+1:]
	last, _, _ = strings.Cut(last, "[")
	return last == name
}

// sample returns a value of the schema's type, and one of another type.
func sample(t *testing.T, root, s *jsonSchema) (good, bad any) {
	if name, ok := strings.CutPrefix(s.Ref, "#/$defs/"); ok {
		s = root.Defs[name]
	}
	if len(s.Enum) > 0 {
		return s.Enum[0], []any{1}
	}
	switch s.Type {
	case "string":
		return "5s", []any{"x"} // 5s reads as a duration too
	case "integer":
		return 5, "five"
	case "boolean":
		return true, "yes"
	case "object":
		if s.AdditionalProperties == false {
			return map[string]any{}, "x"
		}
		return map[string]any{"NAME": "value"}, "x"
	case "array":
		g, _ := sample(t, root, s.Items)
		return []any{g}, "x"
	}
	if ts, ok := s.Type.([]any); ok && slices.Contains(ts, "string") {
		return "12345678", []any{"x"}
	}
	t.Fatalf("no sample for schema type %v", s.Type)
	return nil, nil
}

// The parser takes every key's value of the schema's type without a type
// error, and reports one for a value of another type: the types agree.
func TestSchemaTypesAreTheParsers(t *testing.T) {
	root := loadSchema(t)
	for _, m := range mappings(t, root) {
		for name, p := range m.schema.Properties {
			good, bad := sample(t, root, p)
			for _, fe := range parseDoc(t, m.wrap(map[string]any{name: good})) {
				if typeErr(fe.Msg) && isField(fe.Field, name) {
					t.Errorf("%s: a value of the schema's type %v: %s", join(m.where, name), p.Type, fe)
				}
			}
			seen := false
			for _, fe := range parseDoc(t, m.wrap(map[string]any{name: bad})) {
				seen = seen || typeErr(fe.Msg) && isField(fe.Field, name)
			}
			if !seen {
				t.Errorf("%s: the parser took %v, not of the schema's type %v", join(m.where, name), bad, p.Type)
			}
		}
	}
}

// Every mapping of the table is reachable from the top of the file, and
// every key of type Obj names a mapping that has keys: a key added under a
// misspelt mapping name would be silently missing from both.
func TestKeyTableIsConnected(t *testing.T) {
	refs := map[string]bool{Top: true}
	for _, k := range keyTable {
		for ty := &k.Type; ty != nil; ty = ty.Elem {
			if ty.Kind == Obj {
				refs[ty.Ref] = true
				if len(keysOf(ty.Ref)) == 0 {
					t.Errorf("%s.%s names mapping %q, which has no keys", k.In, k.Name, ty.Ref)
				}
			}
		}
		if k.Doc == "" || strings.Contains(k.Doc, "\n") {
			t.Errorf("%s.%s: the description must be one line", k.In, k.Name)
		}
	}
	for _, k := range keyTable {
		if !refs[k.In] {
			t.Errorf("%s.%s: no key's type names mapping %q", k.In, k.Name, k.In)
		}
	}
	for _, k := range keyTable {
		if k.In == "notify" && k.Name == "on" && !slices.Equal(k.Type.Elem.Values, NotifyEvents) {
			t.Errorf("notify.on's values %v are not NotifyEvents %v", k.Type.Elem.Values, NotifyEvents)
		}
	}
}

// The committed schema is Schema(): regenerate it with
// `go test ./internal/desired -run TestSchemaFile -update`.
func TestSchemaFileUpToDate(t *testing.T) {
	want := Schema()
	if *update {
		if err := os.WriteFile(schemaFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is out of date: run `go test ./internal/desired -run TestSchemaFile -update`", schemaFile)
	}
}

// Every example desired file names the schema on its first line, for
// editors running yaml-language-server, and the name resolves to the
// committed schema (a path relative to the file) or is SchemaURL.
func TestExamplesNameSchema(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	more, _ := filepath.Glob("../../examples/*/*.yaml")
	files = append(files, more...)
	if len(files) < 3 {
		t.Fatalf("found only %v", files)
	}
	want, err := filepath.Abs(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		target, ok := strings.CutPrefix(first, "# yaml-language-server: $schema=")
		switch {
		case !ok:
			t.Errorf("%s: first line %q is not `# yaml-language-server: $schema=...`", f, first)
		case target == SchemaURL:
		default:
			if abs, _ := filepath.Abs(filepath.Join(filepath.Dir(f), target)); abs != want {
				t.Errorf("%s: $schema=%s is %s, not %s", f, target, abs, want)
			}
		}
	}
}
