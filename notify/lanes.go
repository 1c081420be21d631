package notify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

// A batch's lane (tasks.Lane) lives as long as the batch is open: its
// queues, their tasks and asynq's counters of them. Once the batch is
// final and no task of it runs any more, the janitor deletes it all.

// lane returns batch id's lane, false if it has none registered.
func (c cleaner) lane(ctx context.Context, id string) (tasks.Lane, bool, error) {
	v, err := c.client.HGet(ctx, tasks.LanesKey, id).Result()
	if errors.Is(err, redis.Nil) {
		return tasks.Lane{}, false, nil
	}
	if err != nil {
		return tasks.Lane{}, false, fmt.Errorf("read the lane of batch %s: %w", id, err)
	}
	l, err := tasks.ParseLane(id, v)
	return l, err == nil, err
}

// dropLaneTasks deletes the tasks waiting in batch id's lane (pending,
// scheduled, waiting for a retry) and returns how many.
func (c cleaner) dropLaneTasks(ctx context.Context, id string) (int, error) {
	l, ok, err := c.lane(ctx, id)
	if err != nil || !ok {
		return 0, err
	}
	n := 0
	var errs []error
	for _, q := range l.Queues() {
		base := tasks.AsynqKeys(q)
		k, err := dropLaneScript.Run(ctx, c.client, []string{base + ":pending", base + ":scheduled", base + ":retry"}, base+":t:").Int()
		n += k
		if err != nil {
			errs = append(errs, fmt.Errorf("queue %s: %w", q, err))
		}
	}
	return n, errors.Join(errs...)
}

// dropLaneScript deletes every task of the lists and sets of KEYS (a
// pending list, then sorted sets) with their hashes, whose keys start with
// ARGV[1], and the lists and sets. Returns how many tasks.
var dropLaneScript = redis.NewScript(`
local n = 0
local function drop(ids)
  for i = 1, #ids, 1000 do
    local keys = {}
    for j = i, math.min(i + 999, #ids) do keys[#keys + 1] = ARGV[1] .. ids[j] end
    n = n + redis.call('DEL', unpack(keys))
  end
end
drop(redis.call('LRANGE', KEYS[1], 0, -1))
for k = 2, #KEYS do drop(redis.call('ZRANGE', KEYS[k], 0, -1)) end
redis.call('DEL', unpack(KEYS))
return n
`)

// laneGrace is how long a lane stays after its batch ended, so that the
// acknowledgements of its last tasks land before it goes.
const laneGrace = finalGrace

// sweepLanes deletes the lanes of batches that ended (or expired from
// Redis) at least laneGrace ago and whose tasks have all stopped
// running: their queues' keys, asynq's counters and their entries in
// asynq's set of queues and in tasks.LanesKey. It returns how many.
func (c cleaner) sweepLanes(ctx context.Context, now time.Time) (int, error) {
	if c.client == nil {
		return 0, nil
	}
	lanes, _, err := tasks.ReadLanes(ctx, c.client)
	if err != nil {
		return 0, err
	}
	gone := 0
	var errs []error
	for _, l := range lanes {
		s, err := c.agg.Progress(ctx, l.Batch)
		switch {
		case errors.Is(err, aggregator.ErrNotFound):
			s = aggregator.Summary{State: aggregator.StateExpired, Created: now.AddDate(0, 0, -7)}
		case err != nil:
			errs = append(errs, err)
			continue
		case !s.State.Final() || s.Cleaning || now.Sub(s.Finished) < laneGrace:
			continue
		}
		ok, err := c.removeLane(ctx, l, s.Created, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("lane of batch %s: %w", l.Batch, err))
		}
		if ok {
			gone++
		}
	}
	return gone, errors.Join(errs...)
}

// removeLane deletes lane l, created at created, unless one of its tasks
// still runs (its active list is not empty): that task's worker
// acknowledges it there, or the recoverer puts it back, and a later sweep
// deletes it.
func (c cleaner) removeLane(ctx context.Context, l tasks.Lane, created, now time.Time) (bool, error) {
	queues := l.Queues()
	active := make([]*redis.IntCmd, len(queues))
	if _, err := c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range queues {
			active[i] = p.LLen(ctx, tasks.AsynqKeys(q)+":active")
		}
		return nil
	}); err != nil {
		return false, err
	}
	for _, a := range active {
		if a.Val() > 0 {
			return false, nil
		}
	}
	names := make([]any, len(queues))
	for i, q := range queues {
		base := tasks.AsynqKeys(q)
		if _, err := dropLaneScript.Run(ctx, c.client, []string{base + ":pending", base + ":scheduled", base + ":retry", base + ":archived", base + ":completed"}, base+":t:").Result(); err != nil {
			return false, err
		}
		// asynq's counters: totals, and one per day (UTC) it ran.
		keys := []string{base + ":processed", base + ":failed", base + ":paused", base + ":lease", base + ":active"}
		for d := created.UTC().AddDate(0, 0, -1); !d.After(now.UTC().AddDate(0, 0, 1)); d = d.AddDate(0, 0, 1) {
			day := d.Format(time.DateOnly)
			keys = append(keys, base+":processed:"+day, base+":failed:"+day)
		}
		if err := c.client.Unlink(ctx, keys...).Err(); err != nil {
			return false, err
		}
		names[i] = q
	}
	_, err := c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SRem(ctx, asynqAllQueues, names...)
		p.HDel(ctx, tasks.LanesKey, l.Batch)
		return nil
	})
	return err == nil, err
}

// asynqAllQueues is asynq's set of queue names (its Inspector lists them).
const asynqAllQueues = "asynq:queues"
