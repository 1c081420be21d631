package aggregator

import (
	"context"
	"fmt"
	"strconv"
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
	l, err := a.layoutOf(ctx, id)
	if err != nil {
		return false, fmt.Errorf("finalize batch %s: %w", id, err)
	}
	var n int
	if l.sharded() {
		// It ends in the state an earlier, interrupted call began, if
		// one did.
		n, state, err = a.finalizeShards(ctx, id, l, state)
	} else {
		n, err = finalizeScript.Run(ctx, a.rdb, []string{metaKey(id), pendingKey(id), eventsKey(id)},
			string(state), a.now().UnixMilli(), string(hostStatus), a.tail).Int()
	}
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

// finalizeShards ends sharded batch id as finalizeScript ends one that is
// not: it marks the record as ending in state (or in the state an earlier
// call began), closes each shard (its hosts still pending counted under
// that state's status, its event stream given the final event), then ends
// the record. It answers as finalizeScript does, with the state the batch
// ends in.
func (a *Aggregator) finalizeShards(ctx context.Context, id string, l layout, state State) (int, State, error) {
	v, err := finalizeBeginScript.Run(ctx, a.rdb, []string{metaKey(id)}, string(state)).Result()
	if err != nil {
		return 0, state, err
	}
	if n, ok := v.(int64); ok && n < 0 {
		return -1, state, nil
	}
	ending, _ := v.(string)
	if ending == "" {
		return 0, state, nil // final already
	}
	status := StatusExpired
	if State(ending) == StateCancelled {
		status = StatusCancelled
	}
	now := a.now().UnixMilli()
	cmds := make([]*redis.Cmd, l.n)
	states := make([]*redis.StringCmd, l.n)
	_, err = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j := range l.n {
			tag := l.tag(id, j)
			cmds[j] = finalizeScript.Eval(ctx, p, []string{shardKey(tag), pendingKey(tag), eventsKey(tag)},
				ending, now, string(status), a.tail)
			states[j] = p.HGet(ctx, shardKey(tag), "state")
		}
		return nil
	})
	if err != nil {
		return 0, State(ending), err
	}
	end := StateComplete // unless a shard had hosts left
	for j, c := range cmds {
		// A shard not closed (or gone): the record stays ending, and
		// the janitor finalizes it again.
		if n, err := c.Int(); err != nil {
			return 0, State(ending), fmt.Errorf("close shard %d: %w", j, err)
		} else if n < 0 {
			return 0, State(ending), fmt.Errorf("close shard %d: %w", j, ErrNotFound)
		}
		if State(states[j].Val()) != StateComplete {
			end = State(ending)
		}
	}
	// Every shard had completed (the last one's writer had not told the
	// record yet): every host was pinged, and the batch is complete, as an
	// unsharded batch would have been before the cancel or expiry.
	n, err := finalizeEndScript.Run(ctx, a.rdb, []string{metaKey(id)}, now, string(end)).Int()
	if n == 1 {
		a.trimShards(ctx, id, l)
	}
	return n, end, err
}

// CancelChannel is the Redis pub/sub channel on which the IDs of cancelled
// batches are announced.
const CancelChannel = "pingfleet:cancelled"

// OpenBatch is a batch whose lifecycle is not closed: not final yet, or
// final without its callback handed over.
type OpenBatch struct {
	ID       string
	State    State
	Deadline time.Time
	// Idle, when not zero, is the batch's IdleTimeout: its deadline follows
	// its progress, from Progress, the time of its last result (or its
	// creation), on.
	Idle        time.Duration
	Progress    time.Time
	CallbackURL string
	// Cleanup means the batch is final and its queued tasks may not all
	// be deleted yet: whoever finalized it died before, or is at it.
	Cleanup bool
	// Gone means the batch's keys expired: drop it from the index.
	Gone bool
	// Ending, for a sharded batch, is the final state a Finalize began
	// that did not end (its caller stopped): Finalize again to end it.
	Ending State
	// Stalled means every shard of a sharded batch is complete but the
	// batch is not (the writer of its last shard stopped before telling
	// it): Complete completes it.
	Stalled bool
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
			cmds[i] = p.HMGet(ctx, metaKey(z.Member.(string)), "state", "callback", "idle", "progress", "created", "cleanup", "shards", "ending")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open batches: %w", err)
	}
	num := func(v any) int64 {
		s, _ := v.(string)
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	out := make([]OpenBatch, len(zs))
	for i, z := range zs {
		v := cmds[i].Val()
		st, _ := v[0].(string)
		cb, _ := v[1].(string)
		ending, _ := v[7].(string)
		progress := num(v[3])
		if progress == 0 {
			progress = num(v[4])
		}
		out[i] = OpenBatch{ID: z.Member.(string), State: State(st), Deadline: time.UnixMilli(int64(z.Score)).UTC(), CallbackURL: cb, Gone: v[0] == nil, Cleanup: v[5] != nil,
			Idle: time.Duration(num(v[2])) * time.Millisecond, Progress: time.UnixMilli(progress).UTC(), Ending: State(ending)}
		if shards, _ := v[6].(string); shards != "" && !out[i].State.Final() {
			// A batch whose shards cannot be read now is listed with its
			// record's figures only: the others are still served.
			_ = a.shardProgress(ctx, &out[i], shards)
		}
	}
	return out, nil
}

