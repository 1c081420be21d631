// Package aggregator owns the state of every batch in Redis: its record, the
// hosts still pending, each host's result, the counters and the summary.
//
// Execution is at-least-once (asynq may run a task twice), accounting is
// exactly-once: a result is counted only by the call that removes its host
// from the batch's pending set, inside one Lua script, and the call that
// counts the last host is the only one told the batch is complete.
//
// All keys of one batch carry the hash tag {<batchID>}, so they live in one
// Redis Cluster slot and a script may touch them together, and they all
// expire together after the retention period.
package aggregator

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/tasks"
)

// DefaultRetention is how long a batch's keys live after it is created.
const DefaultRetention = 7 * 24 * time.Hour

// State is the lifecycle stage of a batch.
type State string

// Batch states.
const (
	// StateEnqueuing: the record exists, tasks are being enqueued.
	StateEnqueuing State = "enqueuing"
	// StateRunning: every task is enqueued; results are arriving.
	StateRunning State = "running"
	// StateComplete: every host has a result.
	StateComplete State = "complete"
	// StateCancelled: cancelled; hosts not pinged by then are "cancelled".
	StateCancelled State = "cancelled"
	// StateExpired: its deadline passed; hosts still pending are "expired".
	StateExpired State = "expired"
)

// Final reports whether s is a state a batch never leaves.
func (s State) Final() bool {
	return s == StateComplete || s == StateCancelled || s == StateExpired
}

// Status is the outcome of pinging one host.
type Status string

// Host statuses. Pending is never recorded; it is what Results reports for a
// host without a result yet.
const (
	StatusUp        Status = "up"        // at least one reply
	StatusDown      Status = "down"      // no reply
	StatusError     Status = "error"     // could not be pinged: name not resolved, socket refused...
	StatusPending   Status = "pending"   // no result yet
	StatusCancelled Status = "cancelled" // not pinged: the batch was cancelled
	StatusExpired   Status = "expired"   // not pinged before the batch's deadline
)

// Sentinel errors.
var (
	// ErrNotFound means no batch has that ID (or it expired).
	ErrNotFound = errors.New("batch not found")
	// ErrConflict means a batch with that ID exists with other hosts or options.
	ErrConflict = errors.New("batch ID already used by another batch")
)

// Config configures an Aggregator.
type Config struct {
	// Client is the Redis connection. Required.
	Client redis.UniversalClient
	// Retention is how long a batch's keys live. If zero, DefaultRetention.
	Retention time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
}

// Aggregator reads and writes batch state in Redis. It is safe for
// concurrent use.
type Aggregator struct {
	rdb       redis.UniversalClient
	retention time.Duration
	now       func() time.Time
}

