package main

import (
	"context"
	"fmt"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pingfleet/pingfleet/aggregator"
)

// pollInterval is how often a waiting command reads a batch's progress (one
// read of its record): it bounds how late completion is noticed.
const pollInterval = 25 * time.Millisecond

// waitAndReport follows batch id until it completes, with a progress bar
// when stderr is a terminal, then prints its report and returns the exit
// error its results call for.
func (a *app) waitAndReport(ctx context.Context, agg *aggregator.Aggregator, id string, quiet bool) error {
	s, err := a.wait(ctx, agg, id)
	if err != nil {
		return err
	}
	if err := writeReport(ctx, a.stdout, a.stderr, a.output, agg, s, quiet); err != nil {
		return systemErr(fmt.Errorf("print results: %w", err))
	}
	return exitWith(resultCode(s))
}

func (a *app) wait(ctx context.Context, agg *aggregator.Aggregator, id string) (aggregator.Summary, error) {
	var bar *progressbar.ProgressBar
	defer func() {
		if bar != nil {
			_ = bar.Finish()
			fmt.Fprintln(a.stderr)
		}
	}()
	t := time.NewTicker(pollInterval)
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
			if s, err = agg.Summary(ctx, id); err != nil {
				return s, lookupErr(err)
			}
			return s, nil
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}
