package aggregator

import "github.com/redis/go-redis/v9"

// The Lua scripts of the aggregator. Each runs atomically on the node that
// holds the batch: every key of a batch shares its hash tag (see keys.go).

// createScript writes the batch record unless one exists. Hosts are added
// afterwards, in chunks, by addHostsScript: a script should not carry
// 100,000 arguments.
//
// KEYS[1] -> pingfleet:{<id>}:meta
// --
// ARGV[1] -> digest of hosts and options (see digest)
// ARGV[2] -> batch ID
// ARGV[3] -> number of hosts
// ARGV[4] -> creation time, Unix ms
// ARGV[5] -> options, JSON
// ARGV[6] -> labels, JSON
// ARGV[7] -> retention, ms
// ARGV[8] -> deadline, Unix ms
// ARGV[9] -> callback URL, or ""
// ARGV[10] -> idle timeout, ms: the deadline follows progress (0: it is
//
//	fixed)
//
// ARGV[11] -> priority (tasks.Priority)
// ARGV[12] -> tenant, or ""
// ARGV[13] -> in-flight cap, 0 for none
// ARGV[14] -> the layout of its per-host state (layout.String), "" for
// one tag
//
// Returns 1 when it created the record, 0 when a record with the same
// digest exists (a re-run), -1 when one with another digest exists.
var createScript = redis.NewScript(`
local digest = redis.call('HGET', KEYS[1], 'digest')
if digest then
  if digest == ARGV[1] then return 0 end
  return -1
end
redis.call('HSET', KEYS[1], 'digest', ARGV[1], 'id', ARGV[2], 'state', 'enqueuing',
  'total', ARGV[3], 'created', ARGV[4], 'opts', ARGV[5], 'labels', ARGV[6],
  'done', 0, 'up', 0, 'down', 0, 'error', 0, 'cancelled', 0, 'expired', 0,
  'sent', 0, 'recv', 0, 'loaded', 0, 'deadline', ARGV[8], 'callback', ARGV[9], 'idle', ARGV[10],
  'priority', ARGV[11])
if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'tenant', ARGV[12]) end
if ARGV[13] ~= '0' then redis.call('HSET', KEYS[1], 'inflight', ARGV[13]) end
if ARGV[14] ~= '' then redis.call('HSET', KEYS[1], 'shards', ARGV[14], 'sdone', 0) end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
`)

// addHostsScript appends one chunk of hosts to the ordered list and the
// pending set. A chunk already loaded (a re-run after a crash) is skipped,
// so hosts are never listed twice.
//
// KEYS[1] -> pingfleet:{<id>}:meta
// KEYS[2] -> pingfleet:{<id>}:hosts
// KEYS[3] -> pingfleet:{<id>}:pending; absent for a sharded batch, whose
// shards' pending sets are filled before
// --
// ARGV[1]  -> the chunk's offset in the host list
// ARGV[2:] -> the chunk's hosts
//
// Returns the number of hosts loaded so far (a chunk at another offset
// than that changes nothing), or -1 when there is no such batch.
var addHostsScript = redis.NewScript(`
local loaded = tonumber(redis.call('HGET', KEYS[1], 'loaded'))
if loaded == nil then return -1 end
local offset = tonumber(ARGV[1])
if offset ~= loaded then return loaded end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('RPUSH', KEYS[2], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[2], ttl)
if KEYS[3] then
  redis.call('SADD', KEYS[3], unpack(ARGV, 2))
  redis.call('PEXPIRE', KEYS[3], ttl)
end
redis.call('HSET', KEYS[1], 'loaded', offset + #ARGV - 1)
return offset + #ARGV - 1
`)

// markEnqueuedScript notes that every task of the batch is queued: the
// batch goes from enqueuing to running (unless it already moved on).
//
// KEYS[1] -> pingfleet:{<id>}:meta
// --
// ARGV[1] -> time, Unix ms
//
// Returns 1, or -1 when there is no such batch.
var markEnqueuedScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSETNX', KEYS[1], 'enqueued', ARGV[1])
if redis.call('HGET', KEYS[1], 'state') == 'enqueuing' then
  redis.call('HSET', KEYS[1], 'state', 'running')
