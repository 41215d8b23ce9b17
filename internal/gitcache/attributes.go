package gitcache

import (
	"bytes"
	"fmt"
	"path"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/gitattributes"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// The export leaves out what `git archive` leaves out: paths whose
// export-ignore attribute is set by the .gitattributes files of the
// commit. Like `git archive <commit> <path>` — the form Capistrano runs —
// the attributes of the whole tree apply when source.path deploys a
// subdirectory: the top-level .gitattributes and those of the directories
// above source.path count, and patterns match the path from the top of
// the repository. (`git archive <commit>:<path>` differs: it sees only the
// subdirectory, whose own .gitattributes then acts as the top-level one.)
// Attributes from outside the commit (info/attributes,
// core.attributesFile) are not read: the cache is the reconciler's and
// the host's configuration must not change what a commit deploys.
//
// go-git's gitattributes package parses the lines and matches the
// patterns; what it lacks is filled in here, as git does it: a pattern
// ending in "/" matches directories only, negative patterns are ignored,
// an unset (-export-ignore) or unspecified (!export-ignore) attribute
// overrides a set one of lower priority, macros are defined only at the
// top, over-long lines and files are skipped.

const (
	attributesFile     = ".gitattributes"
	exportIgnore       = "export-ignore"
	maxAttributesLine  = 2048      // git's ATTR_MAX_LINE_LENGTH
	maxAttributesBytes = 100 << 20 // git's ATTR_MAX_FILE_SIZE
	maxMacroDepth      = 16
)

type attrRule struct {
	pattern gitattributes.Pattern // nil for a macro definition
	dirOnly bool
	attrs   []gitattributes.Attribute
}

// attrStack holds the rules in increasing priority: the top-level file
// first, deeper files after, later lines of a file after earlier ones.
type attrStack struct {
	rules  []attrRule
	macros map[string][]gitattributes.Attribute
}

func (s *attrStack) len() int       { return len(s.rules) }
func (s *attrStack) truncate(n int) { s.rules = s.rules[:n] }

// readAttributes adds the rules of tree's .gitattributes, tree being the
// directory dir of the whole tree ("" for the top, where macros may be
// defined).
func (x *exporter) readAttributes(tree *object.Tree, dir string, top bool) error {
	var e *object.TreeEntry
	for i := range tree.Entries {
		if tree.Entries[i].Name == attributesFile {
			e = &tree.Entries[i]
			break
		}
	}
	// git does not read a .gitattributes that is a symlink.
	if e == nil || (e.Mode != filemode.Regular && e.Mode != filemode.Executable && e.Mode != filemode.Deprecated) {
		return nil
	}
	b, err := x.readBlob(e.Hash, maxAttributesBytes)
	if err != nil {
		return fmt.Errorf("%s: %w", path.Join(dir, attributesFile), err)
	}
	if len(b) > maxAttributesBytes {
		return nil // git ignores it, with a warning
	}
	x.attrs.add(b, splitPath(dir), top)
	return nil
}

func (s *attrStack) add(b []byte, domain []string, top bool) {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	for _, line := range strings.Split(string(b), "\n") {
		if len(line) > maxAttributesLine {
			continue
		}
		m, ok := parseAttributesLine(line, domain, top)
		if !ok || len(m.Name) == 0 {
			continue
		}
		if m.Pattern == nil {
			if s.macros == nil {
				s.macros = map[string][]gitattributes.Attribute{}
			}
			s.macros[m.Name] = m.Attributes
			continue
		}
		pat := m.Name
		if strings.HasPrefix(pat, "!") {
			continue // git: "Negative patterns are ignored in git attributes"
		}
		trimmed := strings.TrimRight(pat, "/")
		for strings.Contains(trimmed, "//") {
			trimmed = strings.ReplaceAll(trimmed, "//", "/")
		}
		if trimmed == "" {
			continue
		}
		s.rules = append(s.rules, attrRule{
			pattern: gitattributes.ParsePattern(trimmed, domain),
			dirOnly: strings.HasSuffix(pat, "/"),
			attrs:   m.Attributes,
		})
	}
}

// parseAttributesLine is go-git's, made safe for any input: git skips a
// line it cannot read, and the repository must not crash the reconciler
// (go-git indexes past the end for a line such as `""`).
func parseAttributesLine(line string, domain []string, top bool) (m gitattributes.MatchAttribute, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	m, err := gitattributes.ParseAttributesLine(line, domain, top)
	return m, err == nil
}

func matches(p gitattributes.Pattern, name []string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return p.Match(name)
}

// exportIgnore reports whether name (the path's components in the whole
// tree) is left out of the export: the rule of highest priority that says
// anything of export-ignore decides, and only "set" leaves it out.
func (s *attrStack) exportIgnore(name []string, isDir bool) bool {
	for i := len(s.rules) - 1; i >= 0; i-- {
		r := s.rules[i]
		if r.dirOnly && !isDir || !matches(r.pattern, name) {
			continue
		}
		if set, decided := s.decide(r.attrs, 0); decided {
			return set
		}
	}
	return false
}

// decide looks for export-ignore among attrs, the later ones first, and
// in the macros they set.
func (s *attrStack) decide(attrs []gitattributes.Attribute, depth int) (set, decided bool) {
	for j := len(attrs) - 1; j >= 0; j-- {
		a := attrs[j]
		if a.Name() == exportIgnore {
			// A value (export-ignore=x) is not "set" for git either.
			return a.IsSet(), true
		}
		if m, ok := s.macros[a.Name()]; ok && a.IsSet() && depth < maxMacroDepth {
			if set, decided := s.decide(m, depth+1); decided {
				return set, true
			}
		}
	}
	return false, false
}

// attributesAbove reads the .gitattributes of the top of the commit's tree
// and of each directory above source.path, and refuses a source.path that
// they leave out of an export.
func (x *exporter) attributesAbove(commit *object.Commit, subpath string) error {
	if subpath == "" {
		return nil
	}
	tree, err := commit.Tree()
	if err != nil {
		return readErr("read tree", err)
	}
	parts := splitPath(subpath)
	for i := range parts {
		if err := x.readAttributes(tree, path.Join(parts[:i]...), i == 0); err != nil {
			return err
		}
		if x.attrs.exportIgnore(parts[:i+1], true) {
			return fmt.Errorf("source.path %s is marked export-ignore by .gitattributes: git archive would export nothing", subpath)
		}
		if tree, err = tree.Tree(parts[i]); err != nil {
			return readErr("read tree "+path.Join(parts[:i+1]...), err)
		}
	}
	return nil
}

// splitPath splits a slash-separated path into its components; "" has none.
func splitPath(p string) []string {
	if p == "" || p == "." {
		return nil
	}
	return strings.Split(p, "/")
}
