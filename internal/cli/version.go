package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

// Set at build time by a release (.goreleaser.yaml):
//
//	-ldflags "-X github.com/reconciler-dev/reconciler/internal/cli.Version=v1.2.3
//	          -X github.com/reconciler-dev/reconciler/internal/cli.Commit=<sha>
//	          -X github.com/reconciler-dev/reconciler/internal/cli.Date=<RFC 3339>"
//
// Each one left empty is taken from the build information the go command
// records: the module version (`go install …@v1.2.3`), vcs.revision and
// vcs.time (a build inside a git checkout).
var (
	Version = ""
	Commit  = ""
	Date    = ""
)

// buildInfo is what `version` prints.
type buildInfo struct {
	version, commit, date, goVersion string
	modified, dev                    bool
}

// readBuildInfo combines the ldflags variables with debug.ReadBuildInfo.
// It runs only when asked: `version` is also the start-up benchmark's
// baseline, so nothing here runs at init.
func readBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return resolveBuildInfo(Version, Commit, Date, bi)
}

// resolveBuildInfo takes each of version, commit and date from the
// ldflags value when set, else from bi (nil when the binary has none).
func resolveBuildInfo(version, commit, date string, bi *debug.BuildInfo) buildInfo {
	b := buildInfo{version: version, commit: commit, date: date, goVersion: runtime.Version()}
	if bi != nil {
		if b.version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.commit == "" {
					b.commit = s.Value
				}
			case "vcs.time":
				if b.date == "" {
					b.date = s.Value
				}
			case "vcs.modified":
				// Only true of the build's own checkout: a commit set
				// by ldflags names what was released.
				b.modified = s.Value == "true" && commit == ""
			}
		}
	}
	if b.version == "" {
		b.version, b.dev = "dev", true
	}
	return b
}

// write prints the build information: the version line first, so
// `reconciler version | head -1` is enough for scripts.
func (b buildInfo) write(w io.Writer) {
	if b.dev {
		fmt.Fprintf(w, "reconciler dev (a development build, not a release)\n")
	} else {
		fmt.Fprintf(w, "reconciler %s\n", b.version)
	}
	commit := b.commit
	switch {
	case commit == "":
		commit = "unknown (built without version control information)"
	case b.modified:
		commit += " (with uncommitted changes)"
	}
	date := b.date
	if date == "" {
		date = "unknown"
	}
	fmt.Fprintf(w, "commit:  %s\n", commit)
	fmt.Fprintf(w, "built:   %s\n", date)
	fmt.Fprintf(w, "go:      %s %s/%s\n", b.goVersion, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "desired.yaml version %d\n", desired.Version)
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build date",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			readBuildInfo().write(g.stdout)
			return nil
		},
	}
}
