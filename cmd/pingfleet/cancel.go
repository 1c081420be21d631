package main

import (
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/notify"
	"github.com/pingfleet/pingfleet/report"
)

func (a *app) cancelCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel BATCH-ID...",
		Short: "Cancel open batches: their hosts not yet pinged are dropped from the queues and count as cancelled",
		Long: `Cancel open batches, as DELETE /v1/batches/{id} does. Each batch becomes final
(cancelled) at once: its hosts not yet pinged count as cancelled, never as up; their
queued tasks are deleted; pings running now finish, uncounted; the batch's callback is
sent once. Cancelling a cancelled batch again is no error. Prints each batch's summary.
Exit code 3 if a batch is unknown or had already ended otherwise.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rdb, agg, err := a.connectFleet(cmd, "")
			if err != nil {
				return err
			}
			_, canceller, err := a.lifecycle(rdb, agg)
			if err != nil {
				return err
			}
			defer canceller.Close() // the clean-ups of what it cancelled
			refused := 0
			for _, id := range args {
				s, err := canceller.Cancel(cmd.Context(), id)
				var final *notify.FinalError
				switch {
				case errors.Is(err, aggregator.ErrNotFound), errors.As(err, &final):
					fmt.Fprintf(a.stderr, "pingfleet: %v\n", err)
					refused++
					continue
				case err != nil:
					return systemErr(fmt.Errorf("cancel %s: %w", id, err))
				}
				if err := report.WriteSummary(a.stdout, a.output, s); err != nil {
					return systemErr(err)
				}
			}
			if refused > 0 {
				return exitWith(ExitUsage)
			}
			return nil
		},
	}
	a.outputFlag(cmd)
	a.shardsFlag(cmd)
	_ = cmd.Flags().MarkHidden("shards") // the fleet's, read from Redis: only for a fleet that records none
	return cmd
}

// lifecycle returns what ends batches: the notifier of final batches and
// the canceller.
func (a *app) lifecycle(rdb redis.UniversalClient, agg *aggregator.Aggregator) (*notify.Notifier, *notify.Canceller, error) {
	notifier, err := notify.NewNotifier(notify.NotifierConfig{Client: asynq.NewClientFromRedisClient(rdb), Aggregator: agg, Retention: a.retention})
	if err != nil {
		return nil, nil, systemErr(err)
	}
	canceller, err := notify.NewCanceller(notify.CancellerConfig{
		Aggregator: agg, Notifier: notifier, Client: rdb,
		Shards: a.shards, Logger: a.logger,
	})
	if err != nil {
		return nil, nil, systemErr(err)
	}
	return notifier, canceller, nil
}
