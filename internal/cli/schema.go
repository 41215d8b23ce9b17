package cli

import (
	"github.com/spf13/cobra"

	"github.com/reconciler-dev/reconciler/internal/desired"
)

func schemaCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of desired.yaml, for editors",
		Long: `Print the JSON Schema (draft 2020-12) of desired.yaml, made from the same
key table the parser reads. Editors with yaml-language-server use it when the
file's first line is

  # yaml-language-server: $schema=` + desired.SchemaURL + `

or a path to a copy: reconciler schema > desired.schema.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := g.stdout.Write(desired.Schema())
			return err
		},
	}
}
