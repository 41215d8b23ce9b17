package desired

// The keys of desired.yaml, in one table that both the parser (which keys
// each mapping accepts, and the order `known keys:` lists them in) and the
// JSON Schema (Schema) read, so the two cannot drift apart.
//
// Adding a key is one line in keyTable: its mapping (In), name, type and
// a one-line description; then the parser's case that reads it. A new
// mapping is a key of type Obj (or List of Obj) naming it, and one line per
// key inside it. Lines of one mapping are kept together, in the order
// `known keys:` lists them.
//
// The table is plain composite literals: the compiler lays it out
// statically, so it costs no init work in commands that never parse.

// Kind is what a key's value is.
type Kind uint8

// Kinds of value.
const (
	// Str is text. The parser also takes a number as written; the schema
	// says so only for Scalar, where a number is likely (a commit
	// 12345678, an env value 8000).
	Str Kind = iota + 1
	// Scalar is text or a number, taken as written.
	Scalar
	Int
	Bool
	// Duration is text Go's time.ParseDuration reads: 90s, 5m, 1h30m.
	Duration
	// Enum is one of the type's Values.
	Enum
	// Obj is a mapping whose keys are the table's lines with In = Ref.
	Obj
	// Map is a mapping of names (Pattern) to Elem: env.
	Map
	// List is a sequence of Elem.
	List
)

// Type is a key's type. Ref, Values, Elem and Pattern are set as Kind
// needs them.
type Type struct {
	Kind    Kind
	Ref     string   // Obj: the mapping's name (the In of its keys)
	Values  []string // Enum: the values, in documented order
	Elem    *Type    // List, Map: the type of each element
	Pattern string   // Map: what the names must match (a regexp)
}

// Key is one key of a mapping in desired.yaml.
type Key struct {
	In       string // the mapping it belongs to: Top, or the Ref of an Obj type
	Name     string
	Type     Type
	Required bool   // the parser reports it missing; the schema lists it in required
	Doc      string // one line, for the schema's description
}

// Top is the mapping of the whole file.
const Top = "desired"

// Types used by several keys.
var (
	tStr      = Type{Kind: Str}
	tInt      = Type{Kind: Int}
	tDuration = Type{Kind: Duration}
	tStrList  = Type{Kind: List, Elem: &Type{Kind: Str}}
	tChecks   = Type{Kind: List, Elem: &Type{Kind: Obj, Ref: "check"}}
)

