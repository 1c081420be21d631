package main

import (
	"cmp"
	"context"
	"slices"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/report"
	"github.com/spf13/cobra"
)

func (a *app) resultsCommand() *cobra.Command {
	var only []string
	var rf reportFlags
	var sortBy string
	cmd := &cobra.Command{
		Use:   "results BATCH-ID",
		Short: "Print each host's result, in submission order; exit as status does",
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
			switch sortBy {
			case "", "status", "loss", "rtt":
			default:
				return usageErr("--sort %q: use status, loss or rtt", sortBy)
			}
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			rw := report.NewResultWriter(a.stdout, a.output, rf.table())
			if err := writeSorted(cmd.Context(), agg, args[0], sortBy, statuses, rw.Write); err != nil {
				return lookupErr(err)
			}
			if err := rw.Close(); err != nil {
				return err
			}
			// The exit code says how the batch went, as status's and
			// fping's do, whatever the filter printed.
			s, err := agg.Progress(cmd.Context(), args[0])
			if err != nil {
				return lookupErr(err)
			}
			return exitWith(resultCode(s))
		},
	}
	cmd.Flags().StringSliceVar(&only, "status", nil, "only hosts with this status: up, down, error, cancelled, expired or pending (repeatable, comma-separated)")
	cmd.Flags().BoolVarP(&rf.alive, "alive", "a", false, "only the hosts that answered (fping -a)")
	cmd.Flags().BoolVarP(&rf.unreachable, "unreachable", "u", false, "only the hosts that did not answer or were not pinged (fping -u)")
	rf.timestamps.register(cmd.Flags(), "")
	cmd.Flags().StringVar(&sortBy, "sort", "", "order: status (down, unresolved, not pinged, then up; streamed), loss or rtt (highest first; held in memory), instead of submission order")
	a.outputFlag(cmd)
	return cmd
}

// statusOrder is --sort status's: the hosts that need a look first.
var statusOrder = []aggregator.Status{aggregator.StatusDown, aggregator.StatusError, aggregator.StatusExpired,
	aggregator.StatusCancelled, aggregator.StatusPending, aggregator.StatusUp}

// writeSorted passes batch id's results (of the statuses in only, if any)
// to write in the order sortBy says. By status it streams, one pass per
// status; by loss or RTT it sorts them in memory, hosts without an RTT
// last, submission order breaking ties.
func writeSorted(ctx context.Context, agg *aggregator.Aggregator, id, sortBy string, only []aggregator.Status, write func(aggregator.Result) error) error {
	switch sortBy {
	case "":
		return agg.Results(ctx, id, write, only...)
	case "status":
		for _, st := range statusOrder {
			if len(only) > 0 && !slices.Contains(only, st) {
				continue
			}
			if err := agg.Results(ctx, id, write, st); err != nil {
				return err
			}
		}
		return nil
	}
	var all []aggregator.Result
	if err := agg.Results(ctx, id, func(r aggregator.Result) error { all = append(all, r); return nil }, only...); err != nil {
		return err
	}
	key := func(r aggregator.Result) float64 {
		if sortBy == "loss" {
			if r.Sent == 0 {
				return -1
			}
			return r.LossPct
		}
		if r.Received == 0 {
			return -1
		}
		return r.RTTAvg
	}
	slices.SortStableFunc(all, func(x, y aggregator.Result) int { return cmp.Compare(key(y), key(x)) })
	for _, r := range all {
		if err := write(r); err != nil {
			return err
		}
	}
	return nil
}
