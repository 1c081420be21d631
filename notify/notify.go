// Package notify closes the lifecycle of batches: it hands a final batch's
// callback to the queue exactly once (Notifier), delivers it with retries
// and an HMAC signature (Sender), and finishes batches whose deadline
// passed, so that no batch stays open forever (Janitor).
//
// Exactly once across a fleet: a batch becomes final in one atomic step
// (the aggregator's scripts), the callback task's ID derives from the batch
// ID and the task is retained after success, so however many processes
// notice a final batch, one callback task exists. Delivery is at least once
// (a receiver may see a retry after a lost response): the batch ID in
// X-Pingfleet-Batch and Idempotency-Key is the receiver's deduplication key.
package notify

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the body>" when a
// secret is configured.
const SignatureHeader = "X-Pingfleet-Signature"

// Sign returns the SignatureHeader value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Notifier hands final batches' callbacks to the queue.
type Notifier struct {
	client    *asynq.Client
	agg       *aggregator.Aggregator
	retention time.Duration
}

// NewNotifier returns a Notifier enqueuing with client. retention is how
// long a delivered callback task is kept (to refuse duplicates): use the
// batches' retention.
func NewNotifier(client *asynq.Client, agg *aggregator.Aggregator, retention time.Duration) *Notifier {
	return &Notifier{client: client, agg: agg, retention: cmp.Or(retention, aggregator.DefaultRetention)}
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

// SenderConfig configures a Sender.
type SenderConfig struct {
	Aggregator *aggregator.Aggregator // required
	// Secret, when set, signs each body (SignatureHeader).
	Secret []byte
	// Client sends the requests. If nil, one with a 10 s timeout.
	Client *http.Client
	Logger *slog.Logger // if nil, slog.Default()
}

// Sender delivers callbacks: it is the asynq handler of TypeBatchCallback.
type Sender struct {
	cfg SenderConfig
}

// NewSender returns a Sender.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if cfg.Aggregator == nil {
		return nil, errors.New("notify: SenderConfig.Aggregator is required")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return &Sender{cfg: cfg}, nil
}

// ProcessTask POSTs the batch's summary to its callback URL. A non-2xx
// answer or a network error fails the task, and asynq retries it.
func (s *Sender) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeCallbackPayload(t.Payload())
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	sum, err := s.cfg.Aggregator.Summary(ctx, p.BatchID)
	if errors.Is(err, aggregator.ErrNotFound) {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	if sum.CallbackURL == "" {
		return nil
	}
	body, err := json.Marshal(sum)
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sum.CallbackURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("callback of batch %s: %w: %w", p.BatchID, err, asynq.SkipRetry)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pingfleet")
	req.Header.Set("X-Pingfleet-Batch", p.BatchID)
	req.Header.Set("Idempotency-Key", p.BatchID)
	if len(s.cfg.Secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(s.cfg.Secret, body))
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("callback of batch %s: %w", p.BatchID, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("callback of batch %s: %s answered %s", p.BatchID, sum.CallbackURL, resp.Status)
	}
	s.cfg.Logger.Info("callback delivered", "batch", p.BatchID, "status", resp.StatusCode)
	return nil
}

// DefaultJanitorInterval is how often a Janitor sweeps.
const DefaultJanitorInterval = 2 * time.Second

// Janitor finishes open batches: it expires those past their deadline and
// hands the callbacks of final ones that nobody handed over (a worker that
// died right after counting the last host, say). Any number of processes
// may run one; the aggregator's scripts make only one act per batch.
type Janitor struct {
	agg      *aggregator.Aggregator
	notifier *Notifier
	interval time.Duration
	now      func() time.Time
	logger   *slog.Logger
}

// NewJanitor returns a Janitor sweeping every interval (if zero,
// DefaultJanitorInterval).
func NewJanitor(agg *aggregator.Aggregator, n *Notifier, interval time.Duration, logger *slog.Logger) *Janitor {
	return &Janitor{agg: agg, notifier: n, interval: cmp.Or(interval, DefaultJanitorInterval), now: time.Now, logger: cmp.Or(logger, slog.Default())}
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
		case !b.State.Final() && now.After(b.Deadline):
			var acted bool
			acted, err = j.agg.Finalize(ctx, b.ID, aggregator.StateExpired)
			if err == nil {
				if acted {
					j.logger.Warn("batch expired", "batch", b.ID, "deadline", b.Deadline)
				}
				err = j.notifier.Finished(ctx, b.ID, b.CallbackURL)
			}
		case b.State.Final():
			var s aggregator.Summary
			s, err = j.agg.Summary(ctx, b.ID)
			if err == nil && now.Sub(s.Finished) > finalGrace {
				err = j.notifier.Finished(ctx, b.ID, b.CallbackURL)
			}
		}
		if err != nil {
			return fmt.Errorf("janitor: batch %s: %w", b.ID, err)
		}
	}
	return nil
}

// RetryDelay is the wait before the n-th retry of a callback: 2 s, 4 s,
// 8 s... at most 5 min, for receivers that are down a while.
func RetryDelay(n int) time.Duration {
	return min(2*time.Second<<min(max(n-1, 0), 8), 5*time.Minute)
}

// NewServer returns an asynq server that delivers callbacks (and nothing
// else) with s: `serve` runs one, so callbacks go out even when no worker
// runs. Start and Shutdown it like any asynq.Server.
func NewServer(rdb redis.UniversalClient, s *Sender, logger asynq.Logger) (*asynq.Server, *asynq.ServeMux) {
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       20,
		Queues:            map[string]int{tasks.CallbackQueue: 1},
		TaskCheckInterval: 200 * time.Millisecond,
		RetryDelayFunc:    func(n int, _ error, _ *asynq.Task) time.Duration { return RetryDelay(n) },
		Logger:            logger,
		LogLevel:          asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeBatchCallback, s)
	return srv, mux
}
