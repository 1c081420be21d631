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
func (a *app) waitAndReport(ctx context.Context, agg *aggregator.Aggregator, id string, rf *reportFlags, sub *enqueuer.Submission) error {
	only, err := rf.statuses()
	if err != nil {
		return err
	}
	s, err := a.wait(ctx, agg, id, sub)
	if err != nil {
		return err
	}
	if err := report.WriteBatch(ctx, a.stdout, a.stderr, a.output, agg, s, rf.quiet, only...); err != nil {
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
	var rf reportFlags
	cmd := &cobra.Command{
		Use:   "wait BATCH-ID",
		Short: "Wait for a batch to complete (progress bar on a terminal), then print its results",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := rf.statuses(); err != nil {
				return err
			}
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			return a.waitAndReport(cmd.Context(), agg, args[0], &rf, nil)
		},
	}
	rf.register(cmd, "")
	a.outputFlag(cmd)
	return cmd
}

// reportFlags choose what a command that prints a batch's results prints.
type reportFlags struct {
	quiet, alive, unreachable bool
}

// register adds -q, -a and -u to cmd; when says when they apply.
func (r *reportFlags) register(cmd *cobra.Command, when string) {
	fs := cmd.Flags()
	fs.BoolVarP(&r.quiet, "quiet", "q", false, when+"print only the summary, not each host")
	fs.BoolVarP(&r.alive, "alive", "a", false, when+"print only the hosts that answered (fping -a)")
	fs.BoolVarP(&r.unreachable, "unreachable", "u", false, when+"print only the hosts that did not answer or were not pinged (fping -u)")
}

// statuses are the statuses of the results to print: all when nil.
func (r *reportFlags) statuses() ([]aggregator.Status, error) {
	switch {
	case r.alive && r.unreachable:
		return nil, usageErr("--alive and --unreachable exclude each other")
	case r.alive:
		return []aggregator.Status{aggregator.StatusUp}, nil
	case r.unreachable:
		return notUp, nil
	}
	return nil, nil
}

// notUp is every status but up.
var notUp = []aggregator.Status{aggregator.StatusDown, aggregator.StatusError, aggregator.StatusCancelled, aggregator.StatusExpired, aggregator.StatusPending}
