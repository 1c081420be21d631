package aggregator

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/tasks"
)

// Create writes the record of a new batch and its host list, before any of
// its tasks exist. When a batch with the same ID, hosts and options exists,
// Create finishes loading it if an earlier call was interrupted and returns
// existed=true; callers then enqueue again, which adds no duplicate tasks.
func (a *Aggregator) Create(ctx context.Context, b Batch) (existed bool, err error) {
	if b.ID == "" || len(b.Hosts) == 0 {
		return false, errors.New("create batch: ID and hosts are required")
	}
	opts, err := json.Marshal(b.Options.Normalize())
	if err != nil {
		return false, fmt.Errorf("create batch: %w", err)
	}
	labels, err := json.Marshal(b.Labels)
	if err != nil {
		return false, fmt.Errorf("create batch: %w", err)
	}
	now := a.now()
	deadline, idle := b.Deadline, time.Duration(0)
	if deadline.IsZero() {
		deadline, idle = DefaultDeadline(now, len(b.Hosts), b.Options), IdleTimeout(b.Options)
	}
	l, err := a.choose(ctx, b.ID, len(b.Hosts))
	if err != nil {
		return false, fmt.Errorf("create batch %s: %w", b.ID, err)
	}
	if l.sharded() && slices.Contains(shardCounts(l, b.Hosts), 0) {
		l = single // a shard without hosts would never complete
	}
	res, err := createScript.Run(ctx, a.rdb, []string{metaKey(b.ID)},
		digest(b.Hosts, opts), b.ID, len(b.Hosts), now.UnixMilli(), opts, labels, a.retention.Milliseconds(),
		deadline.UnixMilli(), b.CallbackURL, idle.Milliseconds(), string(cmp.Or(b.Priority, tasks.PriorityNormal)),
		b.Tenant, b.MaxInFlight, l.String()).Int()
	if err != nil {
		return false, fmt.Errorf("create batch %s: %w", b.ID, err)
	}
	if res < 0 {
		return false, fmt.Errorf("create batch %s: %w", b.ID, ErrConflict)
	}
	existed = res == 0
	if existed { // the layout it was created with
		l, err = a.layoutOf(ctx, b.ID)
	} else { // and forget one of an earlier batch of this ID
		_, err = a.remember(b.ID, l.String())
	}
	if err != nil {
		return existed, err
	}
	if l.sharded() {
		err = a.loadShards(ctx, b.ID, l, b.Hosts)
	} else {
		err = a.loadHosts(ctx, b.ID, b.Hosts)
	}
	if err != nil {
		return existed, err
	}
	if existed {
		// An earlier call may have stopped before indexing it: index it
		// unless it is, as it was created.
		v, err := a.rdb.HMGet(ctx, metaKey(b.ID), "created", "deadline", "state").Result()
		if err != nil {
			return existed, fmt.Errorf("index batch %s: %w", b.ID, err)
		}
		c, _ := v[0].(string)
		d, _ := v[1].(string)
		created, _ := strconv.ParseInt(c, 10, 64)
		dl, _ := strconv.ParseInt(d, 10, 64)
		now, deadline = time.UnixMilli(created), time.UnixMilli(dl)
		if st, _ := v[2].(string); State(st).Final() {
			return existed, nil // its lifecycle may be closed: leave it so
		}
	}
	{
		// The index is outside the batch's slot, so not in the script. An
		// entry whose batch expired is dropped by Recent.
		_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ZAddNX(ctx, indexKey, redis.Z{Score: float64(now.UnixMilli()), Member: b.ID})
			p.ZAddNX(ctx, openKey, redis.Z{Score: float64(deadline.UnixMilli()), Member: b.ID})
			return nil
		})
		if err != nil {
			return existed, fmt.Errorf("index batch %s: %w", b.ID, err)
		}
	}
	return existed, nil
}

const hostChunk = 1000

func (a *Aggregator) loadHosts(ctx context.Context, id string, hosts []string) error {
	return a.appendHosts(ctx, id, []string{metaKey(id), hostsKey(id), pendingKey(id)}, hosts, 0)
}

// appendHosts runs addHostsScript on keys for each chunk of hosts from
// position loaded on.
func (a *Aggregator) appendHosts(ctx context.Context, id string, keys, hosts []string, loaded int) error {
	args := make([]any, 0, hostChunk+1)
	for loaded < len(hosts) {
		end := min(loaded+hostChunk, len(hosts))
		args = append(args[:0], loaded)
		for _, h := range hosts[loaded:end] {
			args = append(args, h)
		}
		n, err := addHostsScript.Run(ctx, a.rdb, keys, args...).Int()
		if err != nil {
			return fmt.Errorf("load hosts of batch %s: %w", id, err)
		}
		if n < 0 {
			return fmt.Errorf("load hosts of batch %s: %w", id, ErrNotFound)
		}
		loaded = n
	}
	return nil
}

// shardCounts returns how many of hosts each shard of l has.
func shardCounts(l layout, hosts []string) []int {
	n := make([]int, l.n)
	for _, h := range hosts {
		n[l.of(h)]++
	}
	return n
}

