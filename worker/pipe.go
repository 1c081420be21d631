package worker

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// asynqPipe carries the script calls of a worker's asynq servers to Redis
// together. Calls made while one round trip is in flight travel in the
// next, and those asynq makes once per task do their work in one call of
// a script of ours per queue:
//
//   - its dequeues of one queue (dequeueScript), which pop a task each as
//     asynq's dequeue script would, one after the other;
//   - its acknowledgements of tasks done (doneScript), which remove each
//     task as asynq's done script would, and count them all at once.
//
// asynq v0.26 makes two script calls per task, and Redis spent about 20 µs
// of Lua overhead per task on them (bench/README.md). A call waits for at
// most one round trip in flight before its own: nothing lingers to fill
// batches. Other calls (retries, recovery, housekeeping) go as they are.
type asynqPipe struct {
	rdb     redis.UniversalClient
	reqs    chan *pipeReq
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once
	started atomic.Bool
}

type pipeReq struct {
	ctx  context.Context
	sha  string
	keys []string
	args []any
	out  chan *redis.Cmd
	// capacity, for a dequeue, is how many tasks of the queue may be
	// active at once (0: any number); see dequeueCapped.
	capacity int
}

// maxPipeline bounds the calls of one round trip.
const maxPipeline = 512

// newAsynqPipe returns a pipe on rdb; Start starts it. Calls made before
// wait for it.
func newAsynqPipe(rdb redis.UniversalClient) *asynqPipe {
	return &asynqPipe{rdb: rdb, reqs: make(chan *pipeReq), quit: make(chan struct{}), done: make(chan struct{})}
}

// Start starts the goroutine that sends the calls.
func (p *asynqPipe) Start() {
	if p.started.CompareAndSwap(false, true) {
		go p.loop()
	}
}

// EvalSha sends the call with the others made meanwhile.
func (p *asynqPipe) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.send(&pipeReq{ctx: ctx, sha: sha1, keys: keys, args: args, out: make(chan *redis.Cmd, 1)})
}

// dequeueCapped runs asynq's dequeue of keys and args (isDequeue) unless
// capacity tasks of the queue are active already: it then answers
// errQueueFull if the queue has tasks (redis.Nil if not, as asynq's).
func (p *asynqPipe) dequeueCapped(ctx context.Context, keys []string, args []any, capacity int) *redis.Cmd {
	return p.send(&pipeReq{ctx: ctx, keys: keys, args: args, out: make(chan *redis.Cmd, 1), capacity: capacity})
}

// errQueueFull answers a dequeue of a queue at its capacity.
var errQueueFull = errors.New("pingfleet: queue at its in-flight cap")

func (p *asynqPipe) send(req *pipeReq) *redis.Cmd {
	select {
	case p.reqs <- req:
		return <-req.out
	case <-req.ctx.Done():
		cmd := redis.NewCmd(req.ctx)
		cmd.SetErr(req.ctx.Err())
		return cmd
	case <-p.quit:
		if req.capacity > 0 {
			p.flush([]*pipeReq{req}) // one round trip of its own
			return <-req.out
		}
		return p.rdb.EvalSha(req.ctx, req.sha, req.keys, req.args...)
	}
}

// Close ends the batching; later calls go straight to the client.
func (p *asynqPipe) Close() {
	p.once.Do(func() { close(p.quit) })
	if p.started.Load() {
		<-p.done
	}
}

func (p *asynqPipe) loop() {
	defer close(p.done)
	batch := make([]*pipeReq, 0, maxPipeline)
	for {
		select {
		case r := <-p.reqs:
			batch = append(batch[:0], r)
		case <-p.quit:
			return
		}
	more:
		for len(batch) < maxPipeline {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		p.flush(batch)
	}
}

// call is one script call of a round trip and the requests it answers.
type call struct {
	reqs   []*pipeReq
	script *redis.Script // one of ours for several requests; nil: as asked
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

// flush sends batch in one round trip and answers each request.
func (p *asynqPipe) flush(batch []*pipeReq) {
	calls := group(batch)
	// Each call keeps its own context for its result; the pipeline as a
	// whole runs under the first one's values but is not cancelled with it.
	ctx := context.WithoutCancel(batch[0].ctx)
	_, _ = p.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for _, c := range calls {
			if c.script == nil {
				r := c.reqs[0]
				c.cmd = pl.EvalSha(r.ctx, r.sha, r.keys, r.args...)
			} else {
				c.cmd = c.script.EvalSha(ctx, pl, c.keys, c.args...)
			}
		}
		return nil
	})
	for _, c := range calls {
		if c.script == nil {
			c.reqs[0].out <- c.cmd
			continue
		}
		if err := c.cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// First use on this server (or after SCRIPT FLUSH).
			c.cmd = c.script.Run(ctx, p.rdb, c.keys, c.args...)
		}
		answer(c)
	}
}

