package aggregator

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// shardEventsPoll is how often Events looks again at the streams of a
// sharded batch while it waits for an event: they are on several nodes, so
// one blocking read cannot wait on all.
const shardEventsPoll = 50 * time.Millisecond

// shardEvents is Events for sharded batch id: each shard's stream is read
// on from the reader's place in it, and the batch's final event follows
// once the batch is final and every shard's results were passed.
func (a *Aggregator) shardEvents(ctx context.Context, id string, l layout, after string, block time.Duration, fn func(Event) error) (string, bool, error) {
	seqs, pos, replaying, err := parseEventID(after)
	if err != nil {
		return after, false, err
	}
	if after == "" {
		seqs = make([]int64, l.n)
	}
	if len(seqs) != l.n {
		return after, false, fmt.Errorf("%w %q: batch %s has %d shards", ErrEventID, after, id, l.n)
	}
	if replaying {
		return a.replayShards(ctx, id, l, seqs, pos, fn)
	}
	until := time.Now().Add(block)
	for {
		msgs, trimmed, err := a.readShardStreams(ctx, id, l, seqs)
		if err != nil {
			return after, false, err
		}
		if trimmed {
			return a.replayShards(ctx, id, l, seqs, -1, fn)
		}
		if len(msgs) > 0 {
			next, err := a.passShardEvents(ctx, id, l, seqs, msgs, after, fn)
			return next, false, err
		}
		final, fseqs, st, err := a.shardsFinal(ctx, id, l)
		if err != nil {
			return after, false, err
		}
		if final && passed(seqs, fseqs, 1) {
			if passed(seqs, fseqs, 0) {
				return after, true, nil // the final event was read before
			}
			next := joinSeqs(fseqs)
			return next, true, fn(Event{ID: next, Type: st})
		}
		wait := min(shardEventsPoll, time.Until(until))
		if wait <= 0 {
			return after, false, nil
		}
		select {
		case <-ctx.Done():
			return after, false, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// passed reports whether each seqs[j] is at least fseqs[j]-back.
func passed(seqs, fseqs []int64, back int64) bool {
	for j := range seqs {
		if seqs[j] < fseqs[j]-back {
			return false
		}
	}
	return true
}

func joinSeqs(seqs []int64) string {
	var b strings.Builder
	for j, n := range seqs {
		if j > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(n, 10))
	}
	return b.String()
}

// readShardStreams reads each shard's stream after seqs, a page in all: for
// each shard its results' entries (none if there is none in any), and
// whether one was trimmed past its place (the batch is final). A shard's
// final entry is left unread: the reader's place stays before it, and the
// batch's final event, which comes once all shards are there, is after.
func (a *Aggregator) readShardStreams(ctx context.Context, id string, l layout, seqs []int64) ([][]redis.XMessage, bool, error) {
	cmds := make([]*redis.XMessageSliceCmd, l.n)
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j := range l.n {
			cmds[j] = p.XRangeN(ctx, eventsKey(l.tag(id, j)), "0-"+strconv.FormatInt(seqs[j]+1, 10), "+", int64(eventsPage/l.n+1))
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("events of batch %s: %w", id, err)
	}
	out := make([][]redis.XMessage, l.n)
	found := false
	for j, c := range cmds {
		ms := c.Val()
		if len(ms) > 0 && streamSeq(ms[0].ID) > seqs[j]+1 {
			return nil, true, nil
		}
		for _, m := range ms {
			if _, ok := m.Values["h"].(string); ok {
				out[j] = append(out[j], m)
				found = true
			}
		}
	}
	if !found {
		return nil, false, nil
	}
	return out, false, nil
}

// passShardEvents calls fn with the results msgs name, shard by shard,
// each with the ID of the reader's place after it, and returns the place
// after the last of msgs.
func (a *Aggregator) passShardEvents(ctx context.Context, id string, l layout, seqs []int64, msgs [][]redis.XMessage, after string, fn func(Event) error) (string, error) {
	hosts := make([][]string, l.n)
	for j, ms := range msgs {
		for _, m := range ms {
			hosts[j] = append(hosts[j], m.Values["h"].(string))
		}
	}
	vals := make([]*redis.SliceCmd, l.n)
	workers := make([]*redis.MapStringStringCmd, l.n)
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j := range l.n {
			if len(hosts[j]) > 0 {
				vals[j] = p.HMGet(ctx, resultsKey(l.tag(id, j)), hosts[j]...)
				workers[j] = p.HGetAll(ctx, workersKey(l.tag(id, j)))
			}
		}
		return nil
	})
	if err != nil {
		return after, fmt.Errorf("events of batch %s: %w", id, err)
	}
	next := after
	for j, ms := range msgs {
		for i, m := range ms {
			seqs[j] = streamSeq(m.ID)
			next = joinSeqs(seqs)
			v, _ := vals[j].Val()[i].(string)
			r, _, err := decodeResult(hosts[j][i], v, workers[j].Val())
			if err != nil {
				return after, fmt.Errorf("event %s of batch %s: %w", m.ID, id, err)
			}
			if err := fn(Event{ID: next, Type: "result", Result: r}); err != nil {
				return next, err
			}
		}
	}
	return next, nil
}

// shardsFinal reads whether sharded batch id is final, the numbers of its
// shards' final events and its state.
func (a *Aggregator) shardsFinal(ctx context.Context, id string, l layout) (bool, []int64, string, error) {
	st, err := a.rdb.HGet(ctx, metaKey(id), "state").Result()
	if err != nil {
		return false, nil, "", fmt.Errorf("events of batch %s: %w", id, err)
	}
	if !State(st).Final() {
		return false, nil, st, nil
	}
	vals, err := a.shardFields(ctx, id, l, "fseq")
	if err != nil {
		return false, nil, "", err
	}
	fseqs := make([]int64, l.n)
	for j, v := range vals {
		fseqs[j], _ = strconv.ParseInt(v[0], 10, 64)
	}
	return true, fseqs, st, nil
}

// replayShards is replay for sharded batch id: the results counted after
// the reader's place in their shard's stream, in submission order from the
// host after position pos, then the final event.
func (a *Aggregator) replayShards(ctx context.Context, id string, l layout, seqs []int64, pos int64, fn func(Event) error) (string, bool, error) {
	at := joinSeqs(seqs)
	last := fmt.Sprintf("%s/%d", at, pos)
	err := a.scan(ctx, id, pos+1, func(p int64, r Result, rseq int64) error {
		if rseq <= seqs[l.of(r.Host)] {
			return nil
		}
		last = fmt.Sprintf("%s/%d", at, p)
		return fn(Event{ID: last, Type: "result", Result: r})
	})
	if err != nil {
		return last, false, err
	}
	final, fseqs, st, err := a.shardsFinal(ctx, id, l)
	if err != nil {
		return last, false, err
	}
	if !final {
		return last, false, fmt.Errorf("events of batch %s: %w: it is %s, not final", id, ErrEventID, st)
	}
	next := joinSeqs(fseqs)
	return next, true, fn(Event{ID: next, Type: st})
}
