package tasks

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// ShardsKey holds the number of ping queues of the fleet that uses a
// Redis: recorded by the first enqueuer or worker to come, taken by every
// later one, so that enqueuers never put tasks on queues no worker serves.
const ShardsKey = "pingfleet:shards"

// MaxShards bounds the number of ping queues.
const MaxShards = 1024

// FleetShards returns the fleet's number of ping queues on rdb: the one
// recorded under ShardsKey, or, when none is, proposed, which it records.
// To change a fleet's number, stop its workers and enqueuers, let the
// queues drain, and delete the key.
func FleetShards(ctx context.Context, rdb redis.Cmdable, proposed int) (int, error) {
	if proposed < 1 || proposed > MaxShards {
		return 0, fmt.Errorf("%d shards: want 1 to %d", proposed, MaxShards)
	}
	if err := rdb.SetNX(ctx, ShardsKey, proposed, 0).Err(); err != nil {
		return 0, fmt.Errorf("record the fleet's shards: %w", err)
	}
	v, err := rdb.Get(ctx, ShardsKey).Result()
	if errors.Is(err, redis.Nil) { // deleted meanwhile: take ours
		return proposed, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the fleet's shards: %w", err)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxShards {
		return 0, fmt.Errorf("%s holds %q, not a number of queues from 1 to %d: delete it (DEL %s) to record a new one", ShardsKey, v, MaxShards, ShardsKey)
	}
	return n, nil
}
