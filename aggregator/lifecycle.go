package aggregator

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Finalize ends batch id as cancelled or expired: hosts without a result
// are counted, and reported, as cancelled or expired, and results that
// arrive later are not counted. Exactly
// one call per batch returns true; it returns false when the batch was
// already final.
func (a *Aggregator) Finalize(ctx context.Context, id string, state State) (bool, error) {
	var hostStatus Status
	switch state {
	case StateCancelled:
		hostStatus = StatusCancelled
	case StateExpired:
		hostStatus = StatusExpired
	default:
		return false, fmt.Errorf("finalize batch %s: state %q is not cancelled or expired", id, state)
	}
	n, err := finalizeScript.Run(ctx, a.rdb, []string{metaKey(id), pendingKey(id), eventsKey(id)},
		string(state), a.now().UnixMilli(), string(hostStatus), a.tail).Int()
	switch {
	case err != nil:
		return false, fmt.Errorf("finalize batch %s: %w", id, err)
	case n < 0:
		return false, fmt.Errorf("finalize batch %s: %w", id, ErrNotFound)
	}
	if n == 1 && state == StateCancelled {
		// Workers skip tasks of cancelled batches they hear about.
		if err := a.rdb.Publish(ctx, CancelChannel, id).Err(); err != nil {
			return true, fmt.Errorf("announce cancel of batch %s: %w", id, err)
		}
	}
	return n == 1, nil
}

// CancelChannel is the Redis pub/sub channel on which the IDs of cancelled
// batches are announced.
const CancelChannel = "pingfleet:cancelled"

// OpenBatch is a batch whose lifecycle is not closed: not final yet, or
// final without its callback handed over.
type OpenBatch struct {
	ID          string
	State       State
	Deadline    time.Time
	CallbackURL string
	// Gone means the batch's keys expired: drop it from the index.
	Gone bool
}

// OpenBatches returns up to limit open batches, earliest deadline first.
func (a *Aggregator) OpenBatches(ctx context.Context, limit int) ([]OpenBatch, error) {
	zs, err := a.rdb.ZRangeWithScores(ctx, openKey, 0, int64(max(limit, 1))-1).Result()
	if err != nil {
		return nil, fmt.Errorf("open batches: %w", err)
	}
	cmds := make([]*redis.SliceCmd, len(zs))
	_, err = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			cmds[i] = p.HMGet(ctx, metaKey(z.Member.(string)), "state", "callback")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open batches: %w", err)
	}
	out := make([]OpenBatch, len(zs))
	for i, z := range zs {
		v := cmds[i].Val()
		st, _ := v[0].(string)
		cb, _ := v[1].(string)
		out[i] = OpenBatch{ID: z.Member.(string), State: State(st), Deadline: time.UnixMilli(int64(z.Score)).UTC(), CallbackURL: cb, Gone: v[0] == nil}
	}
	return out, nil
}

// Close removes batch id from the open batches: it is final and its
// callback (if any) is enqueued.
func (a *Aggregator) Close(ctx context.Context, id string) error {
	if err := a.rdb.ZRem(ctx, openKey, id).Err(); err != nil {
		return fmt.Errorf("close batch %s: %w", id, err)
	}
	return nil
}
