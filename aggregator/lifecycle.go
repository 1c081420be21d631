package aggregator

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// finalizeScript ends a batch that is not final yet: every host still
// pending gets ARGV[3] as its status, and the batch ARGV[1] as its state.
// It returns 1 when it did, 0 when the batch was already final, -1 when
// there is no such batch. Host names need no JSON escaping: the enqueuer
// only lets names, IP literals and zones through.
var finalizeScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
if st == 'complete' or st == 'cancelled' or st == 'expired' then return 0 end
local hosts = redis.call('SMEMBERS', KEYS[2])
for _, h in ipairs(hosts) do
  redis.call('HSET', KEYS[3], h, '{"host":"' .. h .. '","status":"' .. ARGV[3] .. '"}')
end
redis.call('DEL', KEYS[2])
local ttl = redis.call('PTTL', KEYS[1])
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('HINCRBY', KEYS[1], ARGV[3], #hosts)
redis.call('HINCRBY', KEYS[1], 'done', #hosts)
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished', ARGV[2])
redis.call('XADD', KEYS[4], '*', 't', ARGV[1])
redis.call('PEXPIRE', KEYS[4], ttl)
return 1
`)

// Finalize ends batch id as cancelled or expired: hosts without a result
// are marked so, and results that arrive later are not counted. Exactly
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
	n, err := finalizeScript.Run(ctx, a.rdb, []string{metaKey(id), pendingKey(id), resultsKey(id), eventsKey(id)},
		string(state), a.now().UnixMilli(), string(hostStatus)).Int()
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

// Event is one entry of a batch's event stream: a result, or the batch
// becoming final (Type is then its state).
type Event struct {
	// ID is the stream entry ID: pass it back to resume after this event.
	ID   string
	Type string // "result", "complete", "cancelled" or "expired"
	// Data is the result's JSON for "result" events.
	Data string
}

// Events returns up to count events of batch id after the event with ID
// after ("0" or "" for the start), waiting up to block for one to arrive
// (0: do not wait).
func (a *Aggregator) Events(ctx context.Context, id, after string, count int, block time.Duration) ([]Event, error) {
	if after == "" {
		after = "0"
	}
	args := &redis.XReadArgs{Streams: []string{eventsKey(id), after}, Count: int64(count), Block: -1}
	if block > 0 {
		args.Block = block
	}
	res, err := a.rdb.XRead(ctx, args).Result()
	if err == redis.Nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("events of batch %s: %w", id, err)
	}
	var out []Event
	for _, st := range res {
		for _, m := range st.Messages {
			t, _ := m.Values["t"].(string)
			d, _ := m.Values["d"].(string)
			out = append(out, Event{ID: m.ID, Type: t, Data: d})
		}
	}
	return out, nil
}
