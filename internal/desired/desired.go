package desired

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Version is the desired.yaml schema version this package understands.
const Version = 1

// Defaults applied when a field is absent.
const (
	DefaultLink          = "current"
	DefaultKeep          = 5
	DefaultStepTimeout   = 30 * time.Minute
	DefaultActionTimeout = 5 * time.Minute
)

// State is a validated desired.yaml. Paths in it are clean; Root is absolute
// when the file was loaded with Load.
type State struct {
	File     string // the desired file, as given to Parse
	App      string
	Root     string
	Link     string
	Keep     int
	Source   Source
	Shared   Shared
	Env      []EnvVar // sorted by name
	Build    []Step
	Migrate  *Step // nil when there is no migration
	Services []Service
	Health   []Check // checked after the services acted; all must pass
	// Preflight, when set, starts the new release on a loopback port and
	// checks it before the switch; nil when absent.
	Preflight *Preflight
	Schedule  string // cron spec; "" when absent
	// RunAs is the user build steps, the migration and command health
	// checks run as; "" for the reconciler's own user. A step's RunAs
	// overrides it (and is filled from it when absent).
	RunAs string
	// Notify are where the outcome of an apply is posted; none when
	// empty. Not part of the Fingerprint: it changes who hears of a
	// release, not what is built.
	Notify []Notify
	// Fleet, when set, makes this host one of a group rolling out
	// together through etcd; nil for a single host. Not part of the
	// Fingerprint.
	Fleet *Fleet
}

// Check kinds.
const (
	CheckHTTP    = "http"
	CheckTCP     = "tcp"
	CheckCommand = "command"
)

// Check is a health check. Exactly one of HTTP, TCP and Command is set.
type Check struct {
	Kind     string // CheckHTTP, CheckTCP or CheckCommand
	Target   string // the URL, host:port or shell command
	Expect   int    // HTTP status; 0 for any 2xx
	Body     string // HTTP: the body must contain this, after ${VAR} expansion
	Timeout  time.Duration
	Interval time.Duration
	// Failures is how many wrong answers in a row (a status outside 2xx or
	// expect, a body without body, a command's non-zero exit) fail the
	// check before its timeout: waiting does not cure a deterministic 500.
	Failures int
}

// Name is how a check is called in messages: "http http://127.0.0.1/health".
func (c Check) Name() string { return c.Kind + " " + c.Target }

// Health check defaults.
const (
	DefaultCheckTimeout  = 30 * time.Second
	DefaultCheckInterval = time.Second
	DefaultCheckFailures = 3
)

// Source says where the application's code comes from.
type Source struct {
	Repo   string // URL, scp-like address, or an absolute local path
	Commit string // full or short SHA, tag or branch, as written
	Path   string // subdirectory of the repository to deploy; "" for all
	SSHKey string // absolute path of a private key; "" for none
	// AllowExternalSymlinks lets the export write symlinks that leave the
	// release (absolute, or climbing above it); refused by default.
	AllowExternalSymlinks bool
	// Verify, when set, names whose signatures the commit must carry.
	Verify Verify
}

// Verify is source.verify: the commit must carry a valid signature from one
// of the keys in Keyring (armored OpenPGP public keys) or AllowedSigners
// (ssh-keygen's allowed-signers format, for commits signed with gpg.format
// ssh). At most one is set; both empty means commits are not verified.
// Paths are absolute. The files are read when a commit is verified, so a
// changed keyring takes effect on the next apply.
//
//	source:
//	  verify: {keyring: /etc/reconciler/trusted.asc}
//	  # or
//	  verify: {allowed_signers: /etc/reconciler/allowed_signers}
type Verify struct {
	Keyring        string
	AllowedSigners string
}

// Enabled reports whether commits must be verified.
func (v Verify) Enabled() bool { return v.Keyring != "" || v.AllowedSigners != "" }

// Shared lists the persistent paths under <root>/shared linked into every release.
type Shared struct {
	Dirs  []string
	Files []string
}

// EnvVar is one entry of env:.
type EnvVar struct {
	Name, Value string
}

// Step is a build step or the migration: a shell command run with sh -c in
// the release directory.
type Step struct {
	Name    string
	Run     string
	Timeout time.Duration
	RunAs   string // the user the command runs as; "" for the reconciler's own
	// Cache, on a build step, makes its outputs a sealed cache entry
	// reused by every release whose key files are the same.
	Cache *StepCache
	// Migrations, on the migration, says how its migrations are tracked;
	// nil when they are not. Embedded: its keys are migrate's own.
	*Migrations
}

// StepCache is a build step's cache: what makes its key and what it makes.
type StepCache struct {
	// Key are patterns of release files (path.Match per path segment; a
	// directory stands for the files beneath it). Their contents, with
	// the step's run, run_as, position and the environment, make the key.
	Key []string `json:"key"`
	// Paths are what the step makes, relative to the directory it runs
	// in; each is linked into the release.
	Paths []string `json:"paths"`
}

// Service managers.
const (
	ManagerCommand    = "command"
	ManagerSupervisor = "supervisor"
	ManagerSystemd    = "systemd"
)

// Service actions.
const (
	ActionRestart = "restart"
	ActionReload  = "reload"
)

// Service is something acted on, in order, when the link moved.
type Service struct {
	Name    string
	Manager string // ManagerCommand, ManagerSupervisor or ManagerSystemd
	Action  string // ActionRestart or ActionReload
	Restart string // command manager: shell command for restart
	Reload  string // command manager: shell command for reload
	Unit    string // systemd manager: the unit
	Program string // supervisor manager: the program (or group:*)
	// Supervisor optionally points supervisorctl at a config file or server URL.
	Supervisor SupervisorConn
	Timeout    time.Duration
	// PIDFile names the service's main process, relative to root when not
	// absolute. Without it the main PID comes from the manager (systemd,
	// supervisor); the command manager then has none.
	PIDFile string
	Health  []Check
}

// SupervisorConn says how supervisorctl reaches supervisord.
type SupervisorConn struct {
	Config    string
	ServerURL string
}

// Fingerprint identifies what builds a release from a commit: the source
// path, the shared paths, the environment, the build steps and the migration.
// The same commit with a different fingerprint is a different release.
// Timeouts are left out on purpose: they change how long a step may take, not
// what it produces.
func (s *State) Fingerprint() string {
	type step struct {
		Name, Run string
		Cache     *StepCache `json:",omitempty"`
	}
	v := struct {
		Path    string
		Shared  Shared
		Env     []EnvVar
		Build   []step
		Migrate *step
	}{Path: s.Source.Path, Shared: s.Shared, Env: s.Env}
	for _, b := range s.Build {
		v.Build = append(v.Build, step{b.Name, b.Run, b.Cache})
	}
	if s.Migrate != nil {
		v.Migrate = &step{Name: s.Migrate.Name, Run: s.Migrate.Run}
	}
	return hashJSON(v)
}

// Fingerprint identifies one step by its name and command, so a resumed
// release can check that the steps it recorded are the steps it would run.
func (st Step) Fingerprint() string {
	// A step without a cache keeps the fingerprint it had before caches
	// existed: upgrading the reconciler rebuilds nothing.
	return hashJSON(struct {
		Name, Run string
		Cache     *StepCache `json:",omitempty"`
	}{st.Name, st.Run, st.Cache})
}

func hashJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain strings and slices: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}
