package desired

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

func TestParseRepo(t *testing.T) {
	const base = "/srv/cfg"
	type endpoint struct{ proto, user, host, path string } // what go-git's transport reads
	tests := []struct {
		in     string
		remote bool
		value  string
		ep     endpoint
	}{
		{"https://example.com/org/app.git", true, "https://example.com/org/app.git", endpoint{"https", "", "example.com", "/org/app.git"}},
		{"http://127.0.0.1:8080/app.git", true, "http://127.0.0.1:8080/app.git", endpoint{"http", "", "127.0.0.1", "/app.git"}},
		{"ssh://git@example.com:2222/srv/git/app.git", true, "ssh://git@example.com:2222/srv/git/app.git", endpoint{"ssh", "git", "example.com", "/srv/git/app.git"}},
		{"ssh://example.com/~/app.git", true, "ssh://example.com/~/app.git", endpoint{"ssh", "", "example.com", "/~/app.git"}},
		{"git://example.com/app.git", true, "git://example.com/app.git", endpoint{"git", "", "example.com", "/app.git"}},
		{"HTTPS://example.com/app.git", true, "HTTPS://example.com/app.git", endpoint{"https", "", "example.com", "/app.git"}},
		// scp-like: a colon before any slash, whatever the path starts with.
		{"git@example.com:/srv/git/app.git", true, "git@example.com:/srv/git/app.git", endpoint{"ssh", "git", "example.com", "/srv/git/app.git"}},
		{"git@github.com:org/app.git", true, "git@github.com:org/app.git", endpoint{"ssh", "git", "github.com", "org/app.git"}},
		{"example.com:app.git", true, "example.com:app.git", endpoint{"ssh", "", "example.com", "app.git"}},
		{"example.com:/abs/app.git", true, "example.com:/abs/app.git", endpoint{"ssh", "", "example.com", "/abs/app.git"}},
		{"deploy@10.0.0.5:~/repos/app.git", true, "deploy@10.0.0.5:~/repos/app.git", endpoint{"ssh", "deploy", "10.0.0.5", "~/repos/app.git"}},
		{"host:with:colons", true, "host:with:colons", endpoint{"ssh", "", "host", "with:colons"}},
		// git on unix reads a drive-letter-like address as host C.
		{"C:/repos/app", true, "C:/repos/app", endpoint{"ssh", "", "C", "/repos/app"}},
		{"C:app", true, "C:app", endpoint{"ssh", "", "C", "app"}},
		// Local paths: no colon, or a slash before the first colon.
		{"/srv/git/app.git", false, "/srv/git/app.git", endpoint{"file", "", "", "/srv/git/app.git"}},
		{"/srv/git/../git/app.git/", false, "/srv/git/app.git", endpoint{"file", "", "", "/srv/git/app.git"}},
		{"./app", false, "/srv/cfg/app", endpoint{"file", "", "", "/srv/cfg/app"}},
		{"../app", false, "/srv/app", endpoint{"file", "", "", "/srv/app"}},
		{"app", false, "/srv/cfg/app", endpoint{"file", "", "", "/srv/cfg/app"}},
		{"rel/with:colon-after-slash", false, "/srv/cfg/rel/with:colon-after-slash", endpoint{"file", "", "", "/srv/cfg/rel/with:colon-after-slash"}},
		{"./host:path", false, "/srv/cfg/host:path", endpoint{"file", "", "", "/srv/cfg/host:path"}},
		{"/abs/with:colon", false, "/abs/with:colon", endpoint{"file", "", "", "/abs/with:colon"}},
		{"./a://b", false, "/srv/cfg/a:/b", endpoint{"file", "", "", "/srv/cfg/a:/b"}},
		// file:// is a local path.
		{"file:///srv/git/app.git", false, "/srv/git/app.git", endpoint{"file", "", "", "/srv/git/app.git"}},
		{"file:///srv/my%20repo", false, "/srv/my repo", endpoint{"file", "", "", "/srv/my repo"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := parseRepo(tt.in, base)
			if err != nil {
				t.Fatal(err)
			}
			if a.remote != tt.remote || a.value != tt.value {
				t.Fatalf("got remote %v value %q, want remote %v value %q", a.remote, a.value, tt.remote, tt.value)
			}
			ep, err := transport.NewEndpoint(a.value)
			if err != nil {
				t.Fatalf("go-git: %v", err)
			}
			got := endpoint{ep.Protocol, ep.User, ep.Host, ep.Path}
			if got != tt.ep {
				t.Errorf("go-git reads %q as %+v, want %+v", a.value, got, tt.ep)
			}
		})
	}
}

func TestParseRepoErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "must not be empty"},
		{"git@host:app .git", "contains white space"},
		{"ftp://example.com/app.git", `scheme "ftp" is not supported`},
		{"git+ssh://example.com/app.git", `scheme "git+ssh" is not supported`},
		{"https://", `"https://" names no host`},
		{"ssh://host:port/app.git", `"ssh://host:port/app.git" is not a valid URL: invalid port`},
		{"file://srv/git/app.git", "a file:// URL needs an absolute path"},
		{"file:///srv/%zz", "the path is not a valid URL path"},
		{":app.git", `":app.git" names no host before the colon`},
		{"git@:app.git", "names no host before the colon"},
		{"git@host:", `"git@host:" names no repository path after the colon`},
		{"host:", "names no repository path after the colon"},
		{"-oProxyCommand=x:app", "must not start with -"},
		{"-x@host:app", "must not start with -"},
		{"a@b@host:app", `"a@b" is not a user name`},
		{"@host:app", `"" is not a user name`},
		{"ho$t:app", `"ho$t" is not a host name`},
		{"[::1]:app.git", "a bracketed host is not supported"},
		{"[git@host:22]:app.git", "a bracketed host is not supported"},
		{"git@host:22:app.git", "the digits after the colon could be a port"},
		{"0@0://x", `"0@0" is not a URL scheme`},
		{"git@host://srv/app.git", "is ambiguous"},
		{`host:\app`, "must not start with a backslash"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := parseRepo(tt.in, "/srv/cfg")
			if err == nil {
				t.Fatalf("accepted as %+v", a)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

// The self-hosted form git@host:/abs/path is a remote address, kept as
// written, not a local path under the desired file's folder.
func TestParseSCPWithAbsolutePath(t *testing.T) {
	s, err := Parse(strings.NewReader("app: a\nroot: /r\nsource: {repo: \"git@example.com:/srv/git/app.git\", commit: main}\n"), "/srv/cfg/d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Source.Repo != "git@example.com:/srv/git/app.git" {
		t.Errorf("repo %q", s.Source.Repo)
	}
	_, err = Parse(strings.NewReader("app: a\nroot: /r\nsource: {repo: \"git@example.com:\", commit: main}\n"), "d.yaml")
	want := `d.yaml:3:16: source.repo: "git@example.com:" names no repository path after the colon`
	if fes := Errors(err); len(fes) != 1 || fes[0].Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestAllowExternalSymlinks(t *testing.T) {
	for _, tt := range []struct {
		value string // "" leaves the key out
		want  bool
		err   string
	}{
		{"", false, ""},
		{"true", true, ""},
		{"false", false, ""},
		{"True", true, ""},
		{`"yes"`, false, `x.yaml:3:67: source.allow_external_symlinks: must be true or false, got a string`},
		{"1", false, `x.yaml:3:67: source.allow_external_symlinks: must be true or false, got an integer`},
	} {
		t.Run(tt.value, func(t *testing.T) {
			src := "app: a\nroot: /srv/a\nsource: {repo: /srv/git/a, commit: main"
			if tt.value != "" {
				src += ", allow_external_symlinks: " + tt.value
			}
			s, err := Parse(strings.NewReader(src+"}\n"), "x.yaml")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v; want %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Source.AllowExternalSymlinks != tt.want {
				t.Errorf("AllowExternalSymlinks = %v; want %v", s.Source.AllowExternalSymlinks, tt.want)
			}
		})
	}
}

func TestParseVerify(t *testing.T) {
	head := "app: a\nroot: /r\nsource:\n  repo: /repo\n  commit: main\n"
	tests := []struct {
		name string
		in   string
		want Verify
		errs []string
	}{
		{"absent", head, Verify{}, nil},
		{"null", head + "  verify:\n", Verify{}, nil},
		{"keyring absolute", head + "  verify: {keyring: /etc/reconciler/trusted.asc}\n", Verify{Keyring: "/etc/reconciler/trusted.asc"}, nil},
		{"keyring relative to the file's folder", head + "  verify: {keyring: keys/../trusted.asc}\n", Verify{Keyring: "/srv/cfg/trusted.asc"}, nil},
		{"allowed signers", head + "  verify: {allowed_signers: ./allowed_signers}\n", Verify{AllowedSigners: "/srv/cfg/allowed_signers"}, nil},
		{"both", head + "  verify: {keyring: k.asc, allowed_signers: a}\n", Verify{}, []string{
			"d.yaml:6:11: source.verify: give keyring (OpenPGP) or allowed_signers (ssh), not both"}},
		{"neither", head + "  verify: {}\n", Verify{}, []string{
			"d.yaml:6:11: source.verify: needs keyring (a file of armored OpenPGP public keys) or allowed_signers (an ssh allowed-signers file)"}},
		{"a string", head + "  verify: /etc/k.asc\n", Verify{}, []string{
			"d.yaml:6:11: source.verify: must be a mapping, got a string"}},
		{"unknown key", head + "  verify: {keyrnig: k.asc}\n", Verify{}, []string{
			`d.yaml:6:12: source.verify.keyrnig: unknown key "keyrnig" (did you mean "keyring"?)`}},
		{"empty path", head + "  verify: {keyring: \"\"}\n", Verify{}, []string{
			"d.yaml:6:21: source.verify.keyring: must be a file path"}},
		{"a list", head + "  verify: {allowed_signers: [a]}\n", Verify{}, []string{
			"d.yaml:6:29: source.verify.allowed_signers: must be a string, got a list"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(tt.in), "/srv/cfg/d.yaml")
			var got []string
			for _, fe := range Errors(err) {
				got = append(got, strings.TrimPrefix(fe.Error(), "/srv/cfg/"))
			}
			if !reflect.DeepEqual(got, tt.errs) {
				t.Fatalf("errors:\n got %q\nwant %q", got, tt.errs)
			}
			if err == nil && s.Source.Verify != tt.want {
				t.Errorf("got %+v, want %+v", s.Source.Verify, tt.want)
			}
		})
	}
}

// Load, unlike Parse, checks that a verify file exists, so validate
// points at the line that names a missing one.
func TestLoadVerifyFileMissing(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "trusted.asc"), []byte("keys"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	head := "app: a\nroot: host\nsource:\n  repo: ./app\n  commit: main\n"
	tests := []struct {
		name, verify, want string
	}{
		{"present", "{keyring: trusted.asc}", ""},
		{"missing", "{keyring: nosuch.asc}", "d.yaml:6:21: source.verify.keyring: " + filepath.Join(dir, "nosuch.asc") + " does not exist"},
		{"a directory", "{allowed_signers: adir}", "d.yaml:6:29: source.verify.allowed_signers: " + filepath.Join(dir, "adir") + " is not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := head + "  verify: " + tt.verify + "\n"
			path := filepath.Join(dir, "d.yaml")
			if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			got := ""
			if err != nil {
				got = strings.TrimPrefix(err.Error(), dir+"/")
			}
			if got != tt.want {
				t.Errorf("Load: %q, want %q", got, tt.want)
			}
			// Parse reads nothing but the file.
			if _, err := Parse(strings.NewReader(in), path); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
}

// urlScheme reads what git's is_url reads: the regexp it replaced is the
// oracle here.
func TestURLSchemeIsGitsIsURL(t *testing.T) {
	re := regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9+.-]*)://`)
	for _, in := range []string{
		"https://github.com/a/b", "git+ssh://h/p", "svn+ssh.x-y://h", "HTTP://h/p", "0ab://h",
		"+ab://h", "-x://h", ".x://h", "://h", "a:b://h", "/srv/x://y", "./a://b", "git@host:path",
		"host:path://x", "a b://h", "ab:/h", "ab//h", "", "a://", "ü://h", "file:///srv/x",
	} {
		scheme, ok := urlScheme(in)
		m := re.FindStringSubmatch(in)
		if ok != (m != nil) || ok && scheme != m[1] {
			t.Errorf("urlScheme(%q) = %q, %v; git's is_url reads %q", in, scheme, ok, m)
		}
	}
}
