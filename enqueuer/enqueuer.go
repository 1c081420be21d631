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
	"log/slog"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

// Defaults of Config.
const (
	DefaultFanOut   = 4
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
	// Shards is the most queues a batch's lane spreads its tasks over (one
	// per 1,000 hosts, tasks.LaneShards): the fleet's number. If zero,
	// tasks.DefaultShards.
	Shards int
	// FanOut is the number of chunks of tasks in flight to Redis at once,
	// so that Redis works on one while the enqueuer encodes the next. If
	// zero, DefaultFanOut.
	FanOut int
	// MaxRetry is how often a task that failed (Redis trouble, not an
	// unreachable host) is retried. If zero, DefaultMaxRetry.
	MaxRetry int
	// Window, if set, keeps at most this many of a batch's tasks queued
	// ahead of its results, or, with Ahead, as many as the fleet completes
	// in Ahead at its latest rate if that is more: Submit then returns once
	// the last task is queued, which is near the batch's end. For an
	// enqueuer that waits for the batch anyway (enqueue --wait, run): it
	// bounds what the queues hold in Redis (about 500 bytes per task), and
	// miniredis, whose lists are Go slices, pays for each push as much as
	// the list is long. If zero, every task is queued at once.
	Window int
	// Ahead lets the window grow with the fleet's pace (see Window). If
	// zero, the window is fixed.
	Ahead time.Duration
	// Logger gets a warning when a batch's queues could not be spread
	// over a Redis Cluster's masters. If nil, nothing is logged.
	Logger *slog.Logger
}

// Enqueuer submits batches.
type Enqueuer struct {
	rdb      redis.UniversalClient
	agg      *aggregator.Aggregator
	shards   int
	fanOut   int
	maxRetry int
	window   int
	ahead    time.Duration
	logger   *slog.Logger
}

// New returns an Enqueuer for cfg.
func New(cfg Config) (*Enqueuer, error) {
	if cfg.Redis == nil || cfg.Aggregator == nil {
		return nil, errors.New("enqueuer: Config.Redis and Config.Aggregator are required")
	}
	return &Enqueuer{
		rdb:      cfg.Redis,
		agg:      cfg.Aggregator,
		shards:   cmp.Or(cfg.Shards, tasks.DefaultShards),
		fanOut:   cmp.Or(cfg.FanOut, DefaultFanOut),
		maxRetry: cmp.Or(cfg.MaxRetry, DefaultMaxRetry),
		window:   max(cfg.Window, 0),
		ahead:    max(cfg.Ahead, 0),
		logger:   cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
	}, nil
}

// Batch is a batch to submit; the aggregator records it as it is.
type Batch = aggregator.Batch

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
	// Ended is the state of a batch that existed and had ended (complete,
	// cancelled or expired) before this call: nothing of it is pinged
	// again.
	Ended aggregator.State `json:"ended,omitempty"`
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
	sub, err := e.Start(ctx, b)
	if err != nil {
		return sub.Submitted, err
	}
	o := <-sub.Done()
	return o.Submitted, o.Err
}

// Submission is a batch whose record is written and whose tasks are being
// enqueued.
type Submission struct {
	// Submitted holds what is known before the enqueue: the batch's ID
	// and size, and whether it existed (and how many of its hosts were
	// done then).
	Submitted
	done  chan Outcome
	pacer *pacer
}

// Done gives the enqueue's outcome, once.
func (s *Submission) Done() <-chan Outcome { return s.done }

// Hurry queues the tasks left at once, without the window: for a caller
// that stops waiting for the batch, which then goes on without it.
func (s *Submission) Hurry() {
	if s.pacer != nil {
		s.pacer.release()
	}
}

