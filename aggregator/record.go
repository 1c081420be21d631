package aggregator

import (
	"context"
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
	cmd := recordScript.Run(ctx, a.rdb, recordKeys(id), append([]any{a.now().UnixMilli(), a.tail, startMs(r)}, args...)...)
	outs, err := recordOutcomes(id, cmd, 1)
	if err != nil {
		return Duplicate, fmt.Errorf("record %s in batch %s: %w", r.Host, id, err)
	}
	return outs[0], nil
}

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
