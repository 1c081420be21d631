package main

import (
	"github.com/pingfleet/pingfleet/report"
	"github.com/spf13/cobra"
)

func (a *app) batchesCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "batches",
		Short: "List recent batches, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			list, err := agg.Recent(cmd.Context(), limit)
			if err != nil {
				return systemErr(err)
			}
			if err := report.WriteBatches(a.stdout, a.output, list); err != nil {
				return systemErr(err)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "most batches to list")
	return cmd
}