// shardProgress reads how far the shards of open sharded batch b are: the
// time of their last result, and whether all are complete.
func (a *Aggregator) shardProgress(ctx context.Context, b *OpenBatch, shards string) error {
	l, err := a.remember(b.ID, shards)
	if err != nil {
		return err
	}
	vals, err := a.shardFields(ctx, b.ID, l, "state", "progress")
	if err != nil {
		return fmt.Errorf("open batches: %w", err)
	}
	b.Stalled = b.Ending == ""
	for _, v := range vals {
		if v[0] != string(StateComplete) {
			b.Stalled = false
		}
		if p, _ := strconv.ParseInt(v[1], 10, 64); p > b.Progress.UnixMilli() {
			b.Progress = time.UnixMilli(p).UTC()
		}
	}
	return nil
}

// Overdue reports whether b should expire at now: not final, past its
// deadline, and, when its deadline follows its progress, without a result
// for its IdleTimeout.
func (b OpenBatch) Overdue(now time.Time) bool {
	return !b.State.Final() && now.After(b.Deadline) && (b.Idle <= 0 || now.Sub(b.Progress) >= b.Idle)
}

// ExpireOverdue expires batch id if it is overdue (OpenBatch.Overdue): for
// a caller that follows a batch where no janitor may be left (every
// worker gone, no API server). It returns whether this call expired it.
func (a *Aggregator) ExpireOverdue(ctx context.Context, id string) (bool, error) {
	v, err := a.rdb.HMGet(ctx, metaKey(id), "state", "deadline", "idle", "progress", "created", "shards", "ending").Result()
	if err != nil {
		return false, fmt.Errorf("deadline of batch %s: %w", id, err)
	}
	if v[0] == nil {
		return false, fmt.Errorf("deadline of batch %s: %w", id, ErrNotFound)
	}
	num := func(v any) int64 {
		s, _ := v.(string)
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	st, _ := v[0].(string)
	ending, _ := v[6].(string)
	progress := num(v[3])
	if progress == 0 {
		progress = num(v[4])
	}
	b := OpenBatch{ID: id, State: State(st), Deadline: time.UnixMilli(num(v[1])).UTC(), Idle: time.Duration(num(v[2])) * time.Millisecond,
		Progress: time.UnixMilli(progress).UTC(), Ending: State(ending)}
	if shards, _ := v[5].(string); shards != "" && !b.State.Final() {
		if err := a.shardProgress(ctx, &b, shards); err != nil {
			return false, err
		}
	}
	if b.Stalled { // all its results are in: complete it, as the janitor would
		_, err := a.Complete(ctx, id)
		return false, err
	}
	if !b.Overdue(a.now()) {
		return false, nil
	}
	return a.Finalize(ctx, id, StateExpired)
}

// CleanedUp records that batch id's queued tasks are deleted.
func (a *Aggregator) CleanedUp(ctx context.Context, id string) error {
	if err := a.rdb.HDel(ctx, metaKey(id), "cleanup").Err(); err != nil {
		return fmt.Errorf("batch %s cleaned up: %w", id, err)
	}
	return nil
}

// Close removes batch id from the open batches: it is final and its
// callback (if any) is enqueued.
func (a *Aggregator) Close(ctx context.Context, id string) error {
	if err := a.rdb.ZRem(ctx, openKey, id).Err(); err != nil {
		return fmt.Errorf("close batch %s: %w", id, err)
	}
	return nil
}

// ExtendDeadline moves the deadline of open batch id to deadline. A batch
// no longer open stays closed.
func (a *Aggregator) ExtendDeadline(ctx context.Context, id string, deadline time.Time) error {
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAddXX(ctx, openKey, redis.Z{Score: float64(deadline.UnixMilli()), Member: id})
		extendScript.Eval(ctx, p, []string{metaKey(id)}, deadline.UnixMilli()) // no NOSCRIPT retry in a pipeline
		return nil
	})
	if err != nil {
		return fmt.Errorf("extend the deadline of batch %s: %w", id, err)
	}
	return nil
}
