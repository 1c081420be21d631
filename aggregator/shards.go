package aggregator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/tasks"
)

// A batch's state over several Redis Cluster nodes.
//
// Every key of a batch shares one hash tag, so a single node takes every
// result write of the batch, however many nodes the Cluster has. A large
// batch created on a Cluster therefore splits its per-host state into
// shards: shard j keeps, under a hash tag of its own chosen to fall on
// the j-th master, the pending set, results, RTT histogram, event stream
// and worker names of the hosts that hash to it, and a hash of its own
// counters (the same fields the batch record has, so the record and
// finalize scripts serve a shard as they serve an unsharded batch). The
// batch record keeps what is said once: options, labels, host list (the
// submission order), state, deadline.
//
// Exactly-once completion over shards: the result that completes a shard
// is the only one its record script says so of (as for a whole batch);
// its writer then tells the batch record (shardDoneScript), which counts
// each shard once and completes the batch at the last one. A writer that
// dies in between leaves every shard complete and the batch running: the
// janitor finds such a batch (OpenBatch.Stalled) and completes it
// (Complete). Cancelling or expiring first marks the record ("ending"),
// which stops a late shard from completing it, then closes every shard,
// then ends the record; a finalizer that dies in between is repeated by
// the janitor.
//
// A shard's event stream is trimmed to its tail once the whole batch is
// final (trimShards), not when the shard completes: a reader behind in
// one shard of a running batch still reads it from the stream.
//
// A batch of one shard, and every batch on one Redis or Sentinel, keeps
// the single-tag layout: nothing of this costs them anything.

// minShardHosts is the fewest hosts per shard of a batch spread by
// default: below it, the reads of several nodes cost more than the
// writes spread save.
const minShardHosts = 1000

// maxShards bounds the shards of a batch.
const maxShards = 64

// layout says where a batch's per-host state lives: n == 1, one tag (the
// batch ID), or n shards with salted tags. The tags also carry a number
// of the batch's creation (its time in ms), so that a layout remembered
// from an earlier batch of the same ID, expired since, never finds the new
// one's keys: its writes then fail (ErrNotFound) and the layout is read
// again.
type layout struct {
	n     int
	nonce int64
	salts []int
}

var single = layout{n: 1}

// sharded reports whether the batch's state is split.
func (l layout) sharded() bool { return l.n > 1 }

// tag is the hash tag of shard j's keys.
func (l layout) tag(id string, j int) string {
	if !l.sharded() {
		return id
	}
	return shardTag(id, l.nonce, j, l.salts[j])
}

func shardTag(id string, nonce int64, j, salt int) string {
	return id + ":s" + strconv.Itoa(j) + "." + strconv.FormatInt(nonce, 36) + "." + strconv.Itoa(salt)
}

// of returns the shard of host.
func (l layout) of(host string) int {
	if !l.sharded() {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(host))
	return int(h.Sum32() % uint32(l.n))
}

// String is the layout as the batch record keeps it: "<n> <nonce>
// <salt>,<salt>...", "" for a single shard.
func (l layout) String() string {
	if !l.sharded() {
		return ""
	}
	s := make([]string, len(l.salts))
	for i, v := range l.salts {
		s[i] = strconv.Itoa(v)
	}
	return strconv.Itoa(l.n) + " " + strconv.FormatInt(l.nonce, 10) + " " + strings.Join(s, ",")
}

func parseLayout(s string) (layout, error) {
	if s == "" {
		return single, nil
	}
	f := strings.Fields(s)
	if len(f) != 3 {
		return single, fmt.Errorf("shard layout %q", s)
	}
	n, err := strconv.Atoi(f[0])
	nonce, err2 := strconv.ParseInt(f[1], 10, 64)
	if err != nil || err2 != nil || n < 2 || n > maxShards {
		return single, fmt.Errorf("shard layout %q", s)
	}
	list := f[2]
	l := layout{n: n, nonce: nonce, salts: make([]int, 0, n)}
	for v := range strings.SplitSeq(list, ",") {
		salt, err := strconv.Atoi(v)
		if err != nil || salt < 0 {
			return single, fmt.Errorf("shard layout %q", s)
		}
		l.salts = append(l.salts, salt)
	}
	if len(l.salts) != n {
		return single, fmt.Errorf("shard layout %q", s)
	}
	return l, nil
}