// keyTable is every key of desired.yaml. See the top of this file.
var keyTable = []Key{
	{Top, "app", tStr, true, "the application's name: lower-case letters, digits and _ . -, at most 64 characters"},
	{Top, "root", tStr, true, "the directory the reconciler owns on the host; relative to this file when not absolute"},
	{Top, "link", tStr, false, "the name of the link under root that points at the live release (default current)"},
	{Top, "keep", tInt, false, "how many releases to keep on disk, 1 to 1000 (default 5)"},
	{Top, "source", Type{Kind: Obj, Ref: "source"}, true, "where the application's code comes from"},
	{Top, "shared", Type{Kind: Obj, Ref: "shared"}, false, "persistent paths under root/shared linked into every release"},
	{Top, "env", Type{Kind: Map, Elem: &Type{Kind: Scalar}, Pattern: `^[A-Za-z_][A-Za-z0-9_]*$`}, false, "environment of build steps, the migration and commands: NAME: value"},
	{Top, "build", Type{Kind: List, Elem: &Type{Kind: Obj, Ref: "build_step"}}, false, "the build steps, run in order inside the new release"},
	{Top, "migrate", Type{Kind: Obj, Ref: "migrate"}, false, "the migration, run after the build steps and before the switch"},
	{Top, "preflight", Type{Kind: Obj, Ref: "preflight"}, false, "start the new release on a loopback port and check it before the switch"},
	{Top, "services", Type{Kind: List, Elem: &Type{Kind: Obj, Ref: "service"}}, false, "the services that run the release, acted on after the switch"},
	{Top, "health", tChecks, false, "checks that must all pass after the services acted, or the switch is reverted"},
	{Top, "schedule", tStr, false, "when `reconciler run` reconciles: five cron fields or a descriptor like @every 5m, optionally after TZ=<zone>"},
	{Top, "run_as", tStr, false, "the user (name or uid) build steps, the migration and command checks run as"},
	{Top, "notify", Type{Kind: List, Elem: &Type{Kind: Obj, Ref: "notify"}}, false, "where a JSON POST goes after an apply"},
	{Top, "fleet", Type{Kind: Obj, Ref: "fleet"}, false, "many hosts of the app roll a target out in waves, coordinated through etcd"},

	{"source", "repo", tStr, true, "the git repository: a URL, user@host:path, or a local path relative to this file"},
	{"source", "commit", Type{Kind: Scalar}, true, "the commit to deploy: a SHA (full or short), tag or branch"},
	{"source", "path", tStr, false, "the subdirectory of the repository to deploy (default: all of it)"},
	{"source", "ssh_key", tStr, false, "a private key file for ssh:// and user@host:path repositories"},
	{"source", "allow_external_symlinks", Type{Kind: Bool}, false, "let the export write symlinks that leave the release (refused by default)"},
	{"source", "verify", Type{Kind: Obj, Ref: "verify"}, false, "the commit must carry a valid signature by one of these keys"},

	{"verify", "keyring", tStr, false, "a file of armored OpenPGP public keys"},
	{"verify", "allowed_signers", tStr, false, "an ssh-keygen allowed-signers file, for commits signed with ssh"},

	{"shared", "dirs", tStrList, false, "directories under root/shared linked into every release, relative paths"},
	{"shared", "files", tStrList, false, "files under root/shared linked into every release, relative paths"},

	{"build_step", "name", tStr, true, "the step's name: lower-case letters, digits, _ and -"},
	{"build_step", "run", tStr, true, "the shell command, run with sh -c in the release"},
	{"build_step", "timeout", tDuration, false, "how long the step may run, 1s to 24h (default 30m)"},
	{"build_step", "run_as", tStr, false, "the user (name or uid) the step runs as (default: the top-level run_as)"},
	{"build_step", "cache", Type{Kind: Obj, Ref: "step_cache"}, false, "reuse the step's outputs from a sealed cache entry while its key files are the same"},

	{"step_cache", "key", tStrList, true, "release files (patterns) whose contents decide whether the outputs can be reused"},
	{"step_cache", "paths", tStrList, true, "what the step makes, relative to where it runs; each is linked into the release"},

	{"migrate", "run", tStr, true, "the shell command, run with sh -c in the release"},
	{"migrate", "timeout", tDuration, false, "how long the migration may run, 1s to 24h (default 30m)"},
	{"migrate", "run_as", tStr, false, "the user (name or uid) the migration runs as (default: the top-level run_as)"},
	{"migrate", "kind", Type{Kind: Enum, Values: MigrationKinds}, false, "which migrations the code has and the database applied: django (built in) or other (the applied and known commands); needed by on_rollback"},
	{"migrate", "on_rollback", Type{Kind: Enum, Values: OnRollbackPolicies}, false, "a switch to a release that lacks applied migrations: warn (default) switches and records it, block refuses, reverse unapplies them first"},
	{"migrate", "manage", tStr, false, "kind django: the manage.py command (default: run up to and including manage.py)"},
	{"migrate", "applied", tStr, false, "kind other: prints the applied migrations, one app.name per line"},
	{"migrate", "known", tStr, false, "kind other: prints the migrations the release has, one app.name per line, run in the release"},
	{"migrate", "reverse", tStr, false, "kind other: unapplies $RECONCILER_MIGRATIONS_TO_REVERSE (space-separated, newest first), run in the linked release"},

	{"preflight", "run", tStr, true, "starts the app in the release, listening on $RECONCILER_PREFLIGHT_PORT"},
	{"preflight", "health", tChecks, true, "checks that must pass against it; ${RECONCILER_PREFLIGHT_PORT} expands in URLs"},
	{"preflight", "timeout", tDuration, false, "bounds the whole preflight, 1s to 1h (default 1m)"},
	{"preflight", "start", Type{Kind: Enum, Values: PreflightStarts}, false, "with_migrate (default): the server starts beside the migration, its checks run after it, and a server that fails them is started again after it; after_migrate: it starts after the migration"},

	{"service", "name", tStr, true, "the service's name: lower-case letters, digits, _ and -"},
	{"service", "manager", Type{Kind: Enum, Values: []string{ManagerCommand, ManagerSupervisor, ManagerSystemd}}, true, "what runs the service"},
	{"service", "action", Type{Kind: Enum, Values: []string{ActionRestart, ActionReload}}, false, "what a new release needs (default restart)"},
	{"service", "restart", tStr, false, "manager command: the shell command that restarts it"},
	{"service", "reload", tStr, false, "manager command: the shell command that reloads it"},
	{"service", "unit", tStr, false, "manager systemd: the unit's name"},
	{"service", "program", tStr, false, "manager supervisor: the program's name"},
	{"service", "supervisor", Type{Kind: Obj, Ref: "supervisor"}, false, "manager supervisor: how to reach supervisord"},
	{"service", "timeout", tDuration, false, "how long the action may take, 1s to 24h (default 5m)"},
	{"service", "pidfile", tStr, false, "the service's pid file, to tell which release its processes run from"},
	{"service", "health", tChecks, false, "checks of this service, after it acted"},

	{"supervisor", "config", tStr, false, "supervisord's configuration file; relative to this file when not absolute"},
	{"supervisor", "serverurl", tStr, false, "supervisord's server URL, as supervisorctl --serverurl takes it"},

	{"check", "http", tStr, false, "GET this http:// or https:// URL; a 2xx (or expect) passes"},
	{"check", "tcp", tStr, false, "connect to this host:port"},
	{"check", "command", tStr, false, "run this shell command; exit 0 passes"},
	{"check", "expect", tInt, false, "http: the status that passes, 100 to 599 (default any 2xx)"},
	{"check", "body", tStr, false, "http: text the body must contain"},
	{"check", "timeout", tDuration, false, "how long the check may take to pass, 100ms to 1h (default 30s)"},
	{"check", "interval", tDuration, false, "time between tries, 10ms to 1h (default 1s)"},
	{"check", "failures", tInt, false, "wrong answers in a row that fail the check early, 1 to 1000 (default 3)"},

	{"notify", "url", tStr, false, "an http:// or https:// URL to POST to; never shown"},
	{"notify", "url_file", tStr, false, "a file holding the URL, read at each send"},
	{"notify", "on", Type{Kind: List, Elem: &Type{Kind: Enum, Values: []string{NotifyFailure, NotifyBlocked, NotifyRevert, NotifySuccess}}}, false, "the events to send (default failure, blocked, revert)"},

	{"fleet", "etcd", tStrList, false, "the etcd endpoints, http(s)://host:port (or --etcd, RECONCILER_ETCD)"},
	{"fleet", "tls", Type{Kind: Obj, Ref: "fleet_tls"}, false, "client certificates for etcd; paths relative to this file"},
	{"fleet", "group", tStr, false, "hosts of the same app and group roll out together (default default)"},
	{"fleet", "max_parallel", tInt, false, "hosts switching at once (default 1)"},
	{"fleet", "canary", tInt, false, "the first N hosts, by name, switch alone first"},
	{"fleet", "soak", tDuration, false, "how long the canaries stay healthy before the rest follow"},
	{"fleet", "max_failures", tInt, false, "failed hosts allowed before the rollout halts (default 0)"},
	{"fleet", "migrate", Type{Kind: Enum, Values: []string{FleetMigrateOnce, FleetMigrateEach}}, false, "once: one host migrates per target, the others wait for it (default); each: every host migrates"},

	{"fleet_tls", "ca", tStr, false, "the CA bundle that signs etcd's certificates"},
	{"fleet_tls", "cert", tStr, false, "the client certificate (with key)"},
	{"fleet_tls", "key", tStr, false, "the client key (with cert)"},
}

// keysOf returns the names of mapping in's keys, in table order: what
// the parser accepts there.
func keysOf(in string) []string {
	var out []string
	for _, k := range keyTable {
		if k.In == in {
			out = append(out, k.Name)
		}
	}
	return out
}
