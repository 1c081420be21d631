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
	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/redis/go-redis/v9"
)

// SenderConfig configures a Sender.
type SenderConfig struct {
	Aggregator *aggregator.Aggregator // required
	// Secret, when set, signs each body (SignatureHeader).
	Secret []byte
	// Policy says which addresses callbacks may reach: by default none
	// that is loopback, private, link-local or multicast.
	Policy CallbackPolicy
	// Client sends the requests. If nil, NewCallbackClient(Policy); one
	// given here is used as it is, without the policy's checks.
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
		cfg.Client = NewCallbackClient(cfg.Policy)
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
	if err := s.cfg.Policy.CheckURL(sum.CallbackURL); err != nil {
		s.cfg.Logger.Warn("callback not sent", "batch", p.BatchID, "url", sum.CallbackURL, "error", err)
		return fmt.Errorf("callback of batch %s: %w: %w", p.BatchID, err, asynq.SkipRetry)
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
	if errors.Is(err, ErrCallbackDenied) {
		// Where the name leads now is refused: retrying would not help
		// (and would knock on that door again).
		s.cfg.Logger.Warn("callback not sent", "batch", p.BatchID, "url", sum.CallbackURL, "error", err)
		return fmt.Errorf("callback of batch %s: %w: %w", p.BatchID, err, asynq.SkipRetry)
	}
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

// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the body>" when a
// secret is configured.
const SignatureHeader = "X-Pingfleet-Signature"

// Sign returns the SignatureHeader value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
