package aggregator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/tasks"
)

// Summary returns the state and figures of batch id.
func (a *Aggregator) Summary(ctx context.Context, id string) (Summary, error) {
	var meta, hist *redis.MapStringStringCmd
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		meta = p.HGetAll(ctx, metaKey(id))
		hist = p.HGetAll(ctx, rttKey(id))
		return nil
	})
	if err != nil {
		return Summary{}, fmt.Errorf("summary of batch %s: %w", id, err)
	}
	m, h := meta.Val(), hist.Val()
	if m["shards"] != "" {
		if h, err = a.readShards(ctx, id, m, true); err != nil {
			return Summary{}, err
		}
	}
	s, err := a.summary(id, m)
	if err != nil {
		return Summary{}, err
	}
	if s.Up > 0 {
		maxNs, _ := strconv.ParseInt(m["rttmax"], 10, 64)
		p := percentiles(h, maxNs, 0.50, 0.90, 0.99)
		s.RTTP50, s.RTTP90, s.RTTP99, s.RTTMax = p[0], p[1], p[2], nsToMs(maxNs)
	}
	return s, nil
}

// readShards merges the counters of sharded batch id's shards into its
// record m and returns their RTT histograms summed, if hist.
func (a *Aggregator) readShards(ctx context.Context, id string, m map[string]string, hist bool) (map[string]string, error) {
	l, err := a.remember(id, m["shards"])
	if err != nil {
		return nil, err
	}
	counts := make([]*redis.MapStringStringCmd, l.n)
	hists := make([]*redis.MapStringStringCmd, l.n)
	_, err = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j := range l.n {
			counts[j] = p.HGetAll(ctx, shardKey(l.tag(id, j)))
			if hist {
				hists[j] = p.HGetAll(ctx, rttKey(l.tag(id, j)))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("summary of batch %s: %w", id, err)
	}
	shards := make([]map[string]string, l.n)
	for j, c := range counts {
		shards[j] = c.Val()
	}
	mergeShards(m, shards)
	if !hist {
		return nil, nil
	}
	sum := make(map[string]int64)
	for _, c := range hists {
		for k, v := range c.Val() {
			n, _ := strconv.ParseInt(v, 10, 64)
			sum[k] += n
		}
	}
	out := make(map[string]string, len(sum))
	for k, n := range sum {
		out[k] = strconv.FormatInt(n, 10)
	}
	return out, nil
}

// Progress returns the state and counts of batch id, as Summary does but
// without the RTT percentiles (zero): one read of the batch's record (and
// one of its shards, when it has some), for callers that poll.
func (a *Aggregator) Progress(ctx context.Context, id string) (Summary, error) {
	m, err := a.rdb.HGetAll(ctx, metaKey(id)).Result()
	if err != nil {
		return Summary{}, fmt.Errorf("progress of batch %s: %w", id, err)
	}
	if m["shards"] != "" {
		if _, err := a.readShards(ctx, id, m, false); err != nil {
			return Summary{}, err
		}
	}
	return a.summary(id, m)
}

// Tenant returns the tenant of batch id ("" for none), or ErrNotFound.
func (a *Aggregator) Tenant(ctx context.Context, id string) (string, error) {
	v, err := a.rdb.HMGet(ctx, metaKey(id), "id", "tenant").Result()
	if err != nil {
		return "", fmt.Errorf("tenant of batch %s: %w", id, err)
	}
	if v[0] == nil {
		return "", fmt.Errorf("tenant of batch %s: %w", id, ErrNotFound)
	}
	t, _ := v[1].(string)
	return t, nil
}

// summary reads batch id's record m.
func (a *Aggregator) summary(id string, m map[string]string) (Summary, error) {
	if len(m) == 0 {
		return Summary{}, fmt.Errorf("summary of batch %s: %w", id, ErrNotFound)
	}
	s, err := parseMeta(m)
	if err != nil {
		return Summary{}, fmt.Errorf("summary of batch %s: %w", id, err)
	}
	end := s.Finished
	if end.IsZero() {
		end = a.now()
	}
	s.DurationSec = math.Round(end.Sub(s.Created).Seconds()*1000) / 1000 // to the ms, as the times
	return s, nil
}

func parseMeta(m map[string]string) (Summary, error) {
	var s Summary
	var err error
	num := func(k string) int {
		if _, ok := m[k]; !ok || err != nil {
			return 0
		}
		var v int
		v, err = strconv.Atoi(m[k])
		if err != nil {
			err = fmt.Errorf("field %s: %w", k, err)
		}
		return v
	}
	ms := func(k string) time.Time {
		v, ok := m[k]
		if !ok {
			return time.Time{}
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("field %s: %w", k, perr)
		}
		return time.UnixMilli(n).UTC()
	}
	s.ID = m["id"]
	s.State = State(m["state"])
	s.Total, s.Done = num("total"), num("done")
	s.Up, s.Down, s.Error = num("up"), num("down"), num("error")
	s.Cancelled, s.Expired = num("cancelled"), num("expired")
	s.Sent, s.Received = num("sent"), num("recv")
	s.Created, s.Started, s.Finished = ms("created"), ms("started"), ms("finished")
	s.Deadline = ms("deadline")
	s.CallbackURL = m["callback"]
	s.Priority = tasks.Priority(cmp.Or(m["priority"], string(tasks.PriorityNormal)))
	s.Tenant = m["tenant"]
	s.MaxInFlight, _ = strconv.Atoi(m["inflight"])
	if !s.Started.IsZero() {
		s.WaitSec = math.Max(0, s.Started.Sub(s.Created).Seconds())
	}
	s.Cleaning = m["cleanup"] != ""
	if err != nil {
		return Summary{}, err
	}
	s.Pending = s.Total - s.Done
	s.LossPct = LossPct(s.Sent, s.Received)
	if err := json.Unmarshal([]byte(m["opts"]), &s.Options); err != nil {
		return Summary{}, fmt.Errorf("field opts: %w", err)
	}
	if l := m["labels"]; l != "" && l != "null" {
		if err := json.Unmarshal([]byte(l), &s.Labels); err != nil {
			return Summary{}, fmt.Errorf("field labels: %w", err)
		}
	}
	return s, nil
}

// Page returns up to limit batches created before before (all when zero),
// newest first, that keep accepts, and the time to pass as before for the
// next page (zero when there is none). It scans at most 10 pages' worth.
// Batches whose keys expired are dropped from the index on the way.
func (a *Aggregator) Page(ctx context.Context, before time.Time, limit int, keep func(Summary) bool) ([]Summary, time.Time, error) {
	limit = max(limit, 1)
	cutoff := a.now().Add(-a.retention).UnixMilli()
	if err := a.rdb.ZRemRangeByScore(ctx, indexKey, "-inf", "("+strconv.FormatInt(cutoff, 10)).Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("list batches: %w", err)
	}
	maxScore := "+inf"
	if !before.IsZero() {
		maxScore = "(" + strconv.FormatInt(before.UnixMilli(), 10)
	}
	var out []Summary
	var last time.Time
	for scanned := 0; scanned < 10*limit; {
		zs, err := a.rdb.ZRevRangeByScoreWithScores(ctx, indexKey, &redis.ZRangeBy{Max: maxScore, Min: "-inf", Count: int64(limit)}).Result()
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("list batches: %w", err)
		}
		if len(zs) == 0 {
			return out, time.Time{}, nil
		}
		for _, z := range zs {
			scanned++
			last = time.UnixMilli(int64(z.Score)).UTC()
			s, err := a.Summary(ctx, z.Member.(string))
			if errors.Is(err, ErrNotFound) {
				a.rdb.ZRem(ctx, indexKey, z.Member)
				continue
			}
			if err != nil {
				return nil, time.Time{}, err
			}
			if keep == nil || keep(s) {
				out = append(out, s)
				if len(out) == limit {
					return out, last, nil
				}
			}
		}
		maxScore = "(" + strconv.FormatInt(last.UnixMilli(), 10)
	}
	return out, last, nil
}

// Recent returns the summaries of the newest batches, newest first, at most
// limit of them.
func (a *Aggregator) Recent(ctx context.Context, limit int) ([]Summary, error) {
	list, _, err := a.Page(ctx, time.Time{}, limit, nil)
	return list, err
}
