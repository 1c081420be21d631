package aggregator

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// streamTail is how many entries a batch's event stream keeps once the
// batch is final: readers that are this close to the end finish from the
// stream, others from the results (see Events).
const streamTail = 1000

// recordArgsPerResult is how many script arguments one result takes.
const recordArgsPerResult = 7

// Record stores r as the result of r.Host in batch id and counts it, unless
// that host already has one. It returns ErrNotFound when the batch does not
// exist (expired or never created).
func (a *Aggregator) Record(ctx context.Context, id string, r Result) (Outcome, error) {
	args, err := recordArgs(id, r)
	if err != nil {
		return Duplicate, err
	}
	l := a.cached(id)
	for try := 0; ; try++ {
		j := l.of(r.Host)
		cmd := recordScript.Run(ctx, a.rdb, l.recordKeys(id, j), append([]any{a.now().UnixMilli(), a.tail, startMs(r)}, args...)...)
		outs, err := recordOutcomes(id, cmd, 1)
		if retry, lerr := a.relayout(ctx, id, &l, err, try); lerr != nil {
			return Duplicate, lerr
		} else if retry {
			continue
		}
		if err != nil {
			return Duplicate, fmt.Errorf("record %s in batch %s: %w", r.Host, id, err)
		}
		if outs[0] == Completed && l.sharded() {
			outs[0] = a.completeShard(ctx, id, l, j)
		}
		return outs[0], nil
	}
}

// cached returns batch id's layout if it is known to be sharded, else the
// single one: the record script says when that is wrong.
func (a *Aggregator) cached(id string) layout {
	a.mu.Lock()
	defer a.mu.Unlock()
	if l, ok := a.layouts[id]; ok {
		return l
	}
	return single
}

// relayout handles a write that went to the wrong layout of batch id: the
// record script found the batch sharded (errSharded), or a remembered
// layout's shard was not found (the ID reused after the batch expired).
// It then sets *l to the batch's layout read again and says to retry, once.
func (a *Aggregator) relayout(ctx context.Context, id string, l *layout, err error, try int) (bool, error) {
	stale := errors.Is(err, ErrNotFound) && l.sharded()
	if try > 0 || !errors.Is(err, errSharded) && !stale {
		return false, nil
	}
	a.forget(id)
	nl, lerr := a.layoutOf(ctx, id)
	if lerr != nil {
		return false, lerr
	}
	*l = nl
	return true, nil
}

// completeShard tells batch id that its shard j is complete, and returns
// what the result that completed the shard is for the batch: Completed if
// that completed the batch. When the batch's record cannot be told, the
// result is counted all the same, and the janitor completes the batch
// (OpenBatch.Stalled).
func (a *Aggregator) completeShard(ctx context.Context, id string, l layout, j int) Outcome {
	if done, err := a.shardDone(ctx, id, j); err == nil && done {
		a.trimShards(ctx, id, l)
		return Completed
	}
	return Counted
}

// errSharded is the record script's answer for a batch whose results go to
// its shards.
var errSharded = errors.New("batch is sharded")

func recordKeys(id string) []string {
	return []string{metaKey(id), pendingKey(id), resultsKey(id), rttKey(id), eventsKey(id), workersKey(id)}
}

// recordArgs returns recordScript's arguments for r.
func recordArgs(id string, r Result) ([]any, error) {
	switch r.Status {
	case StatusUp, StatusDown, StatusError:
	default:
		return nil, fmt.Errorf("record %s in batch %s: invalid status %q", r.Host, id, r.Status)
	}
	rtt := ""
	if r.Status == StatusUp {
		ns := msToNs(r.RTTAvg)
		rtt = strconv.Itoa(rttBucket(ns)) + ":" + strconv.FormatInt(ns, 10)
	}
	return []any{r.Host, r.Worker, encodeResult(r), string(r.Status), r.Sent, r.Received, rtt}, nil
}

// recordOutcomes reads what recordScript did with n results.
func recordOutcomes(id string, cmd *redis.Cmd, n int) ([]Outcome, error) {
	v, err := cmd.Result()
	if err != nil {
		return nil, err
	}
	if v, ok := v.(int64); ok && v == -1 {
		return nil, ErrNotFound
	}
	if v, ok := v.(int64); ok && v == -2 {
		return nil, errSharded
	}
	got, ok := v.([]any)
	if !ok || len(got) != n {
		return nil, fmt.Errorf("record results in batch %s: unexpected reply %v", id, v)
	}
	outs := make([]Outcome, n)
	for i, g := range got {
		switch g {
		case int64(0):
			outs[i] = Duplicate
		case int64(1):
			outs[i] = Counted
		case int64(2):
			outs[i] = Completed
		default:
			return nil, fmt.Errorf("record results in batch %s: unexpected reply %v", id, v)
		}
	}
	return outs, nil
}

// startMs is when r's ping started, in Unix ms, 0 if unknown.
func startMs(r Result) int64 {
	if r.Started.IsZero() {
		return 0
	}
	return r.Started.UnixMilli()
}
