package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

// CancellerConfig configures a Canceller.
type CancellerConfig struct {
	Aggregator *aggregator.Aggregator // required
	Notifier   *Notifier              // required
	// Inspector deletes the cancelled batch's queued tasks. If nil, they
	// stay queued and workers skip them when they come up.
	Inspector *asynq.Inspector
	// Shards is the number of ping queues the batches were enqueued on.
	// If zero, tasks.DefaultShards.
	Shards int
	Logger *slog.Logger // if nil, slog.Default()
}

// Canceller cancels open batches, for the API's DELETE and for
// `pingfleet cancel`: the batch becomes final (cancelled) in one atomic
// step, its hosts not yet pinged count as cancelled (never as up), their
// queued tasks are deleted, and its callback is handed over once.
type Canceller struct {
	cfg CancellerConfig
}

// FinalError is Cancel's answer for a batch that had already ended.
type FinalError struct {
	ID    string
	State aggregator.State
}

func (e *FinalError) Error() string { return fmt.Sprintf("batch %s is already %s", e.ID, e.State) }

// NewCanceller returns a Canceller.
func NewCanceller(cfg CancellerConfig) (*Canceller, error) {
	if cfg.Aggregator == nil || cfg.Notifier == nil {
		return nil, errors.New("notify: CancellerConfig.Aggregator and Notifier are required")
	}
	if cfg.Shards < 0 {
		return nil, fmt.Errorf("notify: %d shards", cfg.Shards)
	}
	if cfg.Shards == 0 {
		cfg.Shards = tasks.DefaultShards
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Canceller{cfg: cfg}, nil
}

// Cancel cancels batch id and returns its summary. Cancelling a cancelled
// batch again is no error. It returns aggregator.ErrNotFound for an
// unknown batch and a *FinalError for one that ended otherwise. Once the
// batch is cancelled, the clean-up goes on even if ctx ends: a caller that
// gives up must not leave the batch's tasks queued.
func (c *Canceller) Cancel(ctx context.Context, id string) (aggregator.Summary, error) {
	agg := c.cfg.Aggregator
	acted, err := agg.Finalize(ctx, id, aggregator.StateCancelled)
	if err != nil && !acted {
		return aggregator.Summary{}, err
	}
	if acted {
		ctx = context.WithoutCancel(ctx)
	}
	sum, err := agg.Summary(ctx, id)
	if err != nil {
		return aggregator.Summary{}, err
	}
	if !acted {
		if sum.State != aggregator.StateCancelled {
			return sum, &FinalError{ID: id, State: sum.State}
		}
		return sum, nil
	}
	if err := c.deleteQueued(ctx, id); err != nil {
		c.cfg.Logger.Warn("cancel: some queued tasks not deleted (workers will skip them)", "batch", id, "error", err)
	}
	if err := c.cfg.Notifier.Finished(ctx, id, sum.CallbackURL); err != nil {
		c.cfg.Logger.Warn("cancel: callback not handed over yet (the janitor will)", "batch", id, "error", err)
	}
	return sum, nil
}

// deleteQueued deletes the queued tasks of the hosts of id that were never
// pinged. Tasks running now finish, and their results are not counted.
func (c *Canceller) deleteQueued(ctx context.Context, id string) error {
	if c.cfg.Inspector == nil {
		return nil
	}
	return c.cfg.Aggregator.Results(ctx, id, func(res aggregator.Result) error {
		err := c.cfg.Inspector.DeleteTask(tasks.Queue(res.Host, c.cfg.Shards), tasks.TaskID(id, res.Host))
		switch {
		case err == nil, errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound), isActive(err):
			return nil
		}
		return err
	}, aggregator.StatusCancelled)
}

// isActive reports whether DeleteTask refused a task because a worker runs
// it. asynq (v0.26) exports no error for that, only this text; the test
// TestCancelRunningTask checks that it still says so.
func isActive(err error) bool {
	return strings.Contains(err.Error(), "in active state")
}
