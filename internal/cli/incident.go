package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/fsx"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/record"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

func rollbackCmd(g *globals) *cobra.Command {
	var (
		to, reason  string
		lockTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Switch to the previous healthy release now, and suspend deploys",
		Long: `Switch the link to the previous release that served healthy (or --to RELEASE),
act on the services and check health, with no fetch and no build. Deploys are then
suspended, so the daemon does not move the host back: set commit: in desired.yaml to
the commit printed, then run "reconciler resume".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := g.load()
			if err != nil {
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer log.Sync()
			if reason == "" {
				reason = "rollback"
				if to != "" {
					reason = "rollback to " + to
				}
			}
			res, err := apply.Apply(cmd.Context(), apply.Options{
				Desired:     d,
				Runner:      &runner.Runner{Log: log.Named("run")},
				Log:         log.Named("rollback"),
				View:        g.operation(g.stdout),
				LockTimeout: lockTimeout,
				Trigger:     "rollback",
				Env:         os.Environ(),
				Rollback:    &apply.Rollback{To: to, Suspension: record.Suspension{By: apply.CurrentUser(), At: time.Now().UTC(), Reason: reason}},
			})
			var be *apply.BlockedError
			if errors.As(err, &be) && be.Policy != "" {
				// migrate.on_rollback refused: the link did not move and
				// deploys are not suspended.
				return &exitError{code: ExitError, err: fmt.Errorf("rollback refused: %w\nhint: the host stays; set migrate.on_rollback to reverse or warn in %s, then run `%s` again", err, g.file, g.command().With("rollback"))}
			}
			suspended := res != nil && res.Plan != nil
			if suspended {
				fmt.Fprintf(g.stdout, "\nDeploys are suspended: the daemon will not move the host back.\n"+
					"To keep this release, set `commit: %s` in %s, then run `%s`.\n", res.Commit, g.file, g.command().With("resume"))
			}
			if err != nil {
				return &exitError{code: ExitError, err: fmt.Errorf("rollback failed: %w", err)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the release to roll back to (a name or a unique prefix); default: the previous healthy release")
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded with the suspension")
	cmd.Flags().DurationVar(&lockTimeout, "lock-timeout", 0, "wait this long for another apply on the same root (default: fail at once)")
	return cmd
}

func suspendCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "suspend",
		Short: "Stop deploys: apply refuses and the daemon only reports, until resume",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := g.load()
			if err != nil {
				return err
			}
			l := layout.New(d.Root, d.Link)
			if err := fsx.CheckDir(l.Root); err != nil {
				return fmt.Errorf("suspend: %w", err)
			}
			if err := fsx.EnsureDir(l.StateDir(), 0o700); err != nil {
				return fmt.Errorf("suspend: %w", err)
			}
			prev, err := record.ReadSuspension(l.SuspendFile())
			if err != nil {
				return err
			}
			s := &record.Suspension{By: apply.CurrentUser(), At: time.Now().UTC(), Reason: reason}
			if target, err := os.Readlink(l.LinkPath()); err == nil {
				s.Release = filepath.Base(target)
			}
			if err := record.WriteSuspension(l.SuspendFile(), s); err != nil {
				return fmt.Errorf("suspend: %w", err)
			}
			if prev != nil {
				fmt.Fprintf(g.stdout, "Was %s.\n", prev.Describe())
			}
			fmt.Fprintf(g.stdout, "Deploys %s: apply refuses and the daemon only reports, until `%s`.\n", s.Describe(), g.command().With("resume"))
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown by apply, status and the daemon")
	return cmd
}

func resumeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resume",
		Short: "Resume deploys after suspend or rollback",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := g.load()
			if err != nil {
				return err
			}
			l := layout.New(d.Root, d.Link)
			prev, err := record.ReadSuspension(l.SuspendFile())
			if err != nil {
				return err
			}
			if prev == nil {
				fmt.Fprintln(g.stdout, "Deploys are not suspended: nothing to do.")
				return nil
			}
			if err := fsx.CheckDir(l.StateDir()); err != nil {
				return fmt.Errorf("resume: %w", err)
			}
			if _, err := record.RemoveSuspension(l.SuspendFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("resume: %w", err)
			}
			fmt.Fprintf(g.stdout, "Resumed (was %s).\nThe next apply, or the daemon's next run, deploys %s: commit %s.\n", prev.Describe(), g.file, d.Source.Commit)
			return nil
		},
	}
}
