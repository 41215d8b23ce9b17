package desired

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// Migration kinds: how the reconciler learns which migrations a release
// has and which are applied.
const (
	// MigrationsDjango: `<manage> showmigrations --plan`, built in.
	MigrationsDjango = "django"
	// MigrationsOther: the applied, known and reverse commands.
	MigrationsOther = "other"
)

// Rollback policies: what a switch to a release that lacks applied
// migrations does.
const (
	OnRollbackWarn    = "warn"    // switch anyway, and record it
	OnRollbackBlock   = "block"   // refuse; the host stays
	OnRollbackReverse = "reverse" // unapply them with the newer code first
)

// MigrationKinds and OnRollbackPolicies are the values the parser accepts.
var (
	MigrationKinds     = []string{MigrationsDjango, MigrationsOther}
	OnRollbackPolicies = []string{OnRollbackWarn, OnRollbackBlock, OnRollbackReverse}
)

// Migrations says how the migrations of a release are tracked, so that a
// rollback to a release that lacks applied ones is seen. Its fields sit
// in migrate: (embedded in the migration's Step), as in the file.
type Migrations struct {
	Kind       string // MigrationsDjango or MigrationsOther
	OnRollback string // OnRollbackWarn (default), OnRollbackBlock or OnRollbackReverse
	// Manage is Django's manage command ("venv/bin/python manage.py"):
	// migrate.manage, or run up to and including manage.py.
	Manage string
	// Applied, Known and Reverse are the commands of MigrationsOther:
	// each lists one migration a line ("app.name" or "app name"); reverse
	// unapplies those in $RECONCILER_MIGRATIONS_TO_REVERSE. Reverse is ""
	// unless on_rollback is reverse needs it, or it is given.
	Applied, Known, Reverse string
}

// ManageOf derives Django's manage command from the migrate command: run
// up to and including manage.py (a word of it, or a path ending in it);
// "" when run has none.
func ManageOf(run string) string {
	const word = "manage.py"
	for i := 0; ; {
		j := strings.Index(run[i:], word)
		if j < 0 {
			return ""
		}
		start, end := i+j, i+j+len(word)
		before := start == 0 || run[start-1] == '/' || isSpace(run[start-1])
		after := end == len(run) || isSpace(run[end])
		if before && after {
			return strings.TrimSpace(run[:end])
		}
		i = end
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' }

// migrate reads migrate: a step, and how its migrations are tracked.
func (p *parser) migrate(n *yaml.Node, s *State) {
	var (
		m                                     Migrations
		kindNode, policyNode, manageNode      *yaml.Node
		tracked                               bool
		applied, known, reverse, manage, kind string
	)
	nerr := len(p.errs)
	st, ok := p.stepWith(n, "migrate", false, keysOf("migrate"), func(key string, k, v *yaml.Node) {
		fp := "migrate." + key
		val, ok := p.str(v, fp)
		if !ok {
			return
		}
		if strings.TrimSpace(val) == "" {
			p.fail(v, fp, "must not be empty")
			return
		}
		switch key {
		case "kind":
			kindNode, kind = k, val
			if !contains(MigrationKinds, val) {
				p.fail(v, fp, "unknown kind %q: django is built in; for another framework write kind: other and the applied, known and reverse commands", val)
			}
		case "on_rollback":
			policyNode, m.OnRollback = k, val
			if !contains(OnRollbackPolicies, val) {
				p.fail(v, fp, "%q is not a policy: want warn, block or reverse", val)
			}
		case "manage":
			manageNode, manage = k, val
		case "applied":
			applied = val
		case "known":
			known = val
		case "reverse":
			reverse = val
		}
	})
	if !ok || len(p.errs) != nerr {
		return
	}
	st.Name = "migrate"
	s.Migrate = &st
	if kind == "" && (applied != "" || known != "") {
		kind = MigrationsOther
	}
	at := func(nodes ...*yaml.Node) *yaml.Node {
		for _, x := range nodes {
			if x != nil {
				return x
			}
		}
		return n
	}
	switch kind {
	case "":
		if policyNode != nil || manageNode != nil || reverse != "" {
			p.fail(at(policyNode, manageNode), "migrate.kind", "is required to track migrations: kind: django, or kind: other with the applied and known commands")
		}
		return
	case MigrationsDjango:
		tracked = true
		for _, c := range []struct{ name, val string }{{"applied", applied}, {"known", known}, {"reverse", reverse}} {
			if c.val != "" {
				p.fail(kindNode, "migrate."+c.name, "is built in with kind: django (manage.py showmigrations --plan, manage.py migrate <app> <migration>)")
			}
		}
		m.Manage = manage
		if m.Manage == "" {
			m.Manage = ManageOf(st.Run)
		}
		if m.Manage == "" {
			p.fail(kindNode, "migrate.manage", "kind: django needs the manage command, and migrate.run has no manage.py: write it, e.g. manage: venv/bin/python manage.py")
		}
	case MigrationsOther:
		tracked = true
		if manageNode != nil {
			p.fail(manageNode, "migrate.manage", "is for kind: django")
		}
		m.Applied, m.Known, m.Reverse = applied, known, reverse
		for _, c := range []struct{ name, val string }{{"applied", applied}, {"known", known}} {
			if c.val == "" {
				p.fail(at(kindNode, policyNode), "migrate."+c.name, "is required with kind: other: a command that lists one migration a line (app.name or app name)")
			}
		}
	}
	if !tracked {
		return
	}
	m.Kind = kind
	if m.OnRollback == "" {
		m.OnRollback = OnRollbackWarn
	}
	if m.Kind == MigrationsOther && m.OnRollback == OnRollbackReverse && m.Reverse == "" {
		p.fail(at(policyNode), "migrate.reverse", "is required with on_rollback: reverse: a command that unapplies the migrations in $RECONCILER_MIGRATIONS_TO_REVERSE")
	}
	st.Migrations = &m
	s.Migrate = &st
}
