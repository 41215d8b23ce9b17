// Command reconciler deploys an application to a host from desired.yaml:
// plan, apply, status, history, validate.
package main

import (
	"os"

	"github.com/reconciler-dev/reconciler/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
