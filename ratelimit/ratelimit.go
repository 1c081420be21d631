// Package ratelimit makes pingfleet workers share a pings-per-second budget
// through Redis: one bucket for the whole fleet, and one per batch for
// batches that set a rate of their own.
//
// Each bucket is GCRA state in Redis (github.com/go-redis/redis_rate), read
// and updated by one Lua script per request on Redis's clock, so any number
// of processes on any number of machines draw from it exactly. A refused
// caller sleeps as long as the script says and asks again.
//
// Within one process, callers of a contended bucket wait in line and only
// the first asks Redis: a worker with a thousand tasks held back costs Redis
// about one request per token, not a thousand.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Key names. A batch's key carries the Redis Cluster hash tag {<batchID>}
// like all its other keys. redis_rate prefixes every key with "rate:".
const fleetKey = "pingfleet:rate"

func batchKey(id string) string { return "pingfleet:{" + id + "}:rate" }

// Config configures a Limiter. Every worker of a fleet must use the same
// FleetRate and Burst: the bucket is shared, its parameters are not.
type Config struct {
	// Client is the Redis connection shared by the fleet. Required.
	Client redis.UniversalClient
	// FleetRate is the most pings per second the whole fleet may send. If
	// zero, there is no fleet-wide limit.
	FleetRate int
	// Burst is how many pings the fleet may send at once, above FleetRate,
	// after a quiet spell. If zero, max(1, FleetRate/10). It sizes the fleet
	// bucket only; a batch's bucket holds max(1, batchRate/10).
	Burst int
}

// Limiter makes callers wait for their share of a fleet-wide and a per-batch
// rate. It is safe for concurrent use.
type Limiter struct {
	rl    *redis_rate.Limiter
	fleet redis_rate.Limit // zero when there is no fleet limit

	mu     sync.Mutex
	queues map[string]*queue // buckets this process has callers waiting for
}

// queue is the line of this process's callers waiting for one bucket.
type queue struct {
	turn    chan struct{} // full while the caller at the head asks Redis
	waiting int           // callers in line, the head included; guarded by Limiter.mu
}

// New returns a Limiter for cfg.
func New(cfg Config) (*Limiter, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("ratelimit: Config.Client is required")
	case cfg.FleetRate < 0:
		return nil, fmt.Errorf("ratelimit: negative fleet rate %d", cfg.FleetRate)
	case cfg.Burst < 0:
		return nil, fmt.Errorf("ratelimit: negative burst %d", cfg.Burst)
	}
	l := &Limiter{
		rl:     redis_rate.NewLimiter(cfg.Client),
		queues: make(map[string]*queue),
	}
	if cfg.FleetRate > 0 {
		burst := cfg.Burst
		if burst == 0 {
			burst = max(1, cfg.FleetRate/10)
		}
		l.fleet = redis_rate.Limit{Rate: cfg.FleetRate, Burst: burst, Period: time.Second}
	}
	return l, nil
}

// Wait blocks until n pings may be sent: n tokens from the fleet-wide bucket
// (if any) and, when batchRate > 0, from batchID's bucket of batchRate per
// second. It returns ctx.Err() if ctx ends first; tokens taken by then are
// spent. A Redis error is returned (the caller retries the task). Without a
// fleet or batch limit, Wait returns at once without touching Redis.
//
// n may exceed a bucket's burst: the tokens are then granted in several
// steps, at the bucket's rate.
func (l *Limiter) Wait(ctx context.Context, batchID string, batchRate, n int) error {
	switch {
	case n < 0:
		return fmt.Errorf("rate limit: negative count %d", n)
	case batchRate < 0:
		return fmt.Errorf("rate limit batch %s: negative rate %d", batchID, batchRate)
	case batchRate > 0 && batchID == "":
		return errors.New("rate limit: batch rate without batch ID")
	case n == 0:
		return nil
	}
	if batchRate > 0 {
		// The batch first, so that a batch held back by its own rate
		// does not hold fleet tokens while it waits.
		limit := redis_rate.Limit{Rate: batchRate, Burst: max(1, batchRate/10), Period: time.Second}
		if err := l.take(ctx, batchKey(batchID), limit, n); err != nil {
			return err
		}
	}
	if l.fleet.Rate > 0 {
		return l.take(ctx, fleetKey, l.fleet, n)
	}
	return nil
}

