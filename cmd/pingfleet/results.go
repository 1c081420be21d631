package main

import (
	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/report"
	"github.com/spf13/cobra"
)

func (a *app) resultsCommand() *cobra.Command {
	var only []string
	var rf reportFlags
	cmd := &cobra.Command{
		Use:   "results BATCH-ID",
		Short: "Print each host's result, in submission order",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			statuses, err := rf.statuses()
			if err != nil {
				return err
			}
			if len(only) > 0 && statuses != nil {
				return usageErr("--status and --%s exclude each other", map[bool]string{true: "alive", false: "unreachable"}[rf.alive])
			}
			for _, s := range only {
				switch st := aggregator.Status(s); st {
				case aggregator.StatusUp, aggregator.StatusDown, aggregator.StatusError, aggregator.StatusCancelled, aggregator.StatusExpired, aggregator.StatusPending:
					statuses = append(statuses, st)
				default:
					return usageErr("--status %q: use up, down, error, cancelled, expired or pending", s)
				}
			}
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			rw := report.NewResultWriter(a.stdout, a.output)
			err = agg.Results(cmd.Context(), args[0], rw.Write, statuses...)
			if err != nil {
				return lookupErr(err)
			}
			return rw.Close()
		},
	}
	cmd.Flags().StringSliceVar(&only, "status", nil, "only hosts with this status: up, down, error, cancelled, expired or pending (repeatable, comma-separated)")
	cmd.Flags().BoolVarP(&rf.alive, "alive", "a", false, "only the hosts that answered (fping -a)")
	cmd.Flags().BoolVarP(&rf.unreachable, "unreachable", "u", false, "only the hosts that did not answer or were not pinged (fping -u)")
	a.outputFlag(cmd)
	return cmd
}