// group turns requests into calls: asynq's dequeues of one queue into one
// call of dequeueScript, its acknowledgements of one queue on one day into
// one of doneScript, each other request into a call of its own.
func group(batch []*pipeReq) []*call {
	var calls []*call
	byKey := make(map[string]*call)
	for _, r := range batch {
		var gkey string
		var script *redis.Script
		switch {
		case r.capacity > 0 || isDequeue(r.keys, r.args):
			gkey, script = "d"+strconv.Itoa(r.capacity)+"\x00"+r.keys[0], dequeueScript
		case isDone(r.keys, r.args):
			gkey, script = "a"+r.keys[0]+"\x00"+r.keys[3], doneScript
		}
		if gkey == "" {
			calls = append(calls, &call{reqs: []*pipeReq{r}})
			continue
		}
		if c, ok := byKey[gkey]; ok {
			c.reqs = append(c.reqs, r)
			continue
		}
		c := &call{reqs: []*pipeReq{r}, script: script}
		byKey[gkey] = c
		calls = append(calls, c)
	}
	for _, c := range calls {
		r := c.reqs[0]
		switch {
		case c.script == dequeueScript && len(c.reqs) < 2 && r.capacity == 0:
			c.script = nil // alone, it goes as asynq made it
		case c.script == dequeueScript:
			c.keys = r.keys
			c.args = append(make([]any, 0, 2+len(c.reqs)), r.args[1], r.capacity)
			for _, q := range c.reqs {
				c.args = append(c.args, q.args[0])
			}
		case c.script == doneScript: // even alone: see doneScript
			c.keys = []string{r.keys[0], r.keys[1], r.keys[3], r.keys[4]}
			c.args = append(make([]any, 0, 1+2*len(c.reqs)), r.args[1])
			for _, q := range c.reqs {
				c.args = append(c.args, q.args[0], q.keys[2])
			}
		}
	}
	return calls
}

var errNotFound = errors.New("NOT FOUND")

// answer gives each request of a combined call what asynq's own script
// would have answered it.
func answer(c *call) {
	vals, err := c.cmd.Slice()
	for i, r := range c.reqs {
		cmd := redis.NewCmd(r.ctx)
		switch {
		case err != nil:
			cmd.SetErr(err)
		case c.script == dequeueScript:
			// A message, or the queue ran out (or is paused), or is full.
			switch {
			case i < len(vals) && vals[i] == int64(0):
				cmd.SetErr(errQueueFull)
			case i < len(vals) && vals[i] != "":
				cmd.SetVal(vals[i])
			default:
				cmd.SetErr(redis.Nil)
			}
		case i < len(vals) && vals[i] == int64(1):
			cmd.SetVal("OK")
		default:
			cmd.SetErr(errNotFound)
		}
		r.out <- cmd
	}
}

// isDequeue reports whether a call is asynq v0.26's dequeue script's: keys
// a queue's pending list, paused flag, active list and lease set; arguments
// the lease's expiry and the queue's task key prefix. TestAsynqPipe fails
// if an asynq upgrade changes them; the worker would then still work, but
// make one call per dequeue.
func isDequeue(keys []string, args []any) bool {
	if len(keys) != 4 || len(args) != 2 {
		return false
	}
	q, ok := strings.CutSuffix(keys[0], ":pending")
	prefix, _ := args[1].(string)
	return ok && strings.HasPrefix(q, "asynq:{") && joined(keys[1], q, ":paused", "") && joined(keys[2], q, ":active", "") &&
		joined(keys[3], q, ":lease", "") && joined(prefix, q, ":t:", "")
}

// joined reports whether s is a+b+c, without building that string: these
// checks run for every script call, thousands a second.
func joined(s, a, b, c string) bool {
	return len(s) == len(a)+len(b)+len(c) && strings.HasPrefix(s, a) && s[len(a):len(a)+len(b)] == b && strings.HasSuffix(s, c)
}