func shardKey(tag string) string { return "pingfleet:{" + tag + "}:shard" }

// shardKeys are the keys of shard j that the record script takes.
func (l layout) recordKeys(id string, j int) []string {
	tag := l.tag(id, j)
	if !l.sharded() {
		return recordKeys(tag)
	}
	return []string{shardKey(tag), pendingKey(tag), resultsKey(tag), rttKey(tag), eventsKey(tag), workersKey(tag)}
}

// choose returns the layout of a new batch of hosts hosts.
func (a *Aggregator) choose(ctx context.Context, id string, hosts int) (layout, error) {
	n, m := a.shards, (*tasks.SlotMap)(nil)
	if n == 0 { // by default, one shard per master of a Cluster
		var err error
		if m, err = a.slotMap(ctx); err != nil {
			return single, err
		}
		if m == nil {
			return single, nil
		}
		n = min(len(m.Masters), hosts/minShardHosts)
	}
	n = min(n, hosts, maxShards)
	if n < 2 {
		return single, nil
	}
	l := layout{n: n, nonce: a.now().UnixMilli(), salts: make([]int, n)}
	if m == nil || len(m.Masters) < 2 {
		return l, nil
	}
	// Shard j on the master after the batch record's by j+1, in the
	// order of their addresses: with as many shards as masters, each
	// master holds one.
	masters := slices.Sorted(slices.Values(m.Masters))
	home := slices.Index(masters, m.Master(tasks.Slot(metaKey(id))))
	for j := range l.salts {
		want := masters[(home+1+j)%len(masters)]
		for salt := range 64 * len(masters) {
			if m.Master(tasks.Slot(shardKey(shardTag(id, l.nonce, j, salt)))) == want {
				l.salts[j] = salt
				break
			}
		}
	}
	return l, nil
}

// slotMapAge is how long a read of the Cluster's slot map serves.
const slotMapAge = time.Minute

// slotMap returns the Cluster's slot map, nil when a.rdb is not a Cluster
// client.
func (a *Aggregator) slotMap(ctx context.Context) (*tasks.SlotMap, error) {
	if _, ok := a.rdb.(*redis.ClusterClient); !ok {
		return nil, nil
	}
	// Its own lock, held over the read: a slow Cluster does not hold up
	// the writers, which take a.mu.
	a.slotsMu.Lock()
	defer a.slotsMu.Unlock()
	if a.slots != nil && a.now().Sub(a.slotsRead) < slotMapAge {
		return a.slots, nil
	}
	m, err := tasks.ReadSlotMap(ctx, a.rdb)
	if err != nil {
		return nil, fmt.Errorf("read the cluster's slot map: %w", err)
	}
	a.slots, a.slotsRead = m, a.now()
	return m, nil
}

// layoutCache bounds the layouts an Aggregator remembers.
const layoutCache = 4096

// layoutOf reads batch id's layout from its record, and remembers it for
// the writers (cached) if it is sharded. Callers off the hot path
// (finalizing, events, pending hosts) read it so each time: a batch ID may
// be used again once its batch expired, with another layout.
func (a *Aggregator) layoutOf(ctx context.Context, id string) (layout, error) {
	s, err := a.rdb.HGet(ctx, metaKey(id), "shards").Result()
	if errors.Is(err, redis.Nil) {
		return single, nil
	}
	if err != nil {
		return single, fmt.Errorf("layout of batch %s: %w", id, err)
	}
	return a.remember(id, s)
}

