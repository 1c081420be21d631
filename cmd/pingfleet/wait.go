package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	o := report.BatchOptions{Format: a.output, Quiet: rf.quiet, Only: only, Options: rf.table()}
	var f *following
	if rf.stream && !rf.quiet {
		f = a.follow(ctx, agg, id, o)
	}
	s, err := a.wait(ctx, agg, id, sub, rf)
	var code int
	switch {
	case err == nil:
		code = resultCode(s)
	case a.local != nil && ctx.Err() != nil:
		// The batch ends with this command, on its private Redis: as fping
		// does when interrupted, report what there is, the hosts not
		// pinged as cancelled.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), interruptedReport)
		defer cancel()
		if s, err = a.endInterrupted(ctx, agg, id); err != nil {
			f.abandon()
			return err
		}
		code = ExitInterrupted
	default:
		f.abandon()
		return err
	}
	if f != nil {
		err = f.finish(ctx, s)
	} else {
		err = report.WriteBatch(ctx, a.stdout, a.stderr, agg, s, o)
	}
	if err != nil {
		return systemErr(fmt.Errorf("print results: %w", err))
	}
	if code == ExitInterrupted {
		return &exitError{ExitInterrupted, fmt.Errorf("interrupted: batch %s ended with this command (its private Redis is gone); %d of its %d hosts were not pinged and are reported cancelled", id, s.Cancelled, s.Total)}
	}
	return exitWith(code)
}

// following prints a batch's results as they are counted (--stream) while
// the command waits for the batch, and its summary once it has it.
type following struct {
	done    chan error
	summary chan aggregator.Summary
	stop    context.CancelFunc
}

// followBlock is how long one read of a followed batch's events waits for
// one.
const followBlock = 500 * time.Millisecond

// follow starts printing batch id's results as o says, as they are
// counted. It outlives ctx, which a signal cancels, until abandon or
// finish.
func (a *app) follow(ctx context.Context, agg *aggregator.Aggregator, id string, o report.BatchOptions) *following {
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	f := &following{done: make(chan error, 1), summary: make(chan aggregator.Summary, 1), stop: stop}
	go func() {
		f.done <- report.WriteBatchThen(fctx, a.stdout, a.stderr, counted{agg}, id, func() (aggregator.Summary, error) {
			select {
			case s := <-f.summary:
				return s, nil
			case <-fctx.Done():
				return aggregator.Summary{}, fctx.Err()
			}
		}, o)
	}()
	return f
}

// abandon stops printing: the batch has no summary to give.
func (f *following) abandon() {
	if f == nil {
		return
	}
	f.stop()
	_ = f.printed()
}

// printed waits for the printing to end and returns its error.
func (f *following) printed() error { return <-f.done }

// finish prints the rest of the results of the batch, which is final, and
// its summary s.
func (f *following) finish(ctx context.Context, s aggregator.Summary) error {
	defer f.stop()
	f.summary <- s
	select {
	case err := <-f.done:
		return err
	case <-ctx.Done():
		f.stop()
		_ = f.printed()
		return ctx.Err()
	}
}

// counted is a report.ResultSource that gives a batch's results as they
// are counted, from its event stream, until the batch is final; its hosts
// never pinged are counted in its summary, not listed. It rides out a Redis
// that stops answering (wait gives up on it, and says so, for both).
type counted struct{ agg *aggregator.Aggregator }

func (c counted) Results(ctx context.Context, id string, fn func(aggregator.Result) error, only ...aggregator.Status) error {
	after := ""
	for {
		var fnErr error
		next, final, err := c.agg.Events(ctx, id, after, followBlock, func(e aggregator.Event) error {
			if e.Type != "result" || len(only) > 0 && !slices.Contains(only, e.Result.Status) {
				return nil
			}
			fnErr = fn(e.Result)
			return fnErr
		})
		switch {
		case fnErr != nil:
			return fnErr
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, aggregator.ErrNotFound), errors.Is(err, aggregator.ErrEventID):
			return err
		default:
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(redisRetry):
			}
		}
		if final {
			return nil
		}
		after = next
	}
}

// interruptedReport bounds how long run, interrupted, takes to end its
// batch and print it.
const interruptedReport = time.Minute

// endInterrupted cancels batch id of run's private Redis, which is
// interrupted, and returns its summary.
func (a *app) endInterrupted(ctx context.Context, agg *aggregator.Aggregator, id string) (aggregator.Summary, error) {
	var s aggregator.Summary
	_, err := agg.Finalize(ctx, id, aggregator.StateCancelled)
	if err == nil {
		s, err = agg.Summary(ctx, id)
	}
	if err != nil {
		return s, &exitError{ExitInterrupted, fmt.Errorf("interrupted: batch %s ended with this command (its private Redis is gone); its results so far could not be read: %w", id, err)}
	}
	return s, nil
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
			// Rows streamed to a terminal are the progress: no bar to
			// tear them, but the lines, with the rate and time left.
			bar := isTerminal(a.stderr) && !rf.lines && !(rf.stream && !rf.quiet)
			prog = newProgress(a.stderr, bar, s.Total, rf.progressEvery)
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
		return &exitError{ExitInterrupted, fmt.Errorf("interrupted: batch %s ended with this command (its private Redis is gone)", id)}
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
	stream                    bool // each result as it is counted (--stream)
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
	fs.BoolVar(&r.stream, "stream", false, when+"print each host's result as soon as it is counted, in that order, rather than all in submission order at the end (hosts never pinged are then counted in the summary only)")
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
