package desired

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds what Load and Parse read, so a wrong path (a log file, a
// disk image) is an error and not an out-of-memory.
const MaxFileSize = 1 << 20

// Load reads and parses the desired file at path. The path is made absolute
// first, so a relative root is relative to the file's folder.
func Load(path string) (*State, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("desired file %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("desired file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("desired file: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("desired file %s: is a directory", path)
	}
	// Errors name the file as the user wrote it; a relative root is
	// anchored at its real folder.
	return parse(f, path, filepath.Dir(abs))
}

// Parse reads a desired file from r. file names it in errors and anchors a
// relative root or local repository path. Every problem is reported, joined,
// in file order; each is a *FieldError.
func Parse(r io.Reader, file string) (*State, error) {
	return parse(r, file, filepath.Dir(file))
}

// ParseAt is Parse for a file whose name in messages differs from where it
// is: a file read from a git commit. dir anchors relative paths.
func ParseAt(r io.Reader, name, dir string) (*State, error) {
	return parse(r, name, dir)
}

func parse(r io.Reader, file, base string) (*State, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	p := &parser{file: file, base: base}
	if len(data) > MaxFileSize {
		p.errorf(1, 1, "", "file is larger than %d bytes; is this the desired file?", MaxFileSize)
		return nil, joinSorted(p.errs)
	}
	if bytes.IndexByte(data, 0) >= 0 {
		p.errorf(1, 1, "", "file contains NUL bytes; is this the desired file?")
		return nil, joinSorted(p.errs)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(1, 1, "", "file is empty")
		} else {
			p.yamlError(err)
		}
		return nil, joinSorted(p.errs)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(extra.Line, extra.Column, "", "more than one YAML document; a desired file holds one")
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(err)
	}
	if len(doc.Content) == 0 {
		p.errorf(1, 1, "", "file is empty")
		return nil, joinSorted(p.errs)
	}
	s := p.state(doc.Content[0])
	if err := joinSorted(p.errs); err != nil {
		return nil, err
	}
	return s, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *parser) yamlError(err error) {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, m := range te.Errors {
			p.yamlMsg(m)
		}
		return
	}
	p.yamlMsg(err.Error())
}

