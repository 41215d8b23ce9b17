// Package cli is the reconciler's command line: flags and wiring only. Main
// alone prints errors and picks the exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fleetgate"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/history"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/plan"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/scrub"
	"github.com/reconciler-dev/reconciler/internal/status"
	"github.com/reconciler-dev/reconciler/internal/steplog"
	"github.com/reconciler-dev/reconciler/internal/view"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitError   = 1
	ExitChanges = 2 // plan --detailed-exitcode: changes pending
)

// exitError carries an exit code through cobra without an error message
// of its own (the command already printed what it had to say).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// Main runs the command line with args (without the program name) and
// returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := &globals{stdout: stdout, stderr: stderr}
	cmd := newRoot(g)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			printErr(g.human(stderr), ee.err)
		}
		return ee.code
	}
	printErr(g.human(stderr), err)
	return ExitError
}

func printErr(w io.Writer, err error) {
	if fes := desired.Errors(err); len(fes) > 0 {
		for _, fe := range fes {
			fmt.Fprintf(w, "error: %s\n", fe)
		}
		return
	}
	fmt.Fprintf(w, "error: %s\n", err)
}

type globals struct {
	file     string
	logLevel string
	noColor  bool
	stdout   io.Writer
	stderr   io.Writer
}

// human is w for text meant for people: coloured when w is a terminal and
// neither --no-color nor NO_COLOR says otherwise. JSON never goes through
// it.
func (g *globals) human(w io.Writer) io.Writer {
	return view.Colorize(w, view.ColorOn(w, g.noColor, os.Getenv))
}

// operation is the human view of an apply on w, with a heartbeat for
// silent steps as often as suits w.
func (g *globals) operation(w io.Writer) *view.OperationHuman {
	return &view.OperationHuman{W: g.human(w), Cmd: g.command(), Heartbeat: view.HeartbeatFor(w)}
}

// New builds the command tree.
func New(stdout, stderr io.Writer) *cobra.Command {
	return newRoot(&globals{stdout: stdout, stderr: stderr})
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "reconciler",
		Short:         "Deploy applications to hosts declaratively from desired.yaml",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		// Checked before any command runs: a bad level is a usage
		// error, whether or not the command logs.
		if _, err := zapcore.ParseLevel(g.logLevel); err != nil {
			return fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
		}
		return nil
	}
	root.PersistentFlags().StringVarP(&g.file, "file", "f", defaultFile, "the desired state file")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn, error")
	root.PersistentFlags().BoolVar(&g.noColor, "no-color", false, "no colour, even on a terminal (as the NO_COLOR environment variable)")
	root.AddCommand(
		validateCmd(g), planCmd(g), applyCmd(g), runCmd(g), statusCmd(g), historyCmd(g), logsCmd(g), versionCmd(g),
		rollbackCmd(g), suspendCmd(g), resumeCmd(g), adoptCmd(g),
		initCmd(g), schemaCmd(g), fleetCmd(g),
	)
	// --version prints what `version` does; cobra's own flag would need
	// the text computed before every command.
	var showVersion bool
	root.Flags().BoolVar(&showVersion, "version", false, "print the version, commit and build date")
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if showVersion {
			readBuildInfo().write(g.stdout)
			return nil
		}
		return cmd.Help()
	}
	return root
}

func (g *globals) logger() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(g.logLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(g.stderr), lvl)
	// No log line shows a password in a URL.
	return zap.New(scrub.Core(core)), nil
}

// defaultFile is the desired file when -f is not given.
const defaultFile = "desired.yaml"

// command is how the user invoked the reconciler, for hints to paste.
func (g *globals) command() view.Command { return view.CommandFor(g.file, defaultFile) }

