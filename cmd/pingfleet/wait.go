package main

import (
	"context"
	"fmt"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
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
// error its results call for. enqueued, if not nil, gives how the batch's
// enqueue, still running, ends (see app.start).
func (a *app) waitAndReport(ctx context.Context, agg *aggregator.Aggregator, id string, quiet bool, enqueued <-chan enqueuer.Outcome) error {
	s, err := a.wait(ctx, agg, id, enqueued)
	if err != nil {
		return err
	}
	if err := writeReport(ctx, a.stdout, a.stderr, a.output, agg, s, quiet); err != nil {
		return systemErr(fmt.Errorf("print results: %w", err))
	}
	return exitWith(resultCode(s))
}

func (a *app) wait(ctx context.Context, agg *aggregator.Aggregator, id string, enqueued <-chan enqueuer.Outcome) (aggregator.Summary, error) {
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
