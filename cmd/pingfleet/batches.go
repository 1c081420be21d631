package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/report"
)

func (a *app) batchesCommand() *cobra.Command {
	var limit int
	var labels []string
	cmd := &cobra.Command{
		Use:   "batches",
		Short: "List recent batches, newest first",
		Example: `  pingfleet batches -n 5
  pingfleet batches --label job=nightly -o csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 {
				return usageErr("--limit %d: must be at least 1", limit)
			}
			want, err := parseLabels(labels)
			if err != nil {
				return err
			}
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			var keep func(aggregator.Summary) bool
			if len(want) > 0 {
				keep = func(s aggregator.Summary) bool { return hasLabels(s.Labels, want) }
			}
			list, _, err := agg.Page(cmd.Context(), time.Time{}, limit, keep)
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
	cmd.Flags().StringArrayVar(&labels, "label", nil, "only batches labelled `KEY=VALUE` (repeatable: all must match)")
	a.outputFlag(cmd)
	return cmd
}

// hasLabels reports whether labels hold every key and value of want.
func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