// Start is Submit in two steps: it validates b and writes its record, then
// enqueues its tasks in the background (with Window, paced by its results),
// and its Done channel gives what Submit returns; the error there is a
// *PartialError. Cancel ctx to stop it. With an error from Start itself,
// nothing was written (or, for a *PartialError, nothing was enqueued).
func (e *Enqueuer) Start(ctx context.Context, b Batch) (*Submission, error) {
	none := &Submission{}
	if b.ID == "" {
		b.ID = NewBatchID()
	}
	if !batchIDPattern.MatchString(b.ID) {
		return none, fmt.Errorf("%w %q: use 1-64 letters, digits, '-' or '_'", ErrInvalidBatchID, b.ID)
	}
	if len(b.Hosts) == 0 {
		return none, errors.New("no hosts to ping")
	}
	b.Options = b.Options.Normalize()
	if err := b.Options.Validate(); err != nil {
		return none, err
	}
	prio, err := tasks.ParsePriority(string(b.Priority))
	if err != nil {
		return none, err
	}
	b.Priority = prio
	switch {
	case b.MaxInFlight < 0:
		return none, &tasks.FieldError{Field: "max_in_flight", Value: strconv.Itoa(b.MaxInFlight), Reason: "must not be negative"}
	case b.Tenant != "" && !tasks.ValidTenant(b.Tenant):
		return none, fmt.Errorf("tenant %q: want 1 to 64 letters, digits, '.', '_' or '-'", b.Tenant)
	}
	if _, err := tasks.NewPayloadWriter(b.ID, b.Options); err != nil {
		return none, err
	}
	existed, err := e.agg.Create(ctx, b)
	if err != nil {
		return none, err
	}
	res := Submitted{ID: b.ID, Total: len(b.Hosts), Resumed: existed}
	hosts := b.Hosts
	if existed {
		if s, err := e.agg.Progress(ctx, b.ID); err == nil && s.State.Final() {
			res.Ended = s.State
		}
		pending, err := e.agg.Pending(ctx, b.ID, b.Hosts)
		if err != nil {
			return &Submission{Submitted: res}, &PartialError{ID: b.ID, Total: len(b.Hosts), Err: err}
		}
		hosts = hosts[:0:0]
		for i, p := range pending {
			if p {
				hosts = append(hosts, b.Hosts[i])
			}
		}
		res.Existing = len(b.Hosts) - len(hosts)
	}
	sub := &Submission{Submitted: res, done: make(chan Outcome, 1), pacer: e.newPacer(b.ID, res.Existing)}
	go func() { sub.done <- e.finish(ctx, b, hosts, res, sub.pacer) }()
	return sub, nil
}

// Outcome is what a submission's enqueue did: the Submitted figures once
// every task is queued, and the *PartialError that stopped it, if any.
type Outcome struct {
	Submitted
	Err error
}

// finish enqueues hosts' tasks and marks batch b enqueued.
func (e *Enqueuer) finish(ctx context.Context, b Batch, hosts []string, res Submitted, p *pacer) Outcome {
	added, err := e.enqueue(ctx, b, hosts, p)
	res.Enqueued = added
	if err != nil {
		// Tasks in chunks that failed count as missing, not existing.
		return Outcome{res, &PartialError{ID: b.ID, Enqueued: res.Enqueued + res.Existing, Total: res.Total, Err: err}}
	}
	res.Existing += len(hosts) - added
	if err := e.agg.MarkEnqueued(ctx, b.ID); err != nil {
		return Outcome{res, &PartialError{ID: b.ID, Enqueued: res.Enqueued + res.Existing, Total: res.Total, Err: err}}
	}
	return Outcome{res, nil}
}

// lane returns b's lane. A batch enqueued again keeps the queues it has
// (a host's task is looked for where it went the first time); a new one on
// a Redis Cluster gets queues that go round the masters (SpreadSalts), as
// many on each.
func (e *Enqueuer) lane(ctx context.Context, b Batch) (tasks.Lane, error) {
	lane := tasks.Lane{Batch: b.ID, Priority: cmp.Or(b.Priority, tasks.PriorityNormal), Shards: tasks.LaneShardsCapped(len(b.Hosts), e.shards, b.MaxInFlight),
		Rate: b.Options.BatchRate, Cost: max(b.Options.Count, 1), InFlight: b.MaxInFlight, Tenant: b.Tenant, TenantRate: b.TenantRate}
	slots, err := tasks.ReadSlotMap(ctx, e.rdb)
	if err != nil {
		return lane, err
	}
	if m := slots.Len(); m > 1 && lane.Shards > m {
		// As many queues on each master: 8 on 3 masters would give
		// one a third less work than the others.
		lane.Shards -= lane.Shards % m
	}
	v, err := e.rdb.HGet(ctx, tasks.LanesKey, b.ID).Result()
	switch {
	case err == nil:
		if had, err := tasks.ParseLane(b.ID, v); err == nil && had.Shards == lane.Shards {
			lane.Salts = had.Salts
			return lane, nil
		}
	case !errors.Is(err, redis.Nil):
		return lane, fmt.Errorf("read the batch's lane: %w", err)
	}
	lane.Salts = tasks.SpreadSalts(slots, b.ID, lane.Shards)
	if slots != nil {
		if on, best := slots.Spread(lane.Queues()); on < best {
			e.logger.Warn("the batch's queues fall on fewer Redis Cluster masters than they could (are the cluster's slots very uneven?)",
				"batch", b.ID, "queues", lane.Shards, "masters", on, "could", best)
		}
	}
	return lane, nil
}

// chunkSize is how many hosts' tasks travel in one round trip: one script
// call per queue they go to.
const chunkSize = 1024