// isDone reports whether a call is asynq v0.26's done script's, the
// acknowledgement of a task kept no longer (no retention, no uniqueness
// lock): keys the queue's active list, lease set, the task's key, the day's
// processed counter and the processed total; arguments the task ID, the
// day counter's expiry and the most a counter holds.
func isDone(keys []string, args []any) bool {
	if len(keys) != 5 || len(args) != 3 {
		return false
	}
	q, ok := strings.CutSuffix(keys[0], ":active")
	id, _ := args[0].(string)
	day, onQueue := strings.CutPrefix(keys[3], q)
	return ok && onQueue && strings.HasPrefix(q, "asynq:{") && joined(keys[1], q, ":lease", "") && joined(keys[2], q, ":t:", id) &&
		strings.HasPrefix(day, ":processed:") && joined(keys[4], q, ":processed", "")
}

// dequeueScript pops a task for each of several dequeues of one queue, as
// asynq's dequeue script would one after the other, and returns their
// messages: fewer when the queue runs out, none when it is paused, and an
// empty one for a task whose hash has gone. The list moves and the leases
// are one command each for all of them. With a cap (a batch's in-flight
// cap, across the fleet), it pops no more than make that many tasks of the
// queue active, and answers 0 instead of a message to each dequeue it
// refused for that, when tasks wait.
//
// KEYS: the queue's pending list, paused flag, active list and lease set.
// ARGV[1]: its task key prefix; ARGV[2]: the cap, 0 for none; then each
// dequeue's lease expiry.
var dequeueScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local want, cap = #ARGV - 2, tonumber(ARGV[2])
local room = want
if cap > 0 then room = cap - redis.call('LLEN', KEYS[3]) end
local out = {}
if room > 0 then
  local ids = redis.call('RPOP', KEYS[1], math.min(want, room))
  if ids then
    redis.call('LPUSH', KEYS[3], unpack(ids))
    local leases = {}
    for i, id in ipairs(ids) do
      local key = ARGV[1] .. id
      redis.call('HSET', key, 'state', 'active')
      redis.call('HDEL', key, 'pending_since')
      out[i] = redis.call('HGET', key, 'msg') or ''
      leases[2 * i - 1], leases[2 * i] = ARGV[i + 2], id
    end
    redis.call('ZADD', KEYS[4], unpack(leases))
  end
end
if room < want and #out < want and redis.call('LLEN', KEYS[1]) > 0 then
  for i = #out + 1, want do out[i] = 0 end
end
return out
`)

// doneScript acknowledges several tasks of one queue done, each as asynq's
// done script would (a task not found in the active list, then the lease
// set, then its key is left as that script leaves it), and counts those it
// removed in the queue's processed counters at once. It returns 1 for each
// task it removed and 0 for each it did not.
//
// asynq's script removes the task from the active list with LREM count 0,
// which reads the whole list: 40 µs a task with 1,200 active in the queue,
// most of Redis's time while a 10,000-host batch's results came back. A
// task is in the list once, and a dequeue pushes it at the head, so the
// tasks done are mostly near the tail: LREM -1 reads from there and stops
// at the task. Even one acknowledgement alone goes through this script.
//
// KEYS: the queue's active list, lease set, the day's processed counter
// and the processed total. ARGV[1]: the day counter's expiry; then each
// task's ID and key.
var doneScript = redis.NewScript(`
local out, active = {}, {}
for i = 2, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 0 then
    out[i / 2] = 0
  else
    active[#active + 1] = i
  end
end
local n = 0
if #active > 0 then
  local ids = {}
  for j, i in ipairs(active) do ids[j] = ARGV[i] end
  local leased, gone = redis.call('ZMSCORE', KEYS[2], unpack(ids)), {}
  for j, i in ipairs(active) do
    if leased[j] then gone[#gone + 1] = ARGV[i] else out[i / 2] = 0 end
  end
  if #gone > 0 then redis.call('ZREM', KEYS[2], unpack(gone)) end
  for j, i in ipairs(active) do
    if leased[j] then
      if redis.call('DEL', ARGV[i + 1]) == 1 then
        out[i / 2] = 1
        n = n + 1
      else
        out[i / 2] = 0
      end
    end
  end
end
if n > 0 then
  if redis.call('INCRBY', KEYS[3], n) == n then redis.call('EXPIREAT', KEYS[3], ARGV[1]) end
  -- asynq starts the total again at 1 when it would pass the largest int64.
  if tonumber(redis.call('GET', KEYS[4]) or '0') > 9.2e18 - n then
    redis.call('SET', KEYS[4], n)
  else
    redis.call('INCRBY', KEYS[4], n)
  end
end
return out
`)