// loadShards writes the shards of sharded batch id and its host list:
// first each shard's counters and pending set, then the list, in chunks,
// each of which marks its hosts loaded. A shard's pending set grows only
// from where it was (addShardHostsScript, by the shard's own count), so a
// re-run after a crash fills it from where it stopped, and a call that
// overlaps another (two enqueuers of one ID) adds no host twice: never
// one whose result was counted meanwhile.
func (a *Aggregator) loadShards(ctx context.Context, id string, l layout, hosts []string) error {
	var loadedCmd *redis.StringCmd
	var ttlCmd *redis.DurationCmd
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		loadedCmd = p.HGet(ctx, metaKey(id), "loaded")
		ttlCmd = p.PTTL(ctx, metaKey(id))
		return nil
	})
	if err != nil {
		return fmt.Errorf("load hosts of batch %s: %w", id, err)
	}
	loaded, err := loadedCmd.Int()
	if err != nil {
		return fmt.Errorf("load hosts of batch %s: %w", id, err)
	}
	ttl := ttlCmd.Val() // the record's: every key of the batch expires with it
	if loaded >= len(hosts) {
		return nil
	}
	if ttl <= 0 {
		ttl = a.retention
	}
	if err := a.fillShards(ctx, id, l, hosts, ttl); err != nil {
		return err
	}
	return a.appendHosts(ctx, id, []string{metaKey(id), hostsKey(id)}, hosts, loaded)
}

// fillShards writes each shard's counters, unless they exist, and adds its
// hosts not loaded yet to its pending set.
func (a *Aggregator) fillShards(ctx context.Context, id string, l layout, hosts []string, ttl time.Duration) error {
	byShard := make([][]any, l.n)
	for _, h := range hosts {
		j := l.of(h)
		byShard[j] = append(byShard[j], h)
	}
	from := make([]int, l.n) // each shard's hosts loaded, as far as known
	for first := true; ; first = false {
		cmds := make([][]*redis.Cmd, l.n)
		_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := range l.n {
				tag := l.tag(id, j)
				if first {
					createShardScript.Eval(ctx, p, []string{shardKey(tag)}, len(byShard[j]), ttl.Milliseconds())
				}
				for k := from[j]; k < len(byShard[j]); k += hostChunk {
					args := append([]any{k, ttl.Milliseconds()}, byShard[j][k:min(k+hostChunk, len(byShard[j]))]...)
					cmds[j] = append(cmds[j], addShardHostsScript.Eval(ctx, p, []string{shardKey(tag), pendingKey(tag)}, args...))
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("load the shards of batch %s: %w", id, err)
		}
		again := false
		for j, cs := range cmds {
			for _, c := range cs {
				if n, err := c.Int(); err == nil && n > from[j] {
					from[j] = n // the shard's count after this chunk, or where another call is
				}
			}
			again = again || from[j] < len(byShard[j])
		}
		if !again {
			return nil
		}
	}
}

// digest identifies a batch's content, so that a re-run with the same ID
// but other hosts is refused instead of mixing two batches.
func digest(hosts []string, opts []byte) string {
	h := sha256.New()
	for _, host := range hosts {
		h.Write([]byte(host))
		h.Write([]byte{0})
	}
	h.Write(opts)
	return hex.EncodeToString(h.Sum(nil))
}

// MarkEnqueued records that every task of batch id is in the queue. A batch
// that already completed stays complete.
func (a *Aggregator) MarkEnqueued(ctx context.Context, id string) error {
	n, err := markEnqueuedScript.Run(ctx, a.rdb, []string{metaKey(id)}, a.now().UnixMilli()).Int()
	if err != nil {
		return fmt.Errorf("mark batch %s enqueued: %w", id, err)
	}
	if n < 0 {
		return fmt.Errorf("mark batch %s enqueued: %w", id, ErrNotFound)
	}
	return nil
}

// Pending returns which of hosts still wait for a result in batch id.
func (a *Aggregator) Pending(ctx context.Context, id string, hosts []string) ([]bool, error) {
	l, err := a.layoutOf(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]bool, 0, len(hosts))
	for start := 0; start < len(hosts); start += hostChunk {
		chunk := hosts[start:min(start+hostChunk, len(hosts))]
		got, err := a.pendingOf(ctx, id, l, chunk)
		if err != nil {
			return nil, fmt.Errorf("pending hosts of batch %s: %w", id, err)
		}
		out = append(out, got...)
	}
	return out, nil
}

// pendingOf asks each shard of batch id which of hosts it has pending.
func (a *Aggregator) pendingOf(ctx context.Context, id string, l layout, hosts []string) ([]bool, error) {
	return perShard(ctx, a.rdb, l, hosts, func(p redis.Pipeliner, j int, hs []string) func() []bool {
		members := make([]any, len(hs))
		for i, h := range hs {
			members[i] = h
		}
		return p.SMIsMember(ctx, pendingKey(l.tag(id, j)), members...).Val
	})
}