// remember parses layout s of batch id and keeps it if it is sharded.
func (a *Aggregator) remember(id, s string) (layout, error) {
	l, err := parseLayout(s)
	if err != nil {
		return single, fmt.Errorf("batch %s: %w", id, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !l.sharded() {
		delete(a.layouts, id)
		return l, nil
	}
	if len(a.layouts) >= layoutCache {
		clear(a.layouts)
	}
	a.layouts[id] = l
	return l, nil
}

// forget drops batch id's remembered layout: its shards were not found
// (an ID used again after the first batch expired).
func (a *Aggregator) forget(id string) {
	a.mu.Lock()
	delete(a.layouts, id)
	a.mu.Unlock()
}

// createShardScript writes a shard's counters unless they exist. Field
// shard tells the record script it counts a shard's results, not a whole
// batch's: the shard's event stream is trimmed once the batch is final
// (trimShards), not when the shard completes.
//
// KEYS[1] -> pingfleet:{<id>:s<j>.<nonce>.<salt>}:shard
// --
// ARGV[1] -> hosts of the shard
// ARGV[2] -> TTL, ms: the batch record's
var createShardScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'running', 'total', ARGV[1], 'shard', 1,
  'done', 0, 'up', 0, 'down', 0, 'error', 0, 'cancelled', 0, 'expired', 0, 'sent', 0, 'recv', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// addShardHostsScript adds a chunk of a shard's hosts to its pending set,
// if the chunk starts where the shard's hosts loaded so far end: the
// shard counts them (field loaded), as the record counts its host list.
//
// KEYS[1] -> pingfleet:{<id>:s<j>.<nonce>.<salt>}:shard
// KEYS[2] -> pingfleet:{<id>:s<j>.<nonce>.<salt>}:pending
// --
// ARGV[1] -> the shard's hosts before this chunk
// ARGV[2] -> TTL, ms: the batch record's
// ARGV[3..] -> the chunk's hosts
//
// Returns the shard's hosts loaded after the call: ARGV[1] plus the
// chunk's, or where they end if the chunk did not start there.
var addShardHostsScript = redis.NewScript(`
local loaded = tonumber(redis.call('HGET', KEYS[1], 'loaded') or '0')
if loaded ~= tonumber(ARGV[1]) then return loaded end
redis.call('SADD', KEYS[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'loaded', loaded + #ARGV - 2)
return loaded + #ARGV - 2
`)

// trimShards trims the event streams of sharded batch id, final now, to
// their tails, as a final batch's stream is. Best effort: a stream left
// whole costs memory until it expires, nothing else.
func (a *Aggregator) trimShards(ctx context.Context, id string, l layout) {
	if a.tail == 0 {
		return
	}
	_, _ = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j := range l.n {
			p.XTrimMaxLen(ctx, eventsKey(l.tag(id, j)), int64(a.tail))
		}
		return nil
	})
}

