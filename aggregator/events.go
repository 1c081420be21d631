package aggregator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Event is one event of a batch: a host's result, or the batch becoming
// final (Type is then its state).
type Event struct {
	// ID is where a reader resumes after this event: pass it to Events.
	ID string
	// Type is "result", "complete", "cancelled" or "expired".
	Type string
	// Result is the host's result of a "result" event.
	Result Result
}

// ErrEventID is returned by Events for an ID it never handed out.
var ErrEventID = errors.New("invalid event ID")

// eventsPage is the most stream entries one read takes.
const eventsPage = 1000

// Events calls fn with the events of batch id that follow the one whose ID
// is after ("" for the start), in order: each counted result once, then the
// final event. When there is none yet it waits up to block for one (0: it
// does not wait). It returns the ID to resume from and whether the final
// event has been passed.
//
// While a batch runs, its event stream lists its hosts in the order their
// results were counted (stream IDs 0-1, 0-2...; an event's ID is that
// number). Once the batch is final the stream keeps only its last entries:
// a reader further behind gets the rest from the results instead, each
// with seq past its own, in submission order; such an event's ID is
// "<seq>/<position>", so that a reader who reconnects mid-way goes on
// where it was.
//
// A sharded batch has a stream per shard: its event IDs list a number per
// shard ("<n0>,<n1>,...", and "<n0>,<n1>,.../<position>" while replaying).
func (a *Aggregator) Events(ctx context.Context, id, after string, block time.Duration, fn func(Event) error) (string, bool, error) {
	l, err := a.layoutOf(ctx, id)
	if err != nil {
		return after, false, err
	}
	if l.sharded() {
		return a.shardEvents(ctx, id, l, after, block, fn)
	}
	seqs, pos, replaying, err := parseEventID(after)
	if err == nil && len(seqs) > 1 {
		err = fmt.Errorf("%w %q: batch %s is not sharded", ErrEventID, after, id)
	}
	if err != nil {
		return after, false, err
	}
	seq := seqs[0]
	if replaying {
		return a.replay(ctx, id, seq, pos, fn)
	}
	args := &redis.XReadArgs{Streams: []string{eventsKey(id), "0-" + strconv.FormatInt(seq, 10)}, Count: eventsPage, Block: -1}
	if block > 0 {
		args.Block = block
	}
	res, err := a.rdb.XRead(ctx, args).Result()
	if errors.Is(err, redis.Nil) {
		// Nothing after seq yet, or ever: the final event is the stream's
		// last entry, and it is past seq unless it was read before.
		final, fseq, err := a.finalSeq(ctx, id)
		return after, final && seq >= fseq, err
	}
	if err != nil {
		return after, false, fmt.Errorf("events of batch %s: %w", id, err)
	}
	var msgs []redis.XMessage
	for _, st := range res {
		msgs = append(msgs, st.Messages...)
	}
	if len(msgs) == 0 {
		return after, false, nil
	}
	if first := streamSeq(msgs[0].ID); first > seq+1 {
		return a.replay(ctx, id, seq, -1, fn) // trimmed past seq: the batch is final
	}
	var hosts []string
	for _, m := range msgs {
		if h, ok := m.Values["h"].(string); ok {
			hosts = append(hosts, h)
		}
	}
	var vals *redis.SliceCmd
	var workers *redis.MapStringStringCmd
	if len(hosts) > 0 {
		_, err = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			vals = p.HMGet(ctx, resultsKey(id), hosts...)
			workers = p.HGetAll(ctx, workersKey(id))
			return nil
		})
		if err != nil {
			return after, false, fmt.Errorf("events of batch %s: %w", id, err)
		}
	}
	next, i := after, 0
	for _, m := range msgs {
		next = strconv.FormatInt(streamSeq(m.ID), 10)
		if t, ok := m.Values["t"].(string); ok {
			return next, true, fn(Event{ID: next, Type: t})
		}
		if _, ok := m.Values["h"].(string); !ok {
			continue
		}
		v, _ := vals.Val()[i].(string)
		r, _, err := decodeResult(hosts[i], v, workers.Val())
		i++
		if err != nil {
			return after, false, fmt.Errorf("event %s of batch %s: %w", m.ID, id, err)
		}
		if err := fn(Event{ID: next, Type: "result", Result: r}); err != nil {
			return next, false, err
		}
	}
	return next, false, nil
}

// replay calls fn with the results of batch id counted after seq, in
// submission order from the host after position pos, and then with the
// final event.
func (a *Aggregator) replay(ctx context.Context, id string, seq, pos int64, fn func(Event) error) (string, bool, error) {
	last := fmt.Sprintf("%d/%d", seq, pos)
	err := a.scan(ctx, id, pos+1, func(p int64, r Result, rseq int64) error {
		if rseq <= seq {
			return nil
		}
		last = fmt.Sprintf("%d/%d", seq, p)
		return fn(Event{ID: last, Type: "result", Result: r})
	})
	if err != nil {
		return last, false, err
	}
	state, err := a.rdb.HMGet(ctx, metaKey(id), "state", "fseq").Result()
	if err != nil {
		return last, false, fmt.Errorf("events of batch %s: %w", id, err)
	}
	st, _ := state[0].(string)
	fseq, _ := state[1].(string)
	if !State(st).Final() {
		return last, false, fmt.Errorf("events of batch %s: %w: it is %s, not final", id, ErrEventID, st)
	}
	return fseq, true, fn(Event{ID: fseq, Type: st})
}

// finalSeq reports whether batch id is final and the ID of its final event.
func (a *Aggregator) finalSeq(ctx context.Context, id string) (bool, int64, error) {
	v, err := a.rdb.HMGet(ctx, metaKey(id), "state", "fseq").Result()
	if err != nil {
		return false, 0, fmt.Errorf("events of batch %s: %w", id, err)
	}
	st, ok := v[0].(string)
	if !ok {
		return false, 0, fmt.Errorf("events of batch %s: %w", id, ErrNotFound)
	}
	fs, _ := v[1].(string)
	fseq, _ := strconv.ParseInt(fs, 10, 64)
	return State(st).Final(), fseq, nil
}

// streamSeq returns n of a stream ID 0-n.
func streamSeq(id string) int64 {
	_, n, _ := strings.Cut(id, "-")
	v, _ := strconv.ParseInt(n, 10, 64)
	return v
}

// ParseEventID reads an event ID: "" or a sequence number while reading the
// stream, "<seq>/<position>" while replaying the results; a sharded batch's
// IDs have a sequence number per shard, "<seq>,<seq>,...", of which seq is
// the sum. Its error wraps ErrEventID.
func ParseEventID(s string) (seq, pos int64, replaying bool, err error) {
	seqs, pos, replaying, err := parseEventID(s)
	for _, n := range seqs {
		seq += n
	}
	return seq, pos, replaying, err
}

func parseEventID(s string) (seqs []int64, pos int64, replaying bool, err error) {
	if s == "" {
		return []int64{0}, 0, false, nil
	}
	a, b, replaying := strings.Cut(s, "/")
	bad := fmt.Errorf("%w %q", ErrEventID, s)
	if replaying {
		var err error
		if pos, err = strconv.ParseInt(b, 10, 64); err != nil || pos < -1 {
			return nil, 0, false, bad
		}
	}
	for f := range strings.SplitSeq(a, ",") {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 0 || len(seqs) == maxShards {
			return nil, 0, false, bad
		}
		seqs = append(seqs, n)
	}
	return seqs, pos, replaying, nil
}