// Bucket names one of the fleet's buckets: the fleet's own (the
// Limiter's FleetRate), a batch's or an API tenant's, of Rate pings per
// second.
type Bucket struct {
	Kind BucketKind
	ID   string // the batch's or the tenant's; "" for the fleet's
	Rate int    // ignored for the fleet's
}

// BucketKind tells whose a Bucket is.
type BucketKind uint8

// Kinds of buckets.
const (
	FleetBucket BucketKind = iota
	BatchBucket
	TenantBucket
)

// key returns the bucket's Redis key (redis_rate adds "rate:") and limit.
func (l *Limiter) key(b Bucket) (string, redis_rate.Limit, error) {
	limit := redis_rate.Limit{Rate: b.Rate, Burst: max(1, b.Rate/10), Period: time.Second}
	switch {
	case b.Kind == FleetBucket && l.fleet.Rate > 0:
		return fleetKey, l.fleet, nil
	case b.Kind == BatchBucket && b.Rate > 0 && b.ID != "":
		return batchKey(b.ID), limit, nil
	case b.Kind == TenantBucket && b.Rate > 0 && b.ID != "":
		return tenantKey(b.ID), limit, nil
	}
	return "", limit, fmt.Errorf("rate limit: no bucket %+v", b)
}

// tenantKey is the key of tenant's bucket, under its own hash tag.
func tenantKey(tenant string) string { return "pingfleet:tenant:{" + tenant + "}:rate" }

// FleetRate returns the fleet's limit in pings per second, 0 for none.
func (l *Limiter) FleetRate() int { return l.fleet.Rate }

// Grant takes n tokens of bucket b (at most its burst), or none, without
// waiting, and returns how many it took and, when none, how long until
// they are due. It is for a fetcher that takes a task only once its pings
// are granted, so that a throttled task holds no worker slot.
//
// (All or none: redis_rate's AllowAtMost, which grants what is there,
// spends the fraction of a token it cannot grant, and lost a quarter of a
// 200/s bucket to two workers asking every 10 ms.)
func (l *Limiter) Grant(ctx context.Context, b Bucket, n int) (int, time.Duration, error) {
	key, limit, err := l.key(b)
	if err != nil {
		return 0, 0, err
	}
	if n <= 0 {
		return 0, 0, fmt.Errorf("rate limit grant: %d tokens of %s", n, key)
	}
	n = min(n, limit.Burst)
	res, err := l.rl.AllowN(ctx, key, limit, n)
	if err != nil {
		return 0, 0, fmt.Errorf("rate limit %s: %w", key, err)
	}
	return res.Allowed, res.RetryAfter, nil
}

// take takes n tokens from the bucket at key.
//
// A caller with nobody of this process in line asks for its n tokens at once,
// or for a full bucket if n is larger: one request when the bucket is not
// contended. Otherwise it joins the line and, at its head, takes tokens one at
// a time: asking for all n again would make it wait until n tokens pile up,
// which may never happen while other callers take them one by one.
func (l *Limiter) take(ctx context.Context, key string, limit redis_rate.Limit, n int) error {
	if !l.contended(key) {
		res, err := l.allow(ctx, key, limit, min(n, limit.Burst))
		if err != nil {
			return err
		}
		n -= res.Allowed
		if n == 0 {
			return nil
		}
	}

	q := l.join(key)
	defer l.leave(key, q)
	select {
	case q.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-q.turn }()

	for n > 0 {
		res, err := l.allow(ctx, key, limit, 1)
		if err != nil {
			return err
		}
		if res.Allowed > 0 {
			n--
			continue
		}
		if err := sleep(ctx, res.RetryAfter); err != nil {
			return err
		}
	}
	return nil
}

// allow asks Redis for n tokens of the bucket at key, all or none.
func (l *Limiter) allow(ctx context.Context, key string, limit redis_rate.Limit, n int) (*redis_rate.Result, error) {
	res, err := l.rl.AllowN(ctx, key, limit, n)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("rate limit %s: %w", key, err)
	}
	return res, nil
}

// contended reports whether callers of this process wait for key.
func (l *Limiter) contended(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.queues[key] != nil
}

func (l *Limiter) join(key string) *queue {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queues[key]
	if q == nil {
		q = &queue{turn: make(chan struct{}, 1)}
		l.queues[key] = q
	}
	q.waiting++
	return q
}

func (l *Limiter) leave(key string, q *queue) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q.waiting--
	if q.waiting == 0 {
		delete(l.queues, key)
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
