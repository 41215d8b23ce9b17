package desired

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/lazyre"
)

// MaxFileSize bounds what Load and Parse read, so a wrong path (a log file, a
// disk image) is an error and not an out-of-memory.
const MaxFileSize = 1 << 20

// Load reads and parses the desired file at path. The path is made absolute
// first, so a relative root is relative to the file's folder.
//
// Load also checks that the files source.verify names exist and are
// regular files, each a located error otherwise, so `reconciler validate`
// finds a mistyped keyring path. What is in them is checked when a commit
// is verified. Parse and ParseAt do no such I/O: the daemon, which parses
// a file read from a commit, meets a missing keyring as a failed
// verification.
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
	return parse(f, path, filepath.Dir(abs), true)
}

// Parse reads a desired file from r. file names it in errors and anchors a
// relative root or local repository path. Every problem is reported, joined,
// in file order; each is a *FieldError.
func Parse(r io.Reader, file string) (*State, error) {
	return parse(r, file, filepath.Dir(file), false)
}

// ParseAt is Parse for a file whose name in messages differs from where it
// is: a file read from a git commit. dir anchors relative paths.
func ParseAt(r io.Reader, name, dir string) (*State, error) {
	return parse(r, name, dir, false)
}

// parse parses; with checkFiles it also checks the files named in the
// desired file exist.
func parse(r io.Reader, file, base string, checkFiles bool) (*State, error) {
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
	if err := decode(dec, &doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(1, 1, "", "file is empty")
		} else {
			p.yamlError(err)
		}
		return nil, joinSorted(p.errs)
	}
	var extra yaml.Node
	if err := decode(dec, &extra); err == nil {
		p.errorf(extra.Line, extra.Column, "", "more than one YAML document; a desired file holds one")
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(err)
	}
	if len(doc.Content) == 0 {
		p.errorf(1, 1, "", "file is empty")
		return nil, joinSorted(p.errs)
	}
	s := p.state(doc.Content[0])
	if checkFiles {
		for _, f := range p.files {
			p.checkFile(f)
		}
	}
	if err := joinSorted(p.errs); err != nil {
		return nil, err
	}
	return s, nil
}

// checkFile reports a named file that is missing or no regular file.
func (p *parser) checkFile(f namedFile) {
	fi, err := os.Stat(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p.fail(f.node, f.field, "%s does not exist", f.path)
	case err != nil:
		p.fail(f.node, f.field, "%v", err)
	case !fi.Mode().IsRegular():
		p.fail(f.node, f.field, "%s is not a regular file", f.path)
	}
}

// decode runs the YAML decoder, turning a panic inside it into an error: a
// bad file must be a validation error, never a crashed command or daemon.
func decode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: the YAML parser failed: %v", r)
		}
	}()
	return dec.Decode(n)
}

var yamlLine = lazyre.New(`^yaml: line (\d+): (.*)$`)

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

var (
	appRE  = lazyre.New(`^[a-z0-9][a-z0-9_.-]*$`)
	nameRE = lazyre.New(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// reserved names cannot be the link: they are the reconciler's own entries
// under root.
var reserved = layout.Reserved

func (p *parser) state(n *yaml.Node) *State {
	s := &State{File: p.file, Link: DefaultLink, Keep: DefaultKeep}
	var (
		haveApp, haveRoot, haveSource bool
		top                           = deref(n)
	)
	ok := p.fields(n, "", keysOf(Top), func(key string, k, v *yaml.Node) {
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
			p.migrate(v, s)
		case "services":
			p.services(v, s)
		case "health":
			s.Health = p.checks(v, key)
		case "schedule":
			s.Schedule = p.schedule(v, key)
		case "run_as":
			s.RunAs = p.userName(v, key)
		case "preflight":
			p.preflight(v, s)
		case "notify":
			p.notify(v, s)
		case "fleet":
			p.fleet(v, s)
		}
	})
	if !ok {
		return s
	}
	// A step without its own run_as runs as the top-level one, wherever
	// in the file run_as is written.
	for i := range s.Build {
		if s.Build[i].RunAs == "" {
			s.Build[i].RunAs = s.RunAs
		}
	}
	if s.Migrate != nil && s.Migrate.RunAs == "" {
		s.Migrate.RunAs = s.RunAs
	}
	if s.Preflight != nil {
		s.Preflight.RunAs = s.RunAs
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