// shardDoneScript counts shard ARGV[1] of a sharded batch as complete and
// completes the batch at its last shard, unless it is being ended
// otherwise (cancelled or expired).
//
// KEYS[1] -> pingfleet:{<id>}:meta
// --
// ARGV[1] -> the shard
// ARGV[2] -> time, Unix ms
//
// Returns 1 when it completed the batch, 0 when not (other shards run, the
// shard was counted before, the batch is final or ending), -1 when there
// is no such batch.
var shardDoneScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
if st == 'complete' or st == 'cancelled' or st == 'expired' then return 0 end
if redis.call('HEXISTS', KEYS[1], 'ending') == 1 then return 0 end
if redis.call('HSETNX', KEYS[1], 'sd:' .. ARGV[1], ARGV[2]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'sdone', 1)
local shards = tonumber(string.match(redis.call('HGET', KEYS[1], 'shards'), '^(%d+)'))
if n < shards then return 0 end
redis.call('HSET', KEYS[1], 'state', 'complete', 'finished', ARGV[2])
return 1
`)

// shardDone tells batch id's record that shard j is complete and returns
// whether that completed the batch.
func (a *Aggregator) shardDone(ctx context.Context, id string, j int) (bool, error) {
	n, err := shardDoneScript.Run(ctx, a.rdb, []string{metaKey(id)}, j, a.now().UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("complete shard %d of batch %s: %w", j, id, err)
	}
	if n < 0 {
		return false, fmt.Errorf("complete shard %d of batch %s: %w", j, id, ErrNotFound)
	}
	return n == 1, nil
}

// Complete completes sharded batch id whose shards are all complete while
// it is not (its last shard's writer stopped before it told the record):
// the janitor's repair. It returns whether this call completed it.
func (a *Aggregator) Complete(ctx context.Context, id string) (bool, error) {
	l, err := a.layoutOf(ctx, id)
	if err != nil || !l.sharded() {
		return false, err
	}
	states, err := a.shardFields(ctx, id, l, "state")
	if err != nil {
		return false, err
	}
	completed := false
	for j, v := range states {
		if v[0] != string(StateComplete) {
			continue
		}
		done, err := a.shardDone(ctx, id, j)
		if err != nil {
			return completed, err
		}
		completed = completed || done
	}
	if completed {
		a.trimShards(ctx, id, l)
	}
	return completed, nil
}

// shardFields reads fields of each shard of batch id, one pipeline: for
// each shard, the values ("" when absent).
func (a *Aggregator) shardFields(ctx context.Context, id string, l layout, fields ...string) ([][]string, error) {
	cmds := make([]*redis.SliceCmd, l.n)
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j := range l.n {
			cmds[j] = p.HMGet(ctx, shardKey(l.tag(id, j)), fields...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("shards of batch %s: %w", id, err)
	}
	out := make([][]string, l.n)
	for j, c := range cmds {
		out[j] = make([]string, len(fields))
		for k, v := range c.Val() {
			out[j][k], _ = v.(string)
		}
	}
	return out, nil
}

// perShard asks each shard of a batch of layout l about its share of
// hosts, in one pipeline: ask queues shard j's command for its hosts hs
// and returns what reads the answer, a value per host of hs in order. It
// returns the values in the order of hosts.
func perShard[T any](ctx context.Context, rdb redis.UniversalClient, l layout, hosts []string,
	ask func(p redis.Pipeliner, j int, hs []string) func() []T) ([]T, error) {
	shard := make([]int, len(hosts))
	byShard := make([][]string, l.n)
	for i, h := range hosts {
		shard[i] = l.of(h)
		byShard[shard[i]] = append(byShard[shard[i]], h)
	}
	answers := make([]func() []T, l.n)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j, hs := range byShard {
			if len(hs) > 0 {
				answers[j] = ask(p, j, hs)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	vals := make([][]T, l.n)
	for j, answer := range answers {
		if answer != nil {
			vals[j] = answer()
		}
	}
	out := make([]T, len(hosts))
	next := make([]int, l.n)
	for i, j := range shard {
		out[i] = vals[j][next[j]]
		next[j]++
	}
	return out, nil
}

// counterFields are the fields of a batch record that its shards keep
// instead when it is sharded, summed (or, for started, the earliest; for
// rttmax and progress, the greatest) to read the batch.
var counterFields = []string{"done", "up", "down", "error", "cancelled", "expired", "sent", "recv"}

// mergeShards puts the counters of shards (HGETALLs of each shard's hash)
// into the batch record m.
func mergeShards(m map[string]string, shards []map[string]string) {
	for _, k := range counterFields {
		var sum int64
		for _, s := range shards {
			n, _ := strconv.ParseInt(s[k], 10, 64)
			sum += n
		}
		m[k] = strconv.FormatInt(sum, 10)
	}
	var started, rttmax, progress int64
	for _, s := range shards {
		if n, _ := strconv.ParseInt(s["started"], 10, 64); n > 0 && (started == 0 || n < started) {
			started = n
		}
		if n, _ := strconv.ParseInt(s["rttmax"], 10, 64); n > rttmax {
			rttmax = n
		}
		if n, _ := strconv.ParseInt(s["progress"], 10, 64); n > progress {
			progress = n
		}
	}
	delete(m, "started")
	if started > 0 {
		m["started"] = strconv.FormatInt(started, 10)
	}
	m["rttmax"] = strconv.FormatInt(rttmax, 10)
	if progress > 0 {
		m["progress"] = strconv.FormatInt(progress, 10)
	}
}