// applyError says what to do about a failed apply, as a command.
func (g *globals) applyError(err error) error {
	var be *apply.BlockedError
	if errors.As(err, &be) && be.Policy != "" {
		return fmt.Errorf("apply refused: %w\nhint: the host stays; set migrate.on_rollback (reverse or warn) or source.commit in %s, then run `%s`", err, g.file, g.command().With("apply"))
	}
	if errors.As(err, &be) {
		return fmt.Errorf("apply: %w\nhint: run `%s` to try it again, or change source.commit or the build", err, g.command().With("apply --retry"))
	}
	var se *apply.SuspendedError
	if errors.As(err, &se) {
		return fmt.Errorf("apply refused: %w\nhint: run `%s` to deploy again", err, g.command().With("resume"))
	}
	var we *fleetgate.WaitingError
	if errors.As(err, &we) {
		return fmt.Errorf("apply %w\nhint: the host stays on its release until its turn in the fleet; run `%s` again, or see `%s`", we, g.command().With("apply"), g.command().With("fleet status"))
	}
	if errors.Is(err, fleetgate.ErrHalted) {
		return fmt.Errorf("apply refused: %w\nhint: the host stays on its release; a new commit starts a new rollout (see `%s`)", err, g.command().With("fleet status"))
	}
	if errors.Is(err, apply.ErrInterrupted) {
		return fmt.Errorf("apply interrupted: run `%s` to resume", g.command().With("apply"))
	}
	return fmt.Errorf("apply failed: %w", err)
}

func (g *globals) load() (*desired.State, error) {
	return desired.Load(g.file)
}

// cache is the app's git cache: shallow, fetching only what source.commit
// needs. log hears a re-fetch into a fresh cache; nil for nowhere.
func cache(d *desired.State, log ...*zap.Logger) *gitcache.Cache {
	l := layout.New(d.Root, d.Link)
	var lg *zap.Logger
	if len(log) > 0 {
		lg = log[0].Named("git")
	}
	return &gitcache.Cache{Dir: l.RepoDir(), URL: d.Source.Repo, Ref: d.Source.Commit, Log: lg, SSHKey: d.Source.SSHKey, TmpDir: l.TmpDir(), AllowExternalSymlinks: d.Source.AllowExternalSymlinks,
		Verify: gitcache.Verifier{Keyring: d.Source.Verify.Keyring, AllowedSigners: d.Source.Verify.AllowedSigners}}
}

func validateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate",
		Short: "Check desired.yaml and report every problem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := g.load()
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s: valid (app %s, root %s, %s, %s)\n", g.file, d.App, d.Root, count(len(d.Build), "build step"), count(len(d.Services), "service"))
			return nil
		},
	}
}

