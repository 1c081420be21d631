package main

import (
	"context"
	"fmt"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/report"
)

// pollInterval is how often a waiting command reads a batch's progress (one
// read of its record): it bounds how late completion is noticed.
// localPollInterval is run's on its private Redis, which has no one else to
// serve.
const (
	pollInterval      = 25 * time.Millisecond
	localPollInterval = 5 * time.Millisecond
)

// waitAndReport follows batch id until it completes, with a progress bar
// when stderr is a terminal, then prints its report and returns the exit
// error its results call for. sub, if not nil, is the batch's enqueue,
// still running (see app.start).
func (a *app) waitAndReport(ctx context.Context, agg *aggregator.Aggregator, id string, quiet bool, sub *enqueuer.Submission) error {
	s, err := a.wait(ctx, agg, id, sub)
	if err != nil {
		return err
	}
	if err := report.WriteBatch(ctx, a.stdout, a.stderr, a.output, agg, s, quiet); err != nil {
		return systemErr(fmt.Errorf("print results: %w", err))
	}
	return exitWith(resultCode(s))
}

func (a *app) wait(ctx context.Context, agg *aggregator.Aggregator, id string, sub *enqueuer.Submission) (aggregator.Summary, error) {
	var enqueued <-chan enqueuer.Outcome
	if sub != nil {
		enqueued = sub.Done()
	}
	var bar *progressbar.ProgressBar
	defer func() {
		if bar != nil {
			_ = bar.Finish()
			fmt.Fprintln(a.stderr)
		}
	}()
	poll := pollInterval
	if a.local != nil {
		poll = localPollInterval
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		s, err := agg.Progress(ctx, id)
		switch {
		case ctx.Err() != nil && a.local != nil:
			return s, systemErr(fmt.Errorf("stopped; batch %s ended with this command, whose private Redis held it", id))
		case ctx.Err() != nil:
			if enqueued != nil {
				// The batch goes on: queue what is left of it first.
				fmt.Fprintf(a.stderr, "pingfleet: stopping; queueing the rest of batch %s first\n", id)
				sub.Hurry()
				if err := a.enqueued(<-enqueued); err != nil {
					return s, err
				}
			}
			return s, systemErr(fmt.Errorf("stopped waiting; batch %s goes on: follow it with 'pingfleet wait %s'", id, id))
		case err != nil:
			return s, lookupErr(err)
		}
		if bar == nil && isTerminal(a.stderr) {
			bar = progressbar.NewOptions(s.Total,
				progressbar.OptionSetWriter(a.stderr),
				progressbar.OptionSetDescription("pinging"),
				progressbar.OptionShowCount(),
				progressbar.OptionSetItsString("hosts"),
				progressbar.OptionShowIts(),
				progressbar.OptionThrottle(100*time.Millisecond),
			)
		}
		if bar != nil {
			_ = bar.Set(s.Done)
		}
		if s.Completed() {
			if enqueued != nil {
				if err := a.enqueued(<-enqueued); err != nil {
					return s, err
				}
			}
			if s, err = agg.Summary(ctx, id); err != nil {
				return s, lookupErr(err)
			}
			return s, nil
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		case o := <-enqueued:
			enqueued = nil
			if err := a.enqueued(o); err != nil {
				return s, err
			}
		}
	}
}

func (a *app) waitCommand() *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "wait BATCH-ID",
		Short: "Wait for a batch to complete (progress bar on a terminal), then print its results",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			return a.waitAndReport(cmd.Context(), agg, args[0], quiet, nil)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the summary")
	return cmd
}