// New returns an Aggregator for cfg.
func New(cfg Config) (*Aggregator, error) {
	if cfg.Client == nil {
		return nil, errors.New("aggregator: Config.Client is required")
	}
	if cfg.Retention < 0 {
		return nil, fmt.Errorf("aggregator: negative retention %s", cfg.Retention)
	}
	a := &Aggregator{
		rdb:       cfg.Client,
		retention: cmp.Or(cfg.Retention, DefaultRetention),
		now:       cfg.Now,
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// Key names. The batch ID in braces is the Redis Cluster hash tag.
const indexKey = "pingfleet:batches"

func metaKey(id string) string    { return "pingfleet:{" + id + "}:meta" }
func hostsKey(id string) string   { return "pingfleet:{" + id + "}:hosts" }
func pendingKey(id string) string { return "pingfleet:{" + id + "}:pending" }
func resultsKey(id string) string { return "pingfleet:{" + id + "}:results" }
func rttKey(id string) string     { return "pingfleet:{" + id + "}:rtt" }
func eventsKey(id string) string  { return "pingfleet:{" + id + "}:events" }

// openKey indexes the batches whose lifecycle is not closed (not final, or
// final without its callback enqueued), scored by deadline.
const openKey = "pingfleet:open"

// Keys returns every key that holds state of batch id, for tests and tools.
func Keys(id string) []string {
	return []string{metaKey(id), hostsKey(id), pendingKey(id), resultsKey(id), rttKey(id), eventsKey(id)}
}

// NewBatch describes a batch to create.
type NewBatch struct {
	ID      string
	Hosts   []string
	Options tasks.PingOptions
	Labels  map[string]string
	// CallbackURL is POSTed the summary once the batch is final.
	CallbackURL string
	// Deadline is when hosts still pending expire. If zero, DefaultDeadline.
	Deadline time.Time
}

// DefaultDeadline is the deadline of a batch that has none: generous for
// its size (five minutes, plus one ping time per 1,000 hosts), so only a
// batch whose workers are gone reaches it.
func DefaultDeadline(created time.Time, hosts int, opts tasks.PingOptions) time.Time {
	per := opts.Normalize().RunTime()
	return created.Add(5*time.Minute + per*time.Duration(hosts/1000+1))
}

// Result is what one ping of one host found.
type Result struct {
	Host     string  `json:"host"`
	IP       string  `json:"ip,omitempty"`
	Status   Status  `json:"status"`
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	LossPct  float64 `json:"loss_pct"`
	RTTMin   float64 `json:"rtt_min_ms"`
	RTTAvg   float64 `json:"rtt_avg_ms"`
	RTTMax   float64 `json:"rtt_max_ms"`
	RTTStdev float64 `json:"rtt_stddev_ms"`
	// ReplyTTL is the IP TTL (hop limit) of the last reply, 0 if none.
	ReplyTTL int       `json:"reply_ttl,omitempty"`
	Error    string    `json:"error,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
	Worker   string    `json:"worker,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
}

// Summary is the state of a batch and its figures across hosts.
type Summary struct {
	ID      string `json:"id"`
	State   State  `json:"state"`
	Total   int    `json:"total"`
	Done    int    `json:"done"`
	Pending int    `json:"pending"`
	Up      int    `json:"up"`
	Down    int    `json:"down"`
	Error   int    `json:"error"`
	// Cancelled and Expired count hosts never pinged because the batch was
	// cancelled or hit its deadline. Up+Down+Error+Cancelled+Expired = Done.
	Cancelled int `json:"cancelled,omitempty"`
	Expired   int `json:"expired,omitempty"`
	Sent      int `json:"sent"`
	Received  int `json:"received"`
	// LossPct is the share of all requests sent in the batch that got no reply.
	LossPct float64 `json:"loss_pct"`
	// RTT percentiles are over the average RTT of each host that is up
	// (nearest-rank method), in milliseconds.
	RTTP50 float64 `json:"rtt_p50_ms"`
	RTTP90 float64 `json:"rtt_p90_ms"`
	RTTP99 float64 `json:"rtt_p99_ms"`
	RTTMax float64 `json:"rtt_max_ms"`
	// Created is when the batch record was written, Started when its first
	// result landed, Finished when its last did.
	Created  time.Time `json:"created"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// DurationSec is Finished-Created, or the time since Created so far.
	DurationSec float64           `json:"duration_s"`
	Deadline    time.Time         `json:"deadline,omitzero"`
	Options     tasks.PingOptions `json:"options"`
	Labels      map[string]string `json:"labels,omitempty"`
	CallbackURL string            `json:"callback_url,omitempty"`
}

// Completed reports whether the batch has reached a final state.
func (s Summary) Completed() bool { return s.State.Final() }

// createScript writes the batch record unless one exists. It returns 1 when
// it created it, 0 when a record with the same digest exists (a re-run), and
// -1 when a record with another digest exists. Hosts are added afterwards,
// in chunks, by addHostsScript: a script should not carry 100,000 arguments.
var createScript = redis.NewScript(`
local digest = redis.call('HGET', KEYS[1], 'digest')
if digest then
  if digest == ARGV[1] then return 0 end
  return -1
end
redis.call('HSET', KEYS[1], 'digest', ARGV[1], 'id', ARGV[2], 'state', 'enqueuing',
  'total', ARGV[3], 'created', ARGV[4], 'opts', ARGV[5], 'labels', ARGV[6],
  'done', 0, 'up', 0, 'down', 0, 'error', 0, 'cancelled', 0, 'expired', 0,
  'sent', 0, 'recv', 0, 'loaded', 0, 'deadline', ARGV[8], 'callback', ARGV[9])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
`)

// addHostsScript appends one chunk of hosts to the ordered list and the
// pending set. ARGV[1] is the chunk's offset: a chunk already loaded (a
// re-run after a crash) is skipped, so hosts are never listed twice.
var addHostsScript = redis.NewScript(`
local loaded = tonumber(redis.call('HGET', KEYS[1], 'loaded'))
if loaded == nil then return -1 end
local offset = tonumber(ARGV[1])
if offset ~= loaded then return loaded end
local ttl = redis.call('PTTL', KEYS[1])
for i = 2, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  redis.call('SADD', KEYS[3], ARGV[i])
end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('HSET', KEYS[1], 'loaded', offset + #ARGV - 1)
return offset + #ARGV - 1
`)

// Create writes the record of a new batch and its host list, before any of
// its tasks exist. When a batch with the same ID, hosts and options exists,
// Create finishes loading it if an earlier call was interrupted and returns
// existed=true; callers then enqueue again, which adds no duplicate tasks.
func (a *Aggregator) Create(ctx context.Context, b NewBatch) (existed bool, err error) {
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
	deadline := b.Deadline
	if deadline.IsZero() {
		deadline = DefaultDeadline(now, len(b.Hosts), b.Options)
	}
	res, err := createScript.Run(ctx, a.rdb, []string{metaKey(b.ID)},
		digest(b.Hosts, opts), b.ID, len(b.Hosts), now.UnixMilli(), opts, labels, a.retention.Milliseconds(),
		deadline.UnixMilli(), b.CallbackURL).Int()
	if err != nil {
		return false, fmt.Errorf("create batch %s: %w", b.ID, err)
	}
	if res < 0 {
		return false, fmt.Errorf("create batch %s: %w", b.ID, ErrConflict)
	}
	existed = res == 0
	if err := a.loadHosts(ctx, b.ID, b.Hosts); err != nil {
		return existed, err
	}
	if !existed {
		// The index is outside the batch's slot, so not in the script. An
		// entry whose batch expired is dropped by Recent.
		_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ZAdd(ctx, indexKey, redis.Z{Score: float64(now.UnixMilli()), Member: b.ID})
			p.ZAdd(ctx, openKey, redis.Z{Score: float64(deadline.UnixMilli()), Member: b.ID})
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
	keys := []string{metaKey(id), hostsKey(id), pendingKey(id)}
	loaded := 0
	for loaded < len(hosts) {
		end := min(loaded+hostChunk, len(hosts))
		args := make([]any, 0, end-loaded+1)
		args = append(args, loaded)
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

var markEnqueuedScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSETNX', KEYS[1], 'enqueued', ARGV[1])
if redis.call('HGET', KEYS[1], 'state') == 'enqueuing' then
  redis.call('HSET', KEYS[1], 'state', 'running')
end
return 1
`)

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
	out := make([]bool, 0, len(hosts))
	for start := 0; start < len(hosts); start += hostChunk {
		chunk := hosts[start:min(start+hostChunk, len(hosts))]
		members := make([]any, len(chunk))
		for i, h := range chunk {
			members[i] = h
		}
		got, err := a.rdb.SMIsMember(ctx, pendingKey(id), members...).Result()
		if err != nil {
			return nil, fmt.Errorf("pending hosts of batch %s: %w", id, err)
		}
		out = append(out, got...)
	}
	return out, nil
}

// recordScript counts results of one batch, each host's exactly once.
// ARGV[1] is the time; then come six arguments per result: host, body,
// status, packets sent and received, and the average RTT (” unless up).
// It returns -1 when the batch does not exist, else one number per result:
// 0 when the host was not pending (a duplicate or retried execution:
// nothing changes), 1 when it counted the result, and 2 when that result
// was the batch's last. Results of one batch are written together: one
// HSET, ZADD and HINCRBY per counter for all of them.
var recordScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local out, fields, rtts = {}, {}, {}
local by = {up = 0, down = 0, error = 0}
local sent, recv, counted, last = 0, 0, 0, 0
for i = 2, #ARGV, 6 do
  local host, body = ARGV[i], ARGV[i + 1]
  if redis.call('SREM', KEYS[2], host) == 1 then
    fields[#fields + 1] = host
    fields[#fields + 1] = body
    redis.call('XADD', KEYS[5], '*', 't', 'result', 'd', body)
    by[ARGV[i + 2]] = by[ARGV[i + 2]] + 1
    sent = sent + tonumber(ARGV[i + 3])
    recv = recv + tonumber(ARGV[i + 4])
    if ARGV[i + 5] ~= '' then
      rtts[#rtts + 1] = ARGV[i + 5]
      rtts[#rtts + 1] = host
    end
    counted = counted + 1
    out[#out + 1] = 1
    last = #out
  else
    out[#out + 1] = 0
  end
end
if counted == 0 then return out end
redis.call('HSET', KEYS[3], unpack(fields))
local ups = 0
for _, st in ipairs({'up', 'down', 'error'}) do
  if by[st] > 0 then
    local n = redis.call('HINCRBY', KEYS[1], st, by[st])
    if st == 'up' then ups = n end
  end
end
if #rtts > 0 then redis.call('ZADD', KEYS[4], unpack(rtts)) end
redis.call('HINCRBY', KEYS[1], 'sent', sent)
redis.call('HINCRBY', KEYS[1], 'recv', recv)
local done = redis.call('HINCRBY', KEYS[1], 'done', counted)
-- Every key of the batch expires with its record, whose TTL never changes:
-- a key gets it once, from the call that creates it. The first results
-- create the results hash and the event stream; the first 'up' ones (the
-- only status with an RTT) the RTT set.
local first, firstUp = done == counted, #rtts > 0 and ups == by.up
if first or firstUp then
  local ttl = redis.call('PTTL', KEYS[1])
  if first then
    redis.call('PEXPIRE', KEYS[3], ttl)
    redis.call('PEXPIRE', KEYS[5], ttl)
    redis.call('HSET', KEYS[1], 'started', ARGV[1])
  end
  if firstUp then redis.call('PEXPIRE', KEYS[4], ttl) end
end
if done >= tonumber(redis.call('HGET', KEYS[1], 'total')) then
  redis.call('HSET', KEYS[1], 'state', 'complete', 'finished', ARGV[1])
  redis.call('XADD', KEYS[5], '*', 't', 'complete')
  out[last] = 2
end
return out
`)

// Outcome is what Record did with a result.
type Outcome int

// Record outcomes.
const (
	// Duplicate: the host already had a result; nothing changed.
	Duplicate Outcome = iota
	// Counted: the result was stored and counted.
	Counted
	// Completed: the result was counted and was the batch's last. Exactly
	// one Record call per batch returns Completed.
	Completed
)

// Record stores r as the result of r.Host in batch id and counts it, unless
// that host already has one. It returns ErrNotFound when the batch does not
// exist (expired or never created).
func (a *Aggregator) Record(ctx context.Context, id string, r Result) (Outcome, error) {
	args, err := recordArgs(id, r)
	if err != nil {
		return Duplicate, err
	}
	cmd := recordScript.Run(ctx, a.rdb, recordKeys(id), append([]any{a.now().UnixMilli()}, args...)...)
	outs, err := recordOutcomes(id, cmd, 1)
	if err != nil {
		return Duplicate, fmt.Errorf("record %s in batch %s: %w", r.Host, id, err)
	}
	return outs[0], nil
}

func recordKeys(id string) []string {
	return []string{metaKey(id), pendingKey(id), resultsKey(id), rttKey(id), eventsKey(id)}
}

// recordArgs returns recordScript's six arguments for r.
func recordArgs(id string, r Result) ([]any, error) {
	switch r.Status {
	case StatusUp, StatusDown, StatusError:
	default:
		return nil, fmt.Errorf("record %s in batch %s: invalid status %q", r.Host, id, r.Status)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("record %s in batch %s: %w", r.Host, id, err)
	}
	rtt := ""
	if r.Status == StatusUp {
		rtt = strconv.FormatFloat(r.RTTAvg, 'f', -1, 64)
	}
	return []any{r.Host, body, string(r.Status), r.Sent, r.Received, rtt}, nil
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

// Summary returns the state and figures of batch id.
func (a *Aggregator) Summary(ctx context.Context, id string) (Summary, error) {
	var meta *redis.MapStringStringCmd
	var count *redis.IntCmd
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		meta = p.HGetAll(ctx, metaKey(id))
		count = p.ZCard(ctx, rttKey(id))
		return nil
	})
	if err != nil {
		return Summary{}, fmt.Errorf("summary of batch %s: %w", id, err)
	}
	m := meta.Val()
	if len(m) == 0 {
		return Summary{}, fmt.Errorf("summary of batch %s: %w", id, ErrNotFound)
	}
	s, err := parseMeta(m)
	if err != nil {
		return Summary{}, fmt.Errorf("summary of batch %s: %w", id, err)
	}
	if n := count.Val(); n > 0 {
		ranks := []int64{rank(0.50, n), rank(0.90, n), rank(0.99, n), n - 1}
		cmds := make([]*redis.ZSliceCmd, len(ranks))
		_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, r := range ranks {
				cmds[i] = p.ZRangeWithScores(ctx, rttKey(id), r, r)
			}
			return nil
		})
		if err != nil {
			return Summary{}, fmt.Errorf("summary of batch %s: %w", id, err)
		}
		vals := make([]float64, len(cmds))
		for i, c := range cmds {
			if z := c.Val(); len(z) == 1 {
				vals[i] = z[0].Score
			}
		}
		s.RTTP50, s.RTTP90, s.RTTP99, s.RTTMax = vals[0], vals[1], vals[2], vals[3]
	}
	end := s.Finished
	if end.IsZero() {
		end = a.now()
	}
	s.DurationSec = end.Sub(s.Created).Seconds()
	return s, nil
}

// rank is the 0-based nearest-rank index of percentile p among n values.
func rank(p float64, n int64) int64 {
	r := int64(math.Ceil(p*float64(n))) - 1
	return min(max(r, 0), n-1)
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
	if err != nil {
		return Summary{}, err
	}
	s.Pending = s.Total - s.Done
	if s.Sent > 0 {
		s.LossPct = float64(s.Sent-s.Received) / float64(s.Sent) * 100
	}
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

// Results calls fn with the result of each host of batch id, in the order
// the hosts were submitted, reading them from Redis in chunks so that a
// large batch is never held in memory. Hosts without a result are reported
// with StatusPending. When only is not empty, only hosts whose status is in
// it are passed to fn.
func (a *Aggregator) Results(ctx context.Context, id string, fn func(Result) error, only ...Status) error {
	exists, err := a.rdb.Exists(ctx, metaKey(id)).Result()
	if err != nil {
		return fmt.Errorf("results of batch %s: %w", id, err)
	}
	if exists == 0 {
		return fmt.Errorf("results of batch %s: %w", id, ErrNotFound)
	}
	want := func(s Status) bool {
		if len(only) == 0 {
			return true
		}
		for _, o := range only {
			if o == s {
				return true
			}
		}
		return false
	}
	for start := int64(0); ; start += hostChunk {
		hosts, err := a.rdb.LRange(ctx, hostsKey(id), start, start+hostChunk-1).Result()
		if err != nil {
			return fmt.Errorf("results of batch %s: %w", id, err)
		}
		if len(hosts) == 0 {
			return nil
		}
		vals, err := a.rdb.HMGet(ctx, resultsKey(id), hosts...).Result()
		if err != nil {
			return fmt.Errorf("results of batch %s: %w", id, err)
		}
		for i, v := range vals {
			r := Result{Host: hosts[i], Status: StatusPending}
			if s, ok := v.(string); ok {
				if err := json.Unmarshal([]byte(s), &r); err != nil {
					return fmt.Errorf("result of %s in batch %s: %w", hosts[i], id, err)
				}
			}
			if !want(r.Status) {
				continue
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(hosts) < hostChunk {
			return nil
		}
	}
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
