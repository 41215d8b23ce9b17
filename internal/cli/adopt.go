package cli

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/reconciler-dev/reconciler/internal/actual"
	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/layout"
	"github.com/reconciler-dev/reconciler/internal/scrub"
)

// adoptCmd is `reconciler adopt`. It shows what it would record and
// records only with --yes: a flag rather than a prompt, so it reads the
// same over ssh, in a script and in CI, and the first run is always a dry
// one that shows the table to check (exit 0: nothing went wrong).
func adoptCmd(g *globals) *cobra.Command {
	var (
		yes         bool
		lockTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "adopt",
		Short: "Take over a host deployed by Capistrano or Ansible's deploy_helper",
		Long: `Record the release directories another tool deployed under root (releases/<time>/,
each with the commit in its REVISION file, and the link pointing at one), so that
the linked release is a rollback target and keep: prunes them. Nothing is moved or
changed but the records: the link, the releases, shared/ and repo/ stay as they are.

Without --yes, adopt shows what it would record and records nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if lockTimeout < 0 {
				return fmt.Errorf("--lock-timeout must not be negative, got %s", lockTimeout)
			}
			d, err := g.load()
			if err != nil {
				return err
			}
			a, err := actual.ObserveAdoption(d)
			if err != nil {
				return adoptError(err)
			}
			showAdoption(g.stdout, a)
			if !yes {
				fmt.Fprintf(g.stdout, "\nNothing is recorded yet: run `%s` to record %s.\n", g.command().With("adopt --yes"), releases(len(a.Releases)))
				return nil
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer log.Sync()
			// Observed again under the lock: what is recorded is what is
			// there then.
			a, err = apply.Adopt(cmd.Context(), apply.AdoptOptions{Desired: d, Log: log.Named("adopt"), LockTimeout: lockTimeout})
			if err != nil {
				return adoptError(err)
			}
			linked := a.Linked()
			fmt.Fprintf(g.stdout, "\nAdopted %s under %s; %s still points at releases/%s.\n", releases(len(a.Releases)), d.Root, d.Link, linked.Name)
			fmt.Fprintf(g.stdout, "Next: `%s` shows the deploy of %s as a release of the reconciler's own; %s stays on disk to roll back to (`%s`).\n",
				g.command().With("plan"), d.Source.Commit, linked.Name, g.command().With("rollback --to "+linked.Name))
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "record the releases shown (without it, adopt only shows them)")
	cmd.Flags().DurationVar(&lockTimeout, "lock-timeout", 0, "wait this long for an apply on the same root (default: fail at once)")
	return cmd
}

func adoptError(err error) error {
	var ae *actual.AdoptError
	if errors.As(err, &ae) {
		return err // says what is wrong and where
	}
	return fmt.Errorf("adopt: %w", err)
}

func releases(n int) string {
	if n == 1 {
		return "1 release"
	}
	return fmt.Sprintf("%d releases", n)
}

// showAdoption prints what adopt records, in a table, and what it leaves
// alone and why. Names and reasons come from the host: escaped.
func showAdoption(w io.Writer, a *actual.Adoption) {
	fmt.Fprintf(w, "Adopting %s, deployed by %s: %s -> %s\n\n", scrub.Text(a.Root), a.Tool, scrub.Text(a.Link.Path), scrub.Text(a.Link.Target))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  RELEASE\tCOMMIT\tLINKED\tRECORDED AS")
	for _, r := range a.Releases {
		linked, as := "", "complete"
		if r.Linked {
			linked, as = "yes", "complete, serving: the rollback target once a new release is linked"
		}
		if r.Again {
			as += " (again: an earlier adopt stopped)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Name, layout.Short(r.Commit), linked, as)
	}
	tw.Flush()
	if len(a.Skipped) > 0 {
		fmt.Fprintf(w, "\nLeft alone (not recorded; the reconciler never prunes them):\n")
		for _, s := range a.Skipped {
			fmt.Fprintf(w, "  releases/%s: %s\n", scrub.Text(s.Name), scrub.Text(s.Why))
		}
	}
	for _, n := range a.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", scrub.Text(n))
	}
}
