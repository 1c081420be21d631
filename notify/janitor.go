package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

// Janitor finishes open batches: it expires those past their deadline and
// hands the callbacks of final ones that nobody handed over (a worker that
// died right after counting the last host, say). Any number of processes
// may run one; the aggregator's scripts make only one act per batch.
type Janitor struct {
	agg      *aggregator.Aggregator
	notifier *Notifier
	cleaner  cleaner // deletes the queued tasks of final batches
	interval time.Duration
	now      func() time.Time
	logger   *slog.Logger
}

// JanitorConfig configures a Janitor.
type JanitorConfig struct {
	Aggregator *aggregator.Aggregator // required
	Notifier   *Notifier              // required
	// Client and Shards let it delete the queued tasks of the batches it
	// expires, and finish the clean-up of cancelled ones whose canceller
	// stopped half-way. If Client is nil, those tasks stay queued (workers
	// ping them, uncounted).
	Client redis.UniversalClient
	Shards int
	// Interval is the time between sweeps. If zero, DefaultJanitorInterval.
	Interval time.Duration
	Logger   *slog.Logger // if nil, slog.Default()
}

// NewJanitor returns a Janitor. Run starts it.
func NewJanitor(cfg JanitorConfig) (*Janitor, error) {
	if cfg.Aggregator == nil || cfg.Notifier == nil {
		return nil, errors.New("notify: JanitorConfig.Aggregator and Notifier are required")
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("notify: janitor interval %s", cfg.Interval)
	}
	if cfg.Shards < 0 {
		return nil, fmt.Errorf("notify: %d shards", cfg.Shards)
	}
	logger := cmp.Or(cfg.Logger, slog.Default())
	c := cleaner{agg: cfg.Aggregator, client: cfg.Client, shards: cmp.Or(cfg.Shards, tasks.DefaultShards), logger: logger}
	return &Janitor{agg: cfg.Aggregator, notifier: cfg.Notifier, cleaner: c, interval: cmp.Or(cfg.Interval, DefaultJanitorInterval), now: time.Now, logger: logger}, nil
}

// Run sweeps until ctx ends.
func (j *Janitor) Run(ctx context.Context) error {
	t := time.NewTicker(j.interval)
	defer t.Stop()
	for {
		if err := j.Sweep(ctx); err != nil && ctx.Err() == nil {
			j.logger.Warn("janitor sweep failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// finalGrace is how long a batch may stay final without its callback
// handed over before the janitor does it: the worker that finished it
// normally does so at once.
const finalGrace = 5 * time.Second

// Sweep does one pass over the open batches.
func (j *Janitor) Sweep(ctx context.Context) error {
	open, err := j.agg.OpenBatches(ctx, 1000)
	if err != nil {
		return err
	}
	now := j.now()
	for _, b := range open {
		switch {
		case b.Gone:
			err = j.agg.Close(ctx, b.ID)
		case b.Stalled:
			// A sharded batch whose shards are all complete: the writer
			// of the last one stopped before completing the batch.
			var acted bool
			if acted, err = j.agg.Complete(ctx, b.ID); err == nil && acted {
				j.logger.Info("batch completed by the janitor", "batch", b.ID)
				err = j.notifier.Finished(ctx, b.ID, b.CallbackURL)
			}
		case !b.State.Final() && b.Ending != "":
			// A sharded batch whose cancelling or expiry stopped midway.
			var acted bool
			if acted, err = j.agg.Finalize(ctx, b.ID, b.Ending); err == nil && acted {
				if err = j.cleaner.cleanUp(ctx, b.ID); err == nil {
					err = j.notifier.Finished(ctx, b.ID, b.CallbackURL)
				}
			}
		case !b.State.Final() && now.After(b.Deadline) && b.Idle > 0 && now.Sub(b.Progress) < b.Idle:
			// Still draining: its deadline follows its last result.
			err = j.agg.ExtendDeadline(ctx, b.ID, b.Progress.Add(b.Idle))
		case !b.State.Final() && now.After(b.Deadline):
			var acted bool
			acted, err = j.agg.Finalize(ctx, b.ID, aggregator.StateExpired)
			if err == nil {
				if acted {
					j.logger.Warn("batch expired", "batch", b.ID, "deadline", b.Deadline)
					err = j.cleaner.cleanUp(ctx, b.ID) // its hosts left are expired: none is to be pinged
				}
				if err == nil {
					err = j.notifier.Finished(ctx, b.ID, b.CallbackURL)
				}
			}
		case b.State.Final():
			var s aggregator.Summary
			s, err = j.agg.Summary(ctx, b.ID)
			if err == nil && now.Sub(s.Finished) > finalGrace {
				if b.Cleanup { // whoever finalized it stopped before the end
					err = j.cleaner.cleanUp(ctx, b.ID)
				}
				if err == nil {
					err = j.notifier.Finished(ctx, b.ID, b.CallbackURL)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("janitor: batch %s: %w", b.ID, err)
		}
	}
	if n, err := j.cleaner.sweepLanes(ctx, now); err != nil {
		return fmt.Errorf("janitor: %w", err)
	} else if n > 0 {
		j.logger.Debug("lanes of ended batches deleted", "lanes", n)
	}
	return nil
}

// DefaultJanitorInterval is how often a Janitor sweeps.
const DefaultJanitorInterval = 2 * time.Second
