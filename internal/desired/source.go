package desired

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

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
