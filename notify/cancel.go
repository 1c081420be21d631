package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/redis/go-redis/v9"
)

// CancellerConfig configures a Canceller.
type CancellerConfig struct {
	Aggregator *aggregator.Aggregator // required
	Notifier   *Notifier              // required
	// Client deletes the cancelled batch's queued tasks, in asynq's
	// layout. If nil, they stay queued and workers skip them when they
	// come up.
	Client redis.UniversalClient
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
	cfg     CancellerConfig
	cleaner cleaner
	running sync.WaitGroup // the clean-ups under way
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
	return &Canceller{cfg: cfg, cleaner: cleaner{agg: cfg.Aggregator, client: cfg.Client, shards: cfg.Shards, logger: cfg.Logger}}, nil
}

// Cancel cancels batch id and returns its summary. Cancelling a cancelled
// batch again is no error. It returns aggregator.ErrNotFound for an
// unknown batch and a *FinalError for one that ended otherwise.
//
// Once the batch is cancelled, the deletion of its queued tasks and the
// hand-over of its callback run in the background, owned by the
// Canceller (Close waits for them) and whatever ctx does: a caller that
// gives up must not leave the batch's tasks queued. Cancel waits for them
// up to CancelWait, so that its answer usually says they are done; past
// it, the summary says the batch is still cleaning.
func (c *Canceller) Cancel(ctx context.Context, id string) (aggregator.Summary, error) {
	agg := c.cfg.Aggregator
	acted, err := agg.Finalize(ctx, id, aggregator.StateCancelled)
	if err != nil && !acted {
		return aggregator.Summary{}, err
	}
	if !acted {
		sum, err := agg.Summary(ctx, id)
		if err != nil {
			return aggregator.Summary{}, err
		}
		if sum.State != aggregator.StateCancelled {
			return sum, &FinalError{ID: id, State: sum.State}
		}
		return sum, nil
	}
	done := make(chan struct{})
	c.running.Go(func() {
		defer close(done)
		bg := context.WithoutCancel(ctx)
		if err := c.cleaner.cleanUp(bg, id); err != nil {
			c.cfg.Logger.Warn("cancel: some queued tasks not deleted yet (workers skip them; a janitor will go on)", "batch", id, "error", err)
			return // the batch stays open: the janitor finishes it
		}
		if err := c.cfg.Notifier.FinishedBatch(bg, id); err != nil {
			c.cfg.Logger.Warn("cancel: callback not handed over yet (the janitor will)", "batch", id, "error", err)
		}
	})
	select {
	case <-done:
	case <-time.After(CancelWait):
	case <-ctx.Done():
	}
	sum, err := agg.Summary(context.WithoutCancel(ctx), id)
	if err == nil && sum.State != aggregator.StateCancelled {
		// Every host had been pinged (a sharded batch whose last shard's
		// writer had not told it yet): it ended complete, as a batch
		// cancelled once complete answers.
		return sum, &FinalError{ID: id, State: sum.State}
	}
	return sum, err
}

// CancelWait is how long Cancel waits for the clean-up of a cancelled
// batch before it answers: the queued tasks of 100,000 hosts take about
// half a second to delete.
const CancelWait = 2 * time.Second

// Close waits for the clean-ups under way.
func (c *Canceller) Close() { c.running.Wait() }

// cleaner deletes the queued tasks of final batches, for the Canceller
// and the Janitor: with no Redis client, it does nothing and they stay
// queued.
type cleaner struct {
	agg    *aggregator.Aggregator
	client redis.UniversalClient
	shards int
	logger *slog.Logger
}

// cleanUp deletes batch id's queued tasks, then records it is done: until
// then the batch says it is cleaning, and a janitor in any process takes
// the job over if this one stops half-way (it is idempotent).
func (c cleaner) cleanUp(ctx context.Context, id string) error {
	if c.client == nil {
		return nil
	}
	if err := c.deleteQueued(ctx, id); err != nil {
		return err
	}
	return c.agg.CleanedUp(ctx, id)
}

// deleteQueued deletes the queued tasks of batch id (pending, scheduled or
// waiting for a retry): those of its lane, and those an older enqueuer put
// in the static queues, with one script per queue, which finds them by
// their task IDs ("<batch>/<host>"), rather than a call per host. Tasks
// running now finish, and their results are not counted.
func (c cleaner) deleteQueued(ctx context.Context, id string) error {
	var errs []error
	deleted := 0
	for q := range tasks.Queues(c.shards) {
		base := tasks.AsynqKeys(q)
		n, err := deleteBatchScript.Run(ctx, c.client, []string{base + ":pending", base + ":scheduled", base + ":retry"},
			tasks.TaskID(id, ""), base+":t:").Int()
		if err != nil {
			errs = append(errs, fmt.Errorf("queue %s: %w", q, err))
		}
		deleted += n
	}
	n, err := c.dropLaneTasks(ctx, id)
	deleted += n
	errs = append(errs, err)
	c.logger.Debug("queued tasks of a final batch deleted", "batch", id, "tasks", deleted)
	return errors.Join(errs...)
}

// deleteBatchScript deletes from one queue every task of one batch that
// waits there (asynq's DeleteTask, for many): the pending list keeps the
// others in their order, the scheduled and retry sets lose the batch's,
// and their hashes go.
//
// KEYS[1] -> asynq:{<queue>}:pending
// KEYS[2] -> asynq:{<queue>}:scheduled
// KEYS[3] -> asynq:{<queue>}:retry
// --
// ARGV[1] -> the batch's task ID prefix, "<batch>/"
// ARGV[2] -> the queue's task key prefix
//
// Returns how many tasks it deleted.
var deleteBatchScript = redis.NewScript(`
local p, n = ARGV[1], 0
local function mine(id) return string.sub(id, 1, #p) == p end
local keep = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if mine(id) then
    redis.call('DEL', ARGV[2] .. id)
    n = n + 1
  else
    keep[#keep + 1] = id
  end
end
if n > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #keep, 4000 do
    redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 3999, #keep)))
  end
end
for k = 2, 3 do
  for _, id in ipairs(redis.call('ZRANGE', KEYS[k], 0, -1)) do
    if mine(id) then
      redis.call('ZREM', KEYS[k], id)
      redis.call('DEL', ARGV[2] .. id)
      n = n + 1
    end
  end
end
return n
`)
