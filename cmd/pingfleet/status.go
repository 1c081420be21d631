package main

import (
	"errors"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/report"
	"github.com/spf13/cobra"
)

func (a *app) statusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status BATCH-ID",
		Short: "Print a batch's state and summary; exit code as for a finished batch",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			s, err := agg.Summary(cmd.Context(), args[0])
			if err != nil {
				return lookupErr(err)
			}
			if err := report.WriteSummary(a.stdout, a.output, s); err != nil {
				return systemErr(err)
			}
			return exitWith(resultCode(s))
		},
	}
	a.outputFlag(cmd)
	return cmd
}

func lookupErr(err error) error {
	if errors.Is(err, aggregator.ErrNotFound) {
		return usageErr("%v", err)
	}
	return systemErr(err)
}
