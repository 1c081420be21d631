package aggregator

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// recordScript counts results of one batch, each host's exactly once.
//
// KEYS: the batch's record, pending set, results, RTT histogram, event
// stream and worker names. ARGV[1] is the time, ARGV[2] how many events
// the stream keeps once the batch is complete (0: the batch has no event
// stream, see Config.NoEvents); then come seven arguments
// per result: host, worker name, record (encodeResult), status, packets
// sent and received, and the RTT histogram bucket and average RTT in
// nanoseconds as "bucket:ns" (empty unless up).
//
// It returns -1 when the batch does not exist, else one number per result:
// 0 when the host was not pending (a duplicate or retried execution, a host
// outside the batch, a batch already final: nothing changes), 1 when it
// counted the result, and 2 when that result was the batch's last. Results
// of one batch are written together: one HINCRBY per counter and histogram
// bucket for all of them.
//
// A counted result is stored as "<seq>,<worker>,<record>": seq numbers the
// batch's results in the order they were counted, which is also the ID of
// its entry in the event stream (0-<seq>), so that a reader of the stream
// can resume from the results once the stream is trimmed; worker numbers
// the worker's name in the workers hash, stored once per batch.
var recordScript = redis.NewScript(`
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
local out, hosts = {}, {}
for i = 3, #ARGV, 7 do
  out[#out + 1] = 0
  hosts[#hosts + 1] = ARGV[i]
end
if #hosts == 0 or state == 'complete' or state == 'cancelled' or state == 'expired' then return out end
local events = ARGV[2] ~= '0'
local pending = redis.call('SMISMEMBER', KEYS[2], unpack(hosts))
local done = tonumber(redis.call('HGET', KEYS[1], 'done'))
local ids, hist, seen, fields, counted = {}, {}, {}, {}, {}
local by = {up = 0, down = 0, error = 0}
local sent, recv, last, maxrtt = 0, 0, 0, 0
for j, host in ipairs(hosts) do
  if pending[j] == 1 and not seen[host] then
    seen[host] = true
    local i = 3 + 7 * (j - 1)
    local name = ARGV[i + 1]
    local w = ids[name]
    if not w then
      w = redis.call('HGET', KEYS[6], 'n:' .. name)
      if not w then
        w = redis.call('HINCRBY', KEYS[6], 'n', 1)
        redis.call('HSET', KEYS[6], 'n:' .. name, w, w, name)
      end
      ids[name] = w
    end
    counted[#counted + 1] = host
    local seq = done + #counted
    fields[#fields + 1] = host
    fields[#fields + 1] = seq .. ',' .. w .. ',' .. ARGV[i + 2]
    if events then redis.call('XADD', KEYS[5], '0-' .. seq, 'h', host) end
    by[ARGV[i + 3]] = by[ARGV[i + 3]] + 1
    sent = sent + tonumber(ARGV[i + 4])
    recv = recv + tonumber(ARGV[i + 5])
    local rtt = ARGV[i + 6]
    if rtt ~= '' then
      local b, ns = string.match(rtt, '^(%d+):(%d+)$')
      hist[b] = (hist[b] or 0) + 1
      ns = tonumber(ns)
      if ns > maxrtt then maxrtt = ns end
    end
    out[j] = 1
    last = j
  end
end
if #counted == 0 then return out end
redis.call('SREM', KEYS[2], unpack(counted))
redis.call('HSET', KEYS[3], unpack(fields))
for st, n in pairs(by) do
  if n > 0 then redis.call('HINCRBY', KEYS[1], st, n) end
end
for b, n in pairs(hist) do redis.call('HINCRBY', KEYS[4], b, n) end
if maxrtt > tonumber(redis.call('HGET', KEYS[1], 'rttmax') or '0') then
  redis.call('HSET', KEYS[1], 'rttmax', maxrtt)
end
redis.call('HINCRBY', KEYS[1], 'sent', sent)
redis.call('HINCRBY', KEYS[1], 'recv', recv)
done = redis.call('HINCRBY', KEYS[1], 'done', #counted)
-- Every key of the batch expires with its record, whose TTL never changes:
-- a key gets it from the call that creates it.
local ttl
for k = 3, 6 do
  if redis.call('PTTL', KEYS[k]) == -1 then
    ttl = ttl or redis.call('PTTL', KEYS[1])
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
if done == #counted then redis.call('HSET', KEYS[1], 'started', ARGV[1]) end
if done >= tonumber(redis.call('HGET', KEYS[1], 'total')) then
  redis.call('HSET', KEYS[1], 'state', 'complete', 'finished', ARGV[1], 'fseq', done + 1)
  if events then
    redis.call('XADD', KEYS[5], '0-' .. (done + 1), 't', 'complete')
    redis.call('XTRIM', KEYS[5], 'MAXLEN', ARGV[2])
  end
  out[last] = 2
end
return out
`)

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
	cmd := recordScript.Run(ctx, a.rdb, recordKeys(id), append([]any{a.now().UnixMilli(), a.tail}, args...)...)
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