func (p *parser) yamlMsg(msg string) {
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.errorf(line, 1, "", "invalid YAML: %s", m[2])
		return
	}
	p.errorf(1, 1, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

type parser struct {
	file string
	base string // the folder relative paths are relative to
	errs []*FieldError
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

var (
	intRE     = regexp.MustCompile(`^[-+]?[0-9]+$`)
	appRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	stepRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	unitRE    = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]+$`)
	programRE = regexp.MustCompile(`^[A-Za-z0-9_.:*-]+$`)
)

// reserved names cannot be the link: they are the reconciler's own entries
// under root.
var reserved = []string{"releases", "shared", "repo", ".reconciler"}

func (p *parser) state(n *yaml.Node) *State {
	s := &State{File: p.file, Link: DefaultLink, Keep: DefaultKeep}
	var (
		haveApp, haveRoot, haveSource bool
		top                           = deref(n)
	)
	known := []string{"app", "root", "link", "keep", "source", "shared", "env", "build", "migrate", "services", "health", "schedule"}
	ok := p.fields(n, "", known, func(key string, k, v *yaml.Node) {
		switch key {
		case "app":
			haveApp = true
			if a, ok := p.str(v, key); ok {
				if len(a) > 64 || !appRE.MatchString(a) {
					p.fail(v, key, "%q is not a valid app name: use lower-case letters, digits and _ . - (starting with a letter or digit), at most 64 characters", a)
				}
				s.App = a
			}
		case "root":
			haveRoot = true
			if r, ok := p.str(v, key); ok {
				s.Root = p.root(v, r)
			}
		case "link":
			if l, ok := p.str(v, key); ok {
				switch {
				case !nameRE.MatchString(l) || len(l) > 64:
					p.fail(v, key, "%q is not a plain name: use letters, digits and _ . - only (no slashes)", l)
				case contains(reserved, l):
					p.fail(v, key, "%q is reserved for the reconciler's own use under root", l)
				default:
					s.Link = l
				}
			}
		case "keep":
			if k, ok := p.int(v, key, 1, 1000); ok {
				s.Keep = k
			}
		case "source":
			haveSource = true
			p.source(v, s)
		case "shared":
			p.shared(v, s)
		case "env":
			p.env(v, s)
		case "build":
			p.build(v, s)
		case "migrate":
			st, ok := p.step(v, "migrate", false)
			if ok {
				st.Name = "migrate"
				s.Migrate = &st
			}
		case "services":
			p.services(v, s)
		case "health":
			s.Health = p.checks(v, key)
		case "schedule":
			if c, ok := p.str(v, key); ok {
				if err := ValidateSchedule(c); err != nil {
					p.fail(v, key, "%v", err)
				}
				s.Schedule = c
			}
		}
	})
	if !ok {
		return s
	}
	for _, req := range []struct {
		have bool
		name string
	}{{haveApp, "app"}, {haveRoot, "root"}, {haveSource, "source"}} {
		if !req.have {
			p.fail(top, req.name, "is required")
		}
	}
	return s
}

func (p *parser) root(v *yaml.Node, r string) string {
	if r == "" {
		p.fail(v, "root", "must not be empty")
		return ""
	}
	if strings.ContainsAny(r, "\x00\n") {
		p.fail(v, "root", "contains a control character")
		return ""
	}
	if !filepath.IsAbs(r) {
		r = filepath.Join(p.base, r)
	}
	r = filepath.Clean(r)
	if r == "/" {
		p.fail(v, "root", "must not be / itself: the reconciler owns what is under root")
		return ""
	}
	return r
}

func (p *parser) source(n *yaml.Node, s *State) {
	var haveRepo, haveCommit bool
	p.fields(n, "source", []string{"repo", "commit", "path", "ssh_key"}, func(key string, k, v *yaml.Node) {
		fp := "source." + key
		val, ok := p.str(v, fp)
		if !ok {
			if key == "repo" {
				haveRepo = true
			} else if key == "commit" {
				haveCommit = true
			}
			return
		}
		switch key {
		case "repo":
			haveRepo = true
			repo, err := checkRepo(val, p.base)
			if err != nil {
				p.fail(v, fp, "%v", err)
			}
			s.Source.Repo = repo
		case "commit":
			haveCommit = true
			if err := CheckRef(val); err != nil {
				p.fail(v, fp, "%v", err)
			}
			s.Source.Commit = val
		case "path":
			if val == "" || val == "." {
				return
			}
			if err := checkRelPath(val); err != nil {
				p.fail(v, fp, "%v", err)
				return
			}
			s.Source.Path = filepath.Clean(val)
		case "ssh_key":
			if val == "" {
				return
			}
			if !filepath.IsAbs(val) {
				val = filepath.Join(p.base, val)
			}
			s.Source.SSHKey = filepath.Clean(val)
		}
	})
	if n.Kind == yaml.MappingNode {
		if !haveRepo {
			p.fail(n, "source.repo", "is required")
		}
		if !haveCommit {
			p.fail(n, "source.commit", "is required")
		}
	}
}

var (
	schemeRE = regexp.MustCompile(`^([a-z][a-z0-9+.-]*)://`)
	scpRE    = regexp.MustCompile(`^([A-Za-z0-9_.-]+@)?[A-Za-z0-9_.-]+:[^/\\]`)
)

func checkRepo(repo, base string) (string, error) {
	if repo == "" {
		return "", errors.New("must not be empty")
	}
	if strings.ContainsAny(repo, " \t\r\n\x00") {
		return "", fmt.Errorf("%q contains white space or a control character", repo)
	}
	if m := schemeRE.FindStringSubmatch(repo); m != nil {
		switch m[1] {
		case "https", "http", "ssh", "git", "file":
			return repo, nil
		}
		return "", fmt.Errorf("scheme %q is not supported: use https, ssh, git, file, a user@host:path address or a local path", m[1])
	}
	if scpRE.MatchString(repo) && !strings.HasPrefix(repo, "/") && !strings.HasPrefix(repo, ".") {
		return repo, nil
	}
	if !filepath.IsAbs(repo) {
		repo = filepath.Join(base, repo)
	}
	return filepath.Clean(repo), nil
}

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

// stepNames the reconciler uses itself, so a build step cannot take them.
var stepNames = []string{"export", "shared", "migrate"}

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
	st := Step{Timeout: DefaultStepTimeout}
	known := []string{"run", "timeout"}
	if named {
		known = []string{"name", "run", "timeout"}
	}
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
	known := []string{"name", "manager", "action", "restart", "reload", "unit", "program", "supervisor", "timeout", "pidfile", "health"}
	if !p.fields(n, path, known, func(key string, k, v *yaml.Node) {
		fp := path + "." + key
		keyNodes[key] = k
		if key == "supervisor" {
			p.fields(v, fp, []string{"config", "serverurl"}, func(key string, k, v *yaml.Node) {
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

func (p *parser) checks(n *yaml.Node, path string) []Check {
	var out []Check
	p.list(n, path, func(i int, v *yaml.Node) {
		fp := fmt.Sprintf("%s[%d]", path, i)
		c := Check{Timeout: DefaultCheckTimeout, Interval: DefaultCheckInterval}
		nerr := len(p.errs)
		var kinds []string
		if !p.fields(v, fp, []string{"http", "tcp", "command", "expect", "body", "timeout", "interval"}, func(key string, k, val *yaml.Node) {
			kp := fp + "." + key
			switch key {
			case "http", "tcp", "command":
				kinds = append(kinds, key)
				t, ok := p.str(val, kp)
				if !ok {
					return
				}
				c.Kind, c.Target = key, t
				switch {
				case strings.TrimSpace(t) == "":
					p.fail(val, kp, "must not be empty")
				case key == "http" && !strings.HasPrefix(t, "http://") && !strings.HasPrefix(t, "https://"):
					p.fail(val, kp, "%q is not an http:// or https:// URL", t)
				case key == "tcp" && !hostPortRE.MatchString(t):
					p.fail(val, kp, "%q is not host:port", t)
				}
			case "expect":
				if code, ok := p.int(val, kp, 100, 599); ok {
					c.Expect = code
				}
			case "body":
				if b, ok := p.str(val, kp); ok {
					c.Body = b
				}
			case "timeout":
				if d, ok := p.duration(val, kp, 100*time.Millisecond, time.Hour); ok {
					c.Timeout = d
				}
			case "interval":
				if d, ok := p.duration(val, kp, 10*time.Millisecond, time.Hour); ok {
					c.Interval = d
				}
			}
		}) {
			return
		}
		switch {
		case len(kinds) == 0:
			p.fail(v, fp, "needs one of http, tcp or command")
		case len(kinds) > 1:
			p.fail(v, fp, "has %s: a check is one of http, tcp or command", strings.Join(kinds, " and "))
		case c.Kind != CheckHTTP && (c.Expect != 0 || c.Body != ""):
			p.fail(v, fp, "expect and body are for http checks")
		}
		if len(p.errs) == nerr {
			out = append(out, c)
		}
	})
	return out
}

var hostPortRE = regexp.MustCompile(`^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$`)
