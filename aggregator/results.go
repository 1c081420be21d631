package aggregator

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// Results calls fn with the result of each host of batch id, in the order
// the hosts were submitted, reading them from Redis in chunks so that a
// large batch is never held in memory. Hosts without a result are reported
// with StatusPending, or, once the batch was cancelled or expired, with
// StatusCancelled or StatusExpired. When only is not empty, only hosts
// whose status is in it are passed to fn.
func (a *Aggregator) Results(ctx context.Context, id string, fn func(Result) error, only ...Status) error {
	return a.scan(ctx, id, 0, func(_ int64, r Result, _ int64) error {
		if len(only) > 0 && !slices.Contains(only, r.Status) {
			return nil
		}
		return fn(r)
	})
}

// scan calls fn with each host's result from position from (0-based) of the
// host list on: its position, the result and its sequence number (0 for a
// host without one).
func (a *Aggregator) scan(ctx context.Context, id string, from int64, fn func(pos int64, r Result, seq int64) error) error {
	var state *redis.StringCmd
	var workers *redis.MapStringStringCmd
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		state = p.HGet(ctx, metaKey(id), "state")
		workers = p.HGetAll(ctx, workersKey(id))
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("results of batch %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("results of batch %s: %w", id, err)
	}
	missing := StatusPending
	switch State(state.Val()) {
	case StateCancelled:
		missing = StatusCancelled
	case StateExpired:
		missing = StatusExpired
	}
	names := workers.Val()
	for start := from; ; start += hostChunk {
		hosts, err := a.rdb.LRange(ctx, hostsKey(id), start, start+hostChunk-1).Result()
		if err != nil {
			return fmt.Errorf("results of batch %s: %w", id, err)
		}
		if len(hosts) == 0 {
			return nil
		}
		vals, err := a.rdb.HMGet(ctx, resultsKey(id), hosts...).Result()
		if err != nil {
			return fmt.Errorf("results of batch %s: %w", id, err)
		}
		for i, v := range vals {
			r, seq := Result{Host: hosts[i], Status: missing}, int64(0)
			if s, ok := v.(string); ok {
				if r, seq, err = decodeResult(hosts[i], s, names); err != nil {
					return fmt.Errorf("result of %s in batch %s: %w", hosts[i], id, err)
				}
			}
			if err := fn(start+int64(i), r, seq); err != nil {
				return err
			}
		}
		if len(hosts) < hostChunk {
			return nil
		}
	}
}
