package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

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

// redisOutage is how long a waiting command rides out a Redis that does
// not answer before it gives up (saying how to resume); it tries again
// after redisRetry, doubling up to redisRetryMax.
const (
	redisOutage   = time.Minute
	redisRetry    = 250 * time.Millisecond
	redisRetryMax = 5 * time.Second
)

// nextRetry is the wait after retry d.
func nextRetry(d time.Duration) time.Duration { return min(2*d, redisRetryMax) }

// waitAndReport follows batch id until it completes, with a progress bar
// when stderr is a terminal, then prints its report and returns the exit
// error its results call for. sub, if not nil, is the batch's enqueue,
// still running (see app.start).
func (a *app) waitAndReport(ctx context.Context, agg *aggregator.Aggregator, id string, rf *reportFlags, sub *enqueuer.Submission) error {
	only, err := rf.statuses()
	if err != nil {
		return err
	}
	s, err := a.wait(ctx, agg, id, sub, rf)
	if err != nil {
		return err
	}
	o := report.BatchOptions{Format: a.output, Quiet: rf.quiet, Only: only, Options: rf.table()}
	if err := report.WriteBatch(ctx, a.stdout, a.stderr, agg, s, o); err != nil {
		return systemErr(fmt.Errorf("print results: %w", err))
	}
	return exitWith(resultCode(s))
}

func (a *app) wait(ctx context.Context, agg *aggregator.Aggregator, id string, sub *enqueuer.Submission, rf *reportFlags) (aggregator.Summary, error) {
	var enqueued <-chan enqueuer.Outcome
	if sub != nil {
		enqueued = sub.Done()
	}
	var prog *progress
	finished := false
	defer func() {
		if prog != nil {
			prog.end(finished)
		}
	}()
	poll := pollInterval
	if a.local != nil {
		poll = localPollInterval
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	var down time.Time // since when Redis has not answered
	retry := redisRetry
	expired := false // by this command
	for {
		s, err := agg.Progress(ctx, id)
		switch {
		case ctx.Err() != nil:
			return s, a.interrupted(id, sub, enqueued)
		case errors.Is(err, aggregator.ErrNotFound):
			return s, lookupErr(err)
		case err != nil:
			// Redis restarting, loading its data, failing over: ride it
			// out for a while, as the workers do.
			if down.IsZero() {
				down = time.Now()
				fmt.Fprintf(a.stderr, "pingfleet: Redis does not answer (%v); trying again for up to %s\n", err, redisOutage)
			}
			if time.Since(down) > redisOutage {
				return s, systemErr(fmt.Errorf("redis unreachable for %s (%w): batch %s goes on once it is back; follow it with 'pingfleet wait %s'", redisOutage, err, id, id))
			}
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
			retry = nextRetry(retry)
			continue
		case !down.IsZero():
			fmt.Fprintf(a.stderr, "pingfleet: Redis answers again after %s\n", time.Since(down).Round(100*time.Millisecond))
			down, retry = time.Time{}, redisRetry
		}
		if prog == nil && (!rf.quiet || rf.lines) {
			prog = newProgress(a.stderr, isTerminal(a.stderr) && !rf.lines, s.Total, rf.progressEvery)
		}
		if prog != nil {
			prog.update(s)
		}
		if s.Completed() {
			finished = true
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
		if !s.Deadline.IsZero() && time.Now().After(s.Deadline) && !expired {
			// Past its deadline: a janitor (any worker's, serve's)
			// expires it, but there may be none left. Do its work.
			acted, err := agg.ExpireOverdue(ctx, id)
			switch {
			case err != nil:
				fmt.Fprintf(a.stderr, "pingfleet: batch %s is past its deadline; expiring it failed: %v\n", id, err)
			case acted:
				fmt.Fprintf(a.stderr, "pingfleet: batch %s passed its deadline (%s) with hosts not pinged: expired\n", id, s.Deadline.Local().Format(time.TimeOnly))
			}
			expired = acted
			if acted {
				continue // read it final
			}
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

// interrupted says, truthfully for each mode, what becomes of batch id
// when the command following it is interrupted, and exits 130 as a shell
// does for SIGINT.
func (a *app) interrupted(id string, sub *enqueuer.Submission, enqueued <-chan enqueuer.Outcome) error {
	switch {
	case a.local != nil:
		return &exitError{ExitInterrupted, fmt.Errorf("interrupted: batch %s ended with this command (its private Redis is gone); results so far were not kept", id)}
	case enqueued != nil:
		// The batch goes on: queue what is left of it first.
		fmt.Fprintf(a.stderr, "pingfleet: interrupted; queueing the rest of batch %s first\n", id)
		sub.Hurry()
		if err := a.enqueued(<-enqueued); err != nil {
			return err
		}
	}
	how := "the fleet's workers go on with it"
	if a.runsWorker {
		how = "this command's worker stopped; other workers on this Redis go on with it"
	}
	return &exitError{ExitInterrupted, fmt.Errorf("interrupted; batch %s goes on (%s): follow it with 'pingfleet wait %s'", id, how, id)}
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
			a.rideOut = true // a Redis restarting when the wait starts
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
	progressEvery             time.Duration
	lines                     bool // progress lines even when quiet, even on a terminal (-Q)
	timestamps                timestampFlags
}

// timestampFlags are -D and --timestamp-format, for the results table.
type timestampFlags struct {
	on     bool
	format string
}

func (t *timestampFlags) register(fs *pflag.FlagSet, when string) {
	fs.BoolVarP(&t.on, "timestamp", "D", false, when+"start each row of the table with the time its host's ping ended, as fping -D (JSON and CSV always have it)")
	fs.StringVar(&t.format, "timestamp-format", "unix", when+"with -D: unix ([seconds.ms], as fping's), iso, rfc3339 or ctime")
}

// options returns the table options -D asks for.
func (t *timestampFlags) options() (report.Options, error) {
	if !t.on {
		return report.Options{}, nil
	}
	o := report.Options{Timestamps: t.format}
	if err := report.CheckOptions(o); err != nil {
		return o, usageErr("--timestamp-format %q: use %s", t.format, strings.Join(report.TimestampFormats, ", "))
	}
	return o, nil
}

// table returns the table options, checked by statuses.
func (r *reportFlags) table() report.Options {
	o, _ := r.timestamps.options()
	return o
}

// register adds -q, -a, -u, -D and --progress-interval to cmd; when says
// when they apply.
func (r *reportFlags) register(cmd *cobra.Command, when string) {
	fs := cmd.Flags()
	r.timestamps.register(fs, when)
	fs.BoolVarP(&r.quiet, "quiet", "q", false, when+"print only the summary, not each host")
	fs.BoolVarP(&r.alive, "alive", "a", false, when+"print only the hosts that answered (fping -a)")
	fs.BoolVarP(&r.unreachable, "unreachable", "u", false, when+"print only the hosts that did not answer or were not pinged (fping -u)")
	fs.DurationVar(&r.progressEvery, "progress-interval", DefaultProgressInterval, when+"without a terminal, print a progress line on stderr this often (0: never; -q: never)")
}

// statuses are the statuses of the results to print: all when nil. It
// checks the other flags too.
func (r *reportFlags) statuses() ([]aggregator.Status, error) {
	if _, err := r.timestamps.options(); err != nil {
		return nil, err
	}
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
