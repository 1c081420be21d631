// Package notify closes the lifecycle of batches: it hands a final batch's
// callback to the queue exactly once (Notifier), delivers it with retries
// and an HMAC signature (Sender), finishes batches whose deadline passed,
// so that no batch stays open forever (Janitor), and cancels batches on
// request (Canceller, for the API and `pingfleet cancel`).
//
// Exactly once across a fleet: a batch becomes final in one atomic step
// (the aggregator's scripts), the callback task's ID derives from the batch
// ID and the task is retained after success, so however many processes
// notice a final batch, one callback task exists. Delivery is at least once
// (a receiver may see a retry after a lost response): the batch ID in
// X-Pingfleet-Batch and Idempotency-Key is the receiver's deduplication key.
package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

// NotifierConfig configures a Notifier.
type NotifierConfig struct {
	Client     *asynq.Client          // enqueues callback tasks; required
	Aggregator *aggregator.Aggregator // required
	// Retention is how long a delivered callback task is kept, to refuse
	// duplicates: the batches' retention. If zero,
	// aggregator.DefaultRetention.
	Retention time.Duration
}

// Notifier hands final batches' callbacks to the queue.
type Notifier struct {
	client    *asynq.Client
	agg       *aggregator.Aggregator
	retention time.Duration
}

// NewNotifier returns a Notifier.
func NewNotifier(cfg NotifierConfig) (*Notifier, error) {
	if cfg.Client == nil || cfg.Aggregator == nil {
		return nil, errors.New("notify: NotifierConfig.Client and Aggregator are required")
	}
	if cfg.Retention < 0 {
		return nil, fmt.Errorf("notify: retention %s", cfg.Retention)
	}
	return &Notifier{client: cfg.Client, agg: cfg.Aggregator, retention: cmp.Or(cfg.Retention, aggregator.DefaultRetention)}, nil
}

// Finished enqueues the callback of final batch id (if it has a callback
// URL) and closes its lifecycle. Calling it twice, from anywhere, is safe.
func (n *Notifier) Finished(ctx context.Context, id, callbackURL string) error {
	if callbackURL != "" {
		t, err := tasks.NewCallbackTask(id, n.retention)
		if err != nil {
			return err
		}
		if _, err := n.client.EnqueueContext(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return fmt.Errorf("enqueue callback of batch %s: %w", id, err)
		}
	}
	return n.agg.Close(ctx, id)
}

// FinishedBatch looks up id's callback URL and calls Finished.
func (n *Notifier) FinishedBatch(ctx context.Context, id string) error {
	s, err := n.agg.Summary(ctx, id)
	if err != nil {
		return err
	}
	return n.Finished(ctx, id, s.CallbackURL)
}