// enqueue adds a task for each of hosts, chunk by chunk in their order, up
// to e.fanOut chunks in flight, each when p lets it, and returns how many
// it added (the others were queued already).
func (e *Enqueuer) enqueue(ctx context.Context, b Batch, hosts []string, p *pacer) (int, error) {
	payloads, err := tasks.NewPayloadWriter(b.ID, b.Options)
	if err != nil {
		return 0, err
	}
	// The batch's lane is registered before its first task, so that
	// workers look at its queues; asynq's client adds each queue it
	// enqueues to to its set of queues, which its Inspector (and asynqmon)
	// list, and so does this.
	lane, err := e.lane(ctx, b)
	if err != nil {
		return 0, err
	}
	if len(hosts) > 0 {
		names := make([]any, 0, lane.Shards)
		for _, q := range lane.Queues() {
			names = append(names, q)
		}
		_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, tasks.LanesKey, lane.Batch, lane.String())
			p.SAdd(ctx, asynqAllQueues, names...)
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("register the batch's queues: %w", err)
		}
	}
	timeout := b.Options.RunTime() + TaskSlack
	var added atomic.Int64
	var next atomic.Int64
	size := chunkSize
	if e.window > 0 {
		size = min(size, max(e.window/2, 1)) // a chunk must fit in the window
	}
	g, gctx := errgroup.WithContext(ctx)
	for range min(e.fanOut, (len(hosts)+size-1)/size) {
		g.Go(func() error {
			c := newChunk(lane)
			for {
				start := int(next.Add(int64(size))) - size
				if start >= len(hosts) {
					return nil
				}
				end := min(start+size, len(hosts))
				if err := p.wait(gctx, end); err != nil {
					return err
				}
				n, err := c.send(gctx, e.rdb, payloads, b.ID, hosts[start:end], e.maxRetry, timeout)
				added.Add(int64(n))
				if err != nil {
					return err
				}
				// Workers that found the batch's queues empty wait before
				// they look again (longer each time, up to a second): each
				// chunk tells them it came.
				e.wake(gctx, b.ID)
			}
		})
	}
	err = g.Wait()
	if added.Load() > 0 {
		e.wake(ctx, b.ID) // workers that found the queues empty in between look again
	}
	return int(added.Load()), err
}

// chunk builds the script calls of one chunk of a lane's tasks, one per
// queue, reusing its buffers from chunk to chunk.
type chunk struct {
	lane   tasks.Lane
	queues []string         // the lane's
	args   map[string][]any // queue -> enqueueScript's ARGV
	buf    []byte
}

func newChunk(lane tasks.Lane) *chunk {
	return &chunk{lane: lane, queues: lane.Queues(), args: make(map[string][]any)}
}

// send enqueues hosts' tasks in one round trip and returns how many it
// added.
func (c *chunk) send(ctx context.Context, rdb redis.UniversalClient, payloads *tasks.PayloadWriter, batchID string, hosts []string, retry int, timeout time.Duration) (int, error) {
	now := nanos(time.Now())
	for q, a := range c.args {
		c.args[q] = a[:0]
	}
	// One buffer holds every message of the chunk; arguments are slices
	// of it, so it is not reused while they are in flight.
	c.buf = make([]byte, 0, len(hosts)*(256+len(batchID)))
	for _, h := range hosts {
		q := c.queues[tasks.LaneShardOf(h, len(c.queues))]
		id := tasks.TaskID(batchID, h)
		start := len(c.buf)
		var err error
		c.buf, err = payloads.Append(c.buf, h)
		if err != nil {
			return 0, fmt.Errorf("task for %s: %w", h, err)
		}
		payload := c.buf[start:]
		msgStart := len(c.buf)
		c.buf = appendTaskMessage(c.buf, tasks.TypePingHost, payload, id, q, retry, timeout)
		a := c.args[q]
		if len(a) == 0 {
			a = append(a, now, asynqTaskKeyPrefix(q))
		}
		c.args[q] = append(a, id, c.buf[msgStart:len(c.buf):len(c.buf)])
	}
	var cmds []*redis.Cmd
	queues := make([]string, 0, len(c.args))
	// Each call's error is read below.
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for q, a := range c.args {
			if len(a) == 0 {
				continue
			}
			queues = append(queues, q)
			cmds = append(cmds, enqueueScript.EvalSha(ctx, p, []string{asynqPendingKey(q)}, a...))
		}
		return nil
	})
	added := 0
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// First use on this server (or after SCRIPT FLUSH).
			q := queues[i]
			cmd = enqueueScript.Run(ctx, rdb, []string{asynqPendingKey(q)}, c.args[q]...)
		}
		n, cerr := cmd.Int()
		if cerr != nil {
			return added, fmt.Errorf("enqueue %d tasks on %s: %w", (len(c.args[queues[i]])-2)/2, queues[i], cerr)
		}
		added += n
	}
	return added, nil
}

// wake tells idle workers that tasks of batch id are waiting. It is a
// hint: a worker that misses it finds the tasks at its next look anyway.
func (e *Enqueuer) wake(ctx context.Context, id string) {
	_ = e.rdb.Publish(ctx, tasks.WakeChannel, id).Err()
}