func planCmd(g *globals) *cobra.Command {
	var asJSON, detailed, retry bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what apply would do; changes nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := g.load()
			if err != nil {
				return err
			}
			p, err := apply.Plan(cmd.Context(), d, cache(d), plan.Options{Retry: retry, Now: time.Now(), AsRoot: os.Geteuid() == 0})
			if err != nil {
				return err
			}
			if asJSON {
				err = view.PlanJSON(g.stdout, p)
			} else {
				err = view.PlanHuman(g.human(g.stdout), p, g.command())
			}
			if err != nil {
				return err
			}
			switch {
			case !detailed:
				return nil
			case p.Blocked != nil:
				return &exitError{code: ExitError}
			case p.Changes():
				return &exitError{code: ExitChanges}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	cmd.Flags().BoolVar(&detailed, "detailed-exitcode", false, "exit 0 when there are no changes, 2 when there are, 1 on error")
	cmd.Flags().BoolVar(&retry, "retry", false, "plan as apply --retry would")
	return cmd
}

func applyCmd(g *globals) *cobra.Command {
	var (
		asJSON, retry bool
		lockTimeout   time.Duration
		fleetWait     time.Duration
		ff            fleetFlags
	)
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Reconcile the host with desired.yaml",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if lockTimeout < 0 {
				return fmt.Errorf("--lock-timeout must not be negative, got %s", lockTimeout)
			}
			if fleetWait < 0 {
				return fmt.Errorf("--fleet-wait must not be negative, got %s", fleetWait)
			}
			d, err := g.load()
			if err != nil {
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer log.Sync()
			var v apply.View = g.operation(g.stdout)
			if asJSON {
				// Progress for people on stderr; stdout stays one JSON
				// document, never coloured.
				v = &view.OperationJSON{W: g.stdout, Progress: g.operation(g.stderr)}
			}
			// With fleet:, the apply takes its turn among the group's
			// hosts; the agent's lease goes when the command ends.
			fa := &agents{f: &ff, log: log}
			defer fa.Close()
			ag, err := fa.get(d)
			if err != nil {
				return err
			}
			res, err := apply.Apply(cmd.Context(), apply.Options{
				Fleet:       gateOf(ag),
				FleetWait:   fleetWait,
				Desired:     d,
				Git:         cache(d, log),
				Runner:      &runner.Runner{Log: log.Named("run")},
				Log:         log.Named("apply"),
				View:        v,
				Retry:       retry,
				LockTimeout: lockTimeout,
				Trigger:     "cli",
				Env:         os.Environ(),
			})
			reportApply(cmd.Context(), ag, d, res, err, log)
			// After the result is shown; a slow webhook delays the
			// exit by notifyWait at most, never the deploy.
			notifyApply(cmd.Context(), d, res, err, log.Named("notify"))
			if err != nil {
				return &exitError{code: ExitError, err: g.applyError(err)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON on stdout (progress goes to stderr)")
	cmd.Flags().BoolVar(&retry, "retry", false, "build a target that failed before again, from the step that failed")
	cmd.Flags().DurationVar(&lockTimeout, "lock-timeout", 0, "wait this long for another apply on the same root (default: fail at once)")
	cmd.Flags().DurationVar(&fleetWait, "fleet-wait", 0, "with fleet:, wait this long for this host's turn (another host's migration, a switch slot), then end waiting on the current release (default: until interrupted)")
	ff.add(cmd.Flags())
	return cmd
}

func statusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the linked release, the releases on disk and the last apply",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := g.load()
			if err != nil {
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			r, err := statusReport(cmd.Context(), d, log)
			if err != nil {
				return err
			}
			if asJSON {
				return status.RenderJSON(g.stdout, r)
			}
			return status.RenderText(g.human(g.stdout), r)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func historyCmd(g *globals) *cobra.Command {
	var (
		asJSON, steps bool
		limit         int
	)
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Show past applies, newest first: who, from what to what, and how it ended",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit must not be negative, got %d", limit)
			}
			d, err := g.load()
			if err != nil {
				return err
			}
			// Read from the end: --limit costs what it shows.
			applies, skipped, err := history.Applies(layout.New(d.Root, d.Link).HistoryFile(), limit, steps)
			if err != nil {
				return err
			}
			if asJSON {
				err = view.HistoryJSON(g.stdout, applies)
			} else {
				err = view.HistoryHuman(g.human(g.stdout), applies)
			}
			if err != nil {
				return err
			}
			if skipped > 0 {
				fmt.Fprintf(g.stderr, "warning: %d unreadable history lines skipped\n", skipped)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the applies as a JSON array")
	cmd.Flags().BoolVar(&steps, "steps", false, "show each apply's steps, and its id, host and releases")
	cmd.Flags().IntVar(&limit, "limit", 20, "show the last N applies; 0 for all")
	return cmd
}

func logsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logs [RELEASE] [STEP]",
		Short: "Print the full output of a release's step (default: the latest failure)",
		Long: `Print the full output of a release's step, as its command printed it.

With no arguments: the step that failed in the release whose failure is the
newest. With RELEASE only: that release's failed step, or the list of its
logs when it has no failure. RELEASE is a release name, a prefix of one, or
a prefix (4 hex digits or more) of its commit, naming one release on disk.`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := g.load()
			if err != nil {
				return err
			}
			l := layout.New(d.Root, d.Link)
			rels, err := steplog.Releases(l)
			if err != nil {
				return fmt.Errorf("logs: %w", err)
			}
			var r steplog.Release
			if len(args) == 0 {
				var ok bool
				if r, ok = steplog.LatestFailure(rels); !ok && len(rels) == 0 {
					return fmt.Errorf("no failure to show: there are no releases on disk under %s", l.ReleasesDir())
				} else if !ok {
					which := fmt.Sprintf("none of the %d releases on disk has one recorded", len(rels))
					if len(rels) == 1 {
						which = "the one release on disk has none recorded"
					}
					return fmt.Errorf("no failure to show: %s; name one: `%s`", which, g.command().With("logs RELEASE [STEP]"))
				}
			} else if r, err = steplog.Find(rels, args[0]); err != nil {
				return err
			}
			fail := r.Failure()
			if len(args) < 2 && fail == nil {
				return listLogs(g, l, r)
			}
			var step string
			if len(args) == 2 {
				step = args[1]
			} else {
				step = fail.Step
			}
			f, err := steplog.Open(l, r, step)
			var missing *steplog.MissingError
			if errors.As(err, &missing) && len(args) < 2 {
				// The failed step keeps no log (a health check, a service
				// action, the export): its record keeps what there is.
				fmt.Fprintf(g.stderr, "release %s failed at step %s, which keeps no log; its record keeps the error and the last of the output:\n", r, step)
				fmt.Fprintf(g.stdout, "%s\n", fail.Error)
				if out := strings.TrimRight(fail.Output, "\n"); out != "" {
					fmt.Fprintf(g.stdout, "%s\n", out)
				}
				return nil
			}
			if errors.Is(err, fs.ErrPermission) {
				return fmt.Errorf("%w (logs are the reconciler's: run this as the user it runs as)", err)
			}
			if err != nil {
				return err
			}
			defer f.Close()
			what := ""
			if fail != nil && fail.Step == step {
				what = ", failed: " + fail.Error
			}
			fmt.Fprintf(g.stderr, "release %s, step %s%s\n  %s\n", r, step, what, steplog.Path(l, r.Name, step))
			if _, err := io.Copy(g.stdout, f); err != nil {
				return fmt.Errorf("read %s: %w", f.Name(), err)
			}
			return nil
		},
	}
}

