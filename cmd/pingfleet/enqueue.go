package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

func (a *app) enqueueCommand() *cobra.Command {
	var bf batchFlags
	var wait bool
	var rf reportFlags
	cmd := &cobra.Command{
		Use:   "enqueue [flags] [HOST|CIDR|RANGE|-]...",
		Short: "Submit a batch to the workers and print its ID",
		Example: `  pingfleet enqueue --redis redis://10.0.0.5:6379 -f hosts.txt --count 3
  pingfleet enqueue -f hosts.txt --label job=nightly --deadline 30m --callback-url https://ci.example/hooks/ping
  pingfleet enqueue -f hosts.txt --wait -o csv > results.csv`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := rf.statuses(); err != nil {
				return err
			}
			ctx := cmd.Context()
			b, err := a.batch(&bf, args)
			if err != nil {
				return err
			}
			rdb, agg, err := a.connectFleet(cmd, "")
			if err != nil {
				return err
			}
			if !wait {
				id, err := a.submit(ctx, rdb, agg, b)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, id)
				return nil
			}
			// Waiting anyway, the enqueue keeps about ten seconds of the
			// fleet's work queued, not all of it: a million hosts' tasks
			// would hold 500 MB of Redis at once. Stopped, it queues the
			// rest at once (context.WithoutCancel): the batch goes on.
			sub, err := a.start(context.WithoutCancel(ctx), rdb, agg, b, enqueuer.Config{Window: waitWindow, Ahead: aheadOfResults})
			if err != nil {
				return err
			}
			return a.waitAndReport(ctx, agg, sub.ID, &rf, sub)
		},
	}
	bf.register(cmd.Flags())
	a.outputFlag(cmd)
	a.retentionFlag(cmd)
	a.shardsFlag(cmd)
	cmd.Flags().StringVar(&bf.callbackURL, "callback-url", "", "POST the batch's summary to `URL` when it ends (workers or serve deliver it, signed with their --callback-secret); an address callbacks may not reach by default is refused, see --callback-allow")
	cmd.Flags().StringArrayVar(&bf.callbacks.allow, "callback-allow", nil, "accept a --callback-url in this `CIDR`, refused by default (loopback, private, link-local, multicast); the workers and serve that deliver it need the same")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the batch to complete, then print its results")
	rf.register(cmd, "with --wait, ")
	return cmd
}

// batch builds the batch the flags and arguments describe, validating all
// of it before anything touches Redis.
func (a *app) batch(bf *batchFlags, args []string) (enqueuer.Batch, error) {
	opts, err := bf.options()
	if err != nil {
		return enqueuer.Batch{}, err
	}
	labels, err := bf.labelMap()
	if err != nil {
		return enqueuer.Batch{}, err
	}
	hosts, err := a.hosts(bf, args)
	if err != nil {
		return enqueuer.Batch{}, err
	}
	if bf.deadline < 0 {
		return enqueuer.Batch{}, usageErr("--deadline %s: must be positive", bf.deadline)
	}
	if bf.deadline > a.retention {
		return enqueuer.Batch{}, usageErr("--deadline %s: must be within --retention (%s): the batch would be gone before it", bf.deadline, a.retention)
	}
	if bf.callbackURL != "" {
		policy, err := bf.callbacks.policy()
		if err != nil {
			return enqueuer.Batch{}, err
		}
		if err := policy.CheckURL(bf.callbackURL); err != nil {
			return enqueuer.Batch{}, usageErr("--callback-url %q: %v", bf.callbackURL, err)
		}
	}
	prio, err := tasks.ParsePriority(bf.priority)
	if err != nil {
		return enqueuer.Batch{}, usageErr("--%v", err)
	}
	if bf.maxInFlight < 0 {
		return enqueuer.Batch{}, usageErr("--max-in-flight %d: must not be negative (0: no cap)", bf.maxInFlight)
	}
	b := enqueuer.Batch{ID: bf.batchID, Hosts: hosts, Options: opts, Labels: labels, CallbackURL: bf.callbackURL, Priority: prio, MaxInFlight: bf.maxInFlight}
	if bf.deadline > 0 {
		b.Deadline = time.Now().Add(bf.deadline)
	}
	return b, nil
}

// submit writes batch b and enqueues its tasks.
func (a *app) submit(ctx context.Context, rdb redis.UniversalClient, agg *aggregator.Aggregator, b enqueuer.Batch) (string, error) {
	sub, err := a.start(ctx, rdb, agg, b, enqueuer.Config{})
	if err != nil {
		return "", err
	}
	if err := a.enqueued(<-sub.Done()); err != nil {
		return "", err
	}
	return sub.ID, nil
}

// start writes batch b and enqueues its tasks in the background, paced as
// pace's Window and Ahead say; the submission's Done channel gives how that
// went (see enqueued).
func (a *app) start(ctx context.Context, rdb redis.UniversalClient, agg *aggregator.Aggregator, b enqueuer.Batch, pace enqueuer.Config) (*enqueuer.Submission, error) {
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg, Shards: a.shards, Window: pace.Window, Ahead: pace.Ahead, Logger: a.logger})
	if err != nil {
		return nil, systemErr(err)
	}
	sub, err := enq.Start(ctx, b)
	switch {
	case errors.Is(err, enqueuer.ErrInvalidBatchID), errors.Is(err, aggregator.ErrConflict):
		return nil, usageErr("%v", err)
	case err != nil:
		return nil, systemErr(err)
	}
	return sub, nil
}

// enqueued reports how the enqueue of a batch ended, and turns its error
// into the command's.
func (a *app) enqueued(o enqueuer.Outcome) error {
	if o.Err != nil {
		return systemErr(o.Err)
	}
	res := o.Submitted
	a.logger.Info("batch submitted", "batch", res.ID, "hosts", res.Total, "enqueued", res.Enqueued, "existing", res.Existing, "resumed", res.Resumed)
	switch {
	case res.Ended != "":
		fmt.Fprintf(a.stderr, "pingfleet: batch %s had already ended (%s): nothing is pinged again, its results are the earlier ones; to ping the hosts again, give a new --batch-id or none\n", res.ID, res.Ended)
	case res.Resumed:
		fmt.Fprintf(a.stderr, "pingfleet: batch %s existed: %d tasks added, %d already queued or done\n", res.ID, res.Enqueued, res.Existing)
	}
	return nil
}

// How far a command that waits for its batch keeps the batch's tasks ahead
// of its results: at least waitWindow tasks (enqueue --wait) or twice the
// in-flight limit (run), and as many as the fleet completes in
// aheadOfResults at its latest pace.
const (
	waitWindow     = 50000
	aheadOfResults = 10 * time.Second
)