end
return 1
`)

// recordScript counts results of one batch, each host's exactly once.
// Results of one batch are written together: one HINCRBY per counter and
// histogram bucket for all of them.
//
// A counted result is stored as "<seq>,<worker>,<record>": seq numbers the
// batch's results in the order they were counted, which is also the ID of
// its entry in the event stream (0-<seq>), so that a reader of the stream
// can resume from the results once the stream is trimmed; worker numbers
// the worker's name in the workers hash, stored once per batch.
//
// The same script counts the results of one shard of a sharded batch: its
// keys are then the shard's (layout.recordKeys), the first its counters,
// which have the record's fields.
//
// KEYS[1] -> pingfleet:{<id>}:meta
// KEYS[2] -> pingfleet:{<id>}:pending
// KEYS[3] -> pingfleet:{<id>}:results
// KEYS[4] -> pingfleet:{<id>}:rtt
// KEYS[5] -> pingfleet:{<id>}:events
// KEYS[6] -> pingfleet:{<id>}:workers
// --
// ARGV[1] -> time, Unix ms
// ARGV[2] -> events the stream keeps once complete (0: no event stream)
// ARGV[3] -> when the earliest of these pings started, Unix ms (0: unknown)
// then seven per result:
// ARGV[i]   -> host
// ARGV[i+1] -> worker name
// ARGV[i+2] -> record (encodeResult)
// ARGV[i+3] -> status: up, down or error
// ARGV[i+4] -> requests sent
// ARGV[i+5] -> replies received
// ARGV[i+6] -> "<RTT histogram bucket>:<average RTT in ns>", "" unless up
//
// Returns -1 when there is no such batch, -2 when the batch is sharded (its
// results go to its shards), else one number per result: 0
// when the host was not pending (a duplicate or retried execution, a host
// outside the batch, a batch already final: nothing changes), 1 when it
// counted the result, 2 when that result was the batch's (or shard's) last.
var recordScript = redis.NewScript(`
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if redis.call('HEXISTS', KEYS[1], 'shards') == 1 then return -2 end
local out, hosts = {}, {}
for i = 4, #ARGV, 7 do
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
    local i = 4 + 7 * (j - 1)
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
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
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
-- The batch started when its first ping did, whichever result is counted
-- first.
local first = tonumber(ARGV[3])
if first == 0 then first = tonumber(ARGV[1]) end
local started = tonumber(redis.call('HGET', KEYS[1], 'started') or '0')
if started == 0 or first < started then redis.call('HSET', KEYS[1], 'started', first) end
if done >= tonumber(redis.call('HGET', KEYS[1], 'total')) then
  redis.call('HSET', KEYS[1], 'state', 'complete', 'finished', ARGV[1], 'fseq', done + 1)
  if events then
    redis.call('XADD', KEYS[5], '0-' .. (done + 1), 't', 'complete')
    -- A shard's stream is trimmed once the whole batch is final.
    if redis.call('HEXISTS', KEYS[1], 'shard') == 0 then
      redis.call('XTRIM', KEYS[5], 'MAXLEN', ARGV[2])
    end
  end
  out[last] = 2
end
return out
`)

// finalizeScript ends a batch that is not final yet, cancelled or expired:
// its hosts still pending are counted under the status of that state (a
// host without a result in a cancelled batch is cancelled), the event
// stream gets the final event, and the batch is marked for the clean-up
// of its queued tasks (field cleanup, until CleanedUp).
//
// KEYS[1] -> pingfleet:{<id>}:meta
// KEYS[2] -> pingfleet:{<id>}:pending
// KEYS[3] -> pingfleet:{<id>}:events
// --
// ARGV[1] -> the final state: cancelled or expired
// ARGV[2] -> time, Unix ms
// ARGV[3] -> the status of hosts never pinged: cancelled or expired
// ARGV[4] -> events the stream keeps (0: the batch has no event stream)
//
// Returns 1 when it ended the batch, 0 when the batch was already final,
// -1 when there is no such batch.
var finalizeScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
if st == 'complete' or st == 'cancelled' or st == 'expired' then return 0 end
local left = redis.call('SCARD', KEYS[2])
redis.call('UNLINK', KEYS[2])
local counted = tonumber(redis.call('HGET', KEYS[1], 'done'))
redis.call('HINCRBY', KEYS[1], ARGV[3], left)
redis.call('HINCRBY', KEYS[1], 'done', left)
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished', ARGV[2], 'fseq', counted + 1, 'cleanup', ARGV[2])
if ARGV[4] ~= '0' then
  redis.call('XADD', KEYS[3], '0-' .. (counted + 1), 't', ARGV[1])
  redis.call('XTRIM', KEYS[3], 'MAXLEN', ARGV[4])
  redis.call('PEXPIRE', KEYS[3], redis.call('PTTL', KEYS[1]))
end
return 1
`)

// extendScript moves a batch's deadline, unless its keys are gone.
//
// KEYS[1] -> pingfleet:{<id>}:meta
// --
// ARGV[1] -> the new deadline, Unix ms
//
// Returns 1, or 0 when there is no such batch.
var extendScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'deadline', ARGV[1])
return 1
`)

// finalizeBeginScript starts ending a sharded batch as cancelled or
// expired: the record notes it (field ending), which stops its shards'
// completion from completing it, before its shards are closed.
//
// KEYS[1] -> pingfleet:{<id>}:meta
// --
// ARGV[1] -> the final state: cancelled or expired
//
// Returns the state the batch is ending in (an earlier call's, if one
// began), "" when the batch is final, or -1 when there is no such batch.
var finalizeBeginScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
if st == 'complete' or st == 'cancelled' or st == 'expired' then return '' end
redis.call('HSETNX', KEYS[1], 'ending', ARGV[1])
return redis.call('HGET', KEYS[1], 'ending')
`)

// finalizeEndScript ends a sharded batch whose shards are closed.
//
// KEYS[1] -> pingfleet:{<id>}:meta
// --
// ARGV[1] -> time, Unix ms
// ARGV[2] -> the state it ends in: the one it is ending in, or complete
//
// Returns 1 when it ended the batch, 0 when it was final already.
var finalizeEndScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st or st == 'complete' or st == 'cancelled' or st == 'expired' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished', ARGV[1], 'cleanup', ARGV[1])
return 1
`)