// listLogs says which step logs release r keeps, for `logs RELEASE` when
// it has no failure to show.
func listLogs(g *globals, l layout.Layout, r steplog.Release) error {
	has, err := steplog.Logs(l, r)
	if err != nil {
		return err
	}
	if len(has) == 0 {
		fmt.Fprintf(g.stdout, "Release %s has no failure and no step logs: none of its steps ran a command.\n", r)
		return nil
	}
	fmt.Fprintf(g.stdout, "Release %s has no failure recorded. Its step logs:\n", r)
	for _, s := range has {
		fmt.Fprintf(g.stdout, "  %s\n", s)
	}
	fmt.Fprintf(g.stdout, "Show one with `%s`.\n", g.command().With("logs "+r.Name+" STEP"))
	return nil
}

// statusReport observes the host for `status` and the daemon's /status.
func statusReport(ctx context.Context, d *desired.State, log *zap.Logger) (*status.Report, error) {
	a, err := actual.Observe(ctx, d, nil)
	if err != nil {
		return nil, err
	}
	// Only the last apply, read from the history's end: status costs the
	// same however long the history is.
	last, err := history.Last(layout.New(d.Root, d.Link).HistoryFile())
	if err != nil {
		return nil, err
	}
	svcs := status.ObserveServices(ctx, d, &runner.Runner{Log: log.Named("run")})
	return status.Make(d, a, last, svcs), nil
}

// count says n things, in the singular for one.
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
