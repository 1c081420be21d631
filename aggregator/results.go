package aggregator

import (
	"context"
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
	var meta *redis.SliceCmd
	var workers *redis.MapStringStringCmd
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		meta = p.HMGet(ctx, metaKey(id), "state", "shards")
		workers = p.HGetAll(ctx, workersKey(id))
		return nil
	})
	if err != nil {
		return fmt.Errorf("results of batch %s: %w", id, err)
	}
	state, ok := meta.Val()[0].(string)
	if !ok {
		return fmt.Errorf("results of batch %s: %w", id, ErrNotFound)
	}
	missing := StatusPending
	switch State(state) {
	case StateCancelled:
		missing = StatusCancelled
	case StateExpired:
		missing = StatusExpired
	}
	shards, _ := meta.Val()[1].(string)
	l, err := a.remember(id, shards)
	if err != nil {
		return err
	}
	names := []map[string]string{workers.Val()}
	if l.sharded() {
		if names, err = a.workerNames(ctx, id, l); err != nil {
			return err
		}
	}
	for start := from; ; start += hostChunk {
		hosts, err := a.rdb.LRange(ctx, hostsKey(id), start, start+hostChunk-1).Result()
		if err != nil {
			return fmt.Errorf("results of batch %s: %w", id, err)
		}
		if len(hosts) == 0 {
			return nil
		}
		vals, err := a.resultsOf(ctx, id, l, hosts)
		if err != nil {
			return fmt.Errorf("results of batch %s: %w", id, err)
		}
		for i, v := range vals {
			r, seq := Result{Host: hosts[i], Status: missing}, int64(0)
			if s, ok := v.(string); ok {
				if r, seq, err = decodeResult(hosts[i], s, names[l.of(hosts[i])]); err != nil {
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

// resultsOf reads the stored results of hosts of batch id from its shards:
// one value per host, nil for a host without one.
func (a *Aggregator) resultsOf(ctx context.Context, id string, l layout, hosts []string) ([]any, error) {
	if !l.sharded() {
		return a.rdb.HMGet(ctx, resultsKey(id), hosts...).Result()
	}
	return perShard(ctx, a.rdb, l, hosts, func(p redis.Pipeliner, j int, hs []string) func() []any {
		return p.HMGet(ctx, resultsKey(l.tag(id, j)), hs...).Val
	})
}

// workerNames reads the worker names of each shard of batch id.
func (a *Aggregator) workerNames(ctx context.Context, id string, l layout) ([]map[string]string, error) {
	cmds := make([]*redis.MapStringStringCmd, l.n)
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j := range l.n {
			cmds[j] = p.HGetAll(ctx, workersKey(l.tag(id, j)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("results of batch %s: %w", id, err)
	}
	names := make([]map[string]string, l.n)
	for j, c := range cmds {
		names[j] = c.Val()
	}
	return names, nil
}
