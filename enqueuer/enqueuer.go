// Package enqueuer turns host lists into batches: it parses and expands the
// hosts (names, IPs, CIDRs, ranges), gives the batch a time-ordered ID,
// writes its record through the aggregator and then pushes one asynq task
// per host.
//
// Task IDs derive from the batch ID and the host, so submitting the same
// batch again (after a crash, say) adds no duplicate task.
package enqueuer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

// Defaults of Config.
const (
	DefaultFanOut   = 64
	DefaultMaxRetry = 3
	// TaskSlack is added to a task's ping time to form its asynq timeout:
	// room for DNS and recording the result.
	TaskSlack = 10 * time.Second
)

// ErrInvalidBatchID is returned for a batch ID that is not 1–64 letters,
// digits, '-' or '_'.
var ErrInvalidBatchID = errors.New("invalid batch ID")

var batchIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Config configures an Enqueuer.
type Config struct {
	// Redis is the connection for asynq. Required; not closed by Close.
	Redis redis.UniversalClient
	// Aggregator writes the batch record. Required.
	Aggregator *aggregator.Aggregator
	// Shards is the number of queues tasks are spread over; it must match
	// the workers'. If zero, tasks.DefaultShards.
	Shards int
	// FanOut is the number of tasks enqueued concurrently (asynq v0.26 has
	// no batch enqueue: one round trip per task). If zero, DefaultFanOut.
	FanOut int
	// MaxRetry is how often a task that failed (Redis trouble, not an
	// unreachable host) is retried. If zero, DefaultMaxRetry.
	MaxRetry int
}

// Enqueuer submits batches.
type Enqueuer struct {
	rdb      redis.UniversalClient
	client   *asynq.Client
	agg      *aggregator.Aggregator
	shards   int
	fanOut   int
	maxRetry int
}

// New returns an Enqueuer for cfg.
func New(cfg Config) (*Enqueuer, error) {
	if cfg.Redis == nil || cfg.Aggregator == nil {
		return nil, errors.New("enqueuer: Config.Redis and Config.Aggregator are required")
	}
	return &Enqueuer{
		rdb:      cfg.Redis,
		client:   asynq.NewClientFromRedisClient(cfg.Redis),
		agg:      cfg.Aggregator,
		shards:   cmp.Or(cfg.Shards, tasks.DefaultShards),
		fanOut:   cmp.Or(cfg.FanOut, DefaultFanOut),
		maxRetry: cmp.Or(cfg.MaxRetry, DefaultMaxRetry),
	}, nil
}

// Batch is a batch to submit.
type Batch struct {
	// ID names the batch. If empty, a new ULID (sorts by creation time).
	// Giving the ID of an existing batch with the same hosts and options
	// resumes its enqueue.
	ID      string
	Hosts   []string
	Options tasks.PingOptions
	Labels  map[string]string
	// CallbackURL is POSTed the summary when the batch ends.
	CallbackURL string
	// Deadline is when hosts still pending expire; zero for the default.
	Deadline time.Time
}

// NewBatchID returns a new batch ID: a ULID, which sorts by creation time.
func NewBatchID() string { return ulid.Make().String() }

// Submitted tells what Submit did.
type Submitted struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
	// Enqueued is the number of tasks this call added.
	Enqueued int `json:"enqueued"`
	// Existing is the number of hosts skipped because their task was
	// already queued or their result already recorded.
	Existing int `json:"existing"`
	// Resumed is true when the batch existed before this call.
	Resumed bool `json:"resumed"`
}

// PartialError means the batch record exists but not every task could be
// enqueued. Submitting the same batch (same ID, hosts, options) again
// finishes the job without duplicates.
type PartialError struct {
	ID              string
	Enqueued, Total int
	Err             error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("batch %s is incomplete: %d of %d tasks enqueued: %v; submit it again with the same hosts and batch ID %s to finish it",
		e.ID, e.Enqueued, e.Total, e.Err, e.ID)
}

func (e *PartialError) Unwrap() error { return e.Err }

// Submit validates b, writes its record and enqueues one task per host.
// Nothing is written when b is invalid.
func (e *Enqueuer) Submit(ctx context.Context, b Batch) (Submitted, error) {
	if b.ID == "" {
		b.ID = NewBatchID()
	}
	if !batchIDPattern.MatchString(b.ID) {
		return Submitted{}, fmt.Errorf("%w %q: use 1-64 letters, digits, '-' or '_'", ErrInvalidBatchID, b.ID)
	}
	if len(b.Hosts) == 0 {
		return Submitted{}, errors.New("no hosts to ping")
	}
	b.Options = b.Options.Normalize()
	if err := b.Options.Validate(); err != nil {
		return Submitted{}, err
	}
	existed, err := e.agg.Create(ctx, aggregator.NewBatch{ID: b.ID, Hosts: b.Hosts, Options: b.Options, Labels: b.Labels, CallbackURL: b.CallbackURL, Deadline: b.Deadline})
	if err != nil {
		return Submitted{}, err
	}
	res := Submitted{ID: b.ID, Total: len(b.Hosts), Resumed: existed}
	hosts := b.Hosts
	if existed {
		pending, err := e.agg.Pending(ctx, b.ID, b.Hosts)
		if err != nil {
			return res, &PartialError{ID: b.ID, Total: len(b.Hosts), Err: err}
		}
		hosts = hosts[:0:0]
		for i, p := range pending {
			if p {
				hosts = append(hosts, b.Hosts[i])
			}
		}
		res.Existing = len(b.Hosts) - len(hosts)
	}

	var added, dup atomic.Int64
	timeout := b.Options.RunTime() + TaskSlack
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.fanOut)
	for _, h := range hosts {
		g.Go(func() error {
			t, err := tasks.NewPingTask(tasks.PingPayload{BatchID: b.ID, Host: h, Options: b.Options},
				asynq.TaskID(tasks.TaskID(b.ID, h)),
				asynq.Queue(tasks.Queue(h, e.shards)),
				asynq.MaxRetry(e.maxRetry),
				asynq.Timeout(timeout),
			)
			if err != nil {
				return fmt.Errorf("task for %s: %w", h, err)
			}
			_, err = e.client.EnqueueContext(gctx, t)
			switch {
			case errors.Is(err, asynq.ErrTaskIDConflict):
				dup.Add(1)
			case err != nil:
				return fmt.Errorf("enqueue %s: %w", h, err)
			default:
				if added.Add(1) == 1 {
					e.wake(gctx)
				}
			}
			return nil
		})
	}
	err = g.Wait()
	if added.Load() > 1 {
		e.wake(ctx) // workers that found the queues empty in between look again
	}
	res.Enqueued = int(added.Load())
	res.Existing += int(dup.Load())
	if err != nil {
		return res, &PartialError{ID: b.ID, Enqueued: res.Enqueued + res.Existing, Total: res.Total, Err: err}
	}
	if err := e.agg.MarkEnqueued(ctx, b.ID); err != nil {
		return res, &PartialError{ID: b.ID, Enqueued: res.Enqueued + res.Existing, Total: res.Total, Err: err}
	}
	return res, nil
}

// wake tells idle workers that tasks are waiting. It is a hint: a worker
// that misses it finds the tasks at its next look anyway.
func (e *Enqueuer) wake(ctx context.Context) {
	_ = e.rdb.Publish(ctx, tasks.WakeChannel, "").Err()
}
