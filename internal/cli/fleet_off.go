//go:build !fleet

package cli

import (
	"context"
	"errors"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/fleetgate"
)

// FleetSupport: this build does not link the etcd client, whose gRPC and
// protobuf inits every command would pay for; build with -tags fleet for
// fleet:.
const FleetSupport = false

var errNoFleet = errors.New("fleet: this reconciler was built without fleet support (go build -tags fleet)")

// fleetFlags are accepted, so that a unit file works with either build.
type fleetFlags struct{ host, etcd string }

func (f *fleetFlags) add(fl *pflag.FlagSet) {
	host, _ := os.Hostname()
	fl.StringVar(&f.host, "host", host, "this host's name in its fleet (fleet: only)")
	fl.StringVar(&f.etcd, "etcd", "", "etcd client URLs, comma-separated, overriding fleet.etcd (default: $RECONCILER_ETCD)")
}

type noAgent struct{}

type agents struct {
	f   *fleetFlags
	log *zap.Logger
}

// get refuses a desired state with fleet:: deploying it alone would
// switch without the group's turn.
func (a *agents) get(st *desired.State) (*noAgent, error) {
	if st.Fleet != nil {
		return nil, errNoFleet
	}
	return nil, nil
}

func (a *agents) Close() {}

func gateOf(*noAgent) fleetgate.Gate { return nil }

func reportApply(context.Context, *noAgent, *desired.State, *apply.Result, error, *zap.Logger) {}

func fleetCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:   "fleet",
		Short: "The hosts of this app and group (needs a build with -tags fleet)",
		RunE:  func(*cobra.Command, []string) error { return errNoFleet },
	}
}
