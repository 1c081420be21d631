package worker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/tasks"
)

// fetchClient is the Redis client a worker's asynq servers share.
//
// One asynq server fetches one task per round trip, so a worker runs many
// servers, and their script calls (dequeues, acknowledgements) travel
// together through one asynqPipe: a round trip, and one write and one read
// system call on each side, for dozens of tasks, and one script call per
// queue for their dequeues and another for their acknowledgements.
//
// Many servers would also mean many idle polls: each server that finds the
// queues empty sleeps about TaskCheckInterval and then tries every queue
// again. fetchClient remembers, for the window, that a queue was found
// empty, and answers later dequeues of that queue itself, so an idle
// worker polls each queue about once per window however many servers it
// runs. A task enqueued meanwhile waits at most the window, as it would for
// a single server's sleep, and less when its enqueuer's wake-up message
// (tasks.WakeChannel) arrives: the worker then forgets what it knew, and
// the next server to wake looks at once.
//
// An idle worker (no task running, none found by any of its servers for
// the window) goes further: a dequeue of a queue known empty does not answer at once
// but waits, until a wake-up message or until the queue is due to be
// asked again, and then asks. asynq's servers would otherwise each try
// every queue (the callback queue and the 8 static ones) every 25 to 75 ms
// and have them answered from memory: about 11,000 answers a second for
// 64 servers, which cost an idle worker a fifth of a core. A worker that
// runs a task, or found one within the window, never waits: then a queue
// known empty is answered at once, so that the servers go on to the
// queues with tasks (a worker whose slots all finish together fetches
// their next tasks at once).
type fetchClient struct {
	redis.UniversalClient // everything but script calls goes straight through
	pipe                  *asynqPipe
	window                time.Duration
	lanes                 *laneScheduler // chooses the queue of each dequeue of a ping queue

	mu      sync.Mutex
	empty   map[string]time.Time // queue's pending key → when to ask Redis again
	wakes   uint64               // wake calls so far
	busy    time.Time            // when a task was last found
	changed chan struct{}        // closed (and replaced) on a wake, or when a task is found after an idle spell
	noWait  bool                 // the worker is stopping: nothing waits any more
	running atomic.Int64         // tasks being processed (counting)
}

func newFetchClient(c redis.UniversalClient, window time.Duration) *fetchClient {
	return &fetchClient{UniversalClient: c, pipe: newAsynqPipe(c), window: window, lanes: newLaneScheduler(window), empty: make(map[string]time.Time),
		changed: make(chan struct{})}
}

// StartPipe starts the pipelining. (Close is the client's own.)
func (c *fetchClient) StartPipe() { c.pipe.Start() }

// StopWaiting ends the waits of idle dequeues, for good: the servers are
// about to stop, and each waits for its dequeue (which would otherwise
// wait a window for each of its queues in turn).
func (c *fetchClient) StopWaiting() {
	c.mu.Lock()
	c.noWait = true
	c.signalLocked()
	c.mu.Unlock()
}

// StopPipe ends the pipelining (and the waits, see StopWaiting); later
// calls go straight to the client.
func (c *fetchClient) StopPipe() {
	c.StopWaiting()
	c.pipe.Close()
}

// wake forgets which queues were empty: tasks have been enqueued.
func (c *fetchClient) wake(batch string) {
	c.mu.Lock()
	clear(c.empty)
	c.wakes++
	c.signalLocked()
	c.mu.Unlock()
	c.lanes.wake(batch)
}

// release releases the dequeues waiting for a change: there may be tasks
// (a new batch's lane).
func (c *fetchClient) release() {
	c.mu.Lock()
	c.signalLocked()
	c.mu.Unlock()
}

// signalLocked releases the dequeues waiting for a change. c.mu is held.
func (c *fetchClient) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// counting is asynq middleware that counts the tasks being processed.
func (c *fetchClient) counting(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		c.running.Add(1)
		defer c.running.Add(-1)
		return h.ProcessTask(ctx, t)
	})
}

// found notes that a dequeue found a task at now: the worker is busy, and
// dequeues waiting on an idle worker go on.
func (c *fetchClient) found(now time.Time) {
	c.mu.Lock()
	if now.Sub(c.busy) > c.window {
		c.signalLocked()
	}
	c.busy = now
	c.mu.Unlock()
}

// EvalSha runs a script call through the pipeline. A dequeue of one of the
// static ping queues dequeues from the lane the scheduler picks instead
// (asynq then acknowledges the task on the lane's queue, which its message
// names); dequeues of queues known to be empty are answered without asking
// Redis.
func (c *fetchClient) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	if isListLeaseExpired(keys, args) {
		// asynq's recoverer, one per asynq server: the process's Recoverer
		// does its work, for every queue and sooner (see recover.go), and
		// the 32 of them would only race it. They find nothing.
		cmd := redis.NewCmd(ctx)
		cmd.SetVal([]any{})
		return cmd
	}
	if !isDequeue(keys, args) {
		return c.pipe.EvalSha(ctx, sha1, keys, args...)
	}
	if !isShardQueue(keys[0]) {
		return c.dequeue(ctx, sha1, keys, args)
	}
	// A lane found empty (a batch whose tasks all run, or ran) makes the
	// scheduler pick another at once, a few times: returned to asynq, a
	// run of empty answers makes its server sleep a fetch window.
	var cmd *redis.Cmd
	var waited time.Duration
	for range laneTries {
		q, capacity, gen, ok := c.lanes.pick(time.Now())
		for !ok && waited < maxTokenWait {
			// Every lane with tasks waits for its pings: wait for them
			// here (the dequeue holds no task), a little.
			starved, changed := c.lanes.starved(time.Now())
			if !starved {
				break
			}
			t0 := time.Now()
			select {
			case <-changed:
			case <-time.After(maxTokenWait - waited):
			case <-ctx.Done():
				return c.dequeue(ctx, sha1, keys, args)
			}
			waited += time.Since(t0)
			q, capacity, gen, ok = c.lanes.pick(time.Now())
		}
		if !ok || q == staticLane {
			cmd := c.dequeue(ctx, sha1, keys, args)
			if ok {
				c.lanes.answered(staticLane, foundOf(cmd), gen, time.Now())
			}
			return cmd
		}
		base := tasks.AsynqKeys(q)
		lkeys := []string{base + ":pending", base + ":paused", base + ":active", base + ":lease"}
		largs := []any{args[0], base + ":t:"}
		if capacity > 0 {
			cmd = c.pipe.dequeueCapped(ctx, lkeys, largs, capacity)
		} else {
			cmd = c.pipe.EvalSha(ctx, sha1, lkeys, largs...)
		}
		f := foundOf(cmd)
		c.lanes.answered(q, f, gen, time.Now())
		if f == foundTask {
			c.found(time.Now())
			break
		}
	}
	if errors.Is(cmd.Err(), errQueueFull) {
		cmd = redis.NewCmd(ctx)
		cmd.SetErr(redis.Nil) // to asynq, nothing to fetch
	}
	return cmd
}

// foundOf tells what a dequeue's answer says of its queue. (An error
// other than these counts as a task: the lane keeps its turn, and asynq
// sees the error.)
func foundOf(cmd *redis.Cmd) found {
	switch err := cmd.Err(); {
	case errors.Is(err, redis.Nil):
		return foundEmpty
	case errors.Is(err, errQueueFull):
		return foundFull
	}
	return foundTask
}

// laneTries is how many lanes one dequeue of a ping queue may ask, and
// maxTokenWait how long it may wait for pings to be granted.
const (
	laneTries    = 4
	maxTokenWait = 100 * time.Millisecond
)

// isListLeaseExpired reports whether a call is asynq v0.26's script that
// lists a queue's tasks whose lease expired before a cutoff (its
// recoverer's): key the queue's lease set; arguments the cutoff in Unix
// seconds and the queue's task key prefix.
func isListLeaseExpired(keys []string, args []any) bool {
	if len(keys) != 1 || len(args) != 2 {
		return false
	}
	q, ok := strings.CutSuffix(keys[0], ":lease")
	_, cutoff := args[0].(int64)
	prefix, _ := args[1].(string)
	return ok && cutoff && strings.HasPrefix(q, "asynq:{") && prefix == q+":t:"
}

// isShardQueue reports whether pending is the pending list of one of the
// static ping queues ("asynq:{pingfleet-<n>}:pending").
func isShardQueue(pending string) bool {
	n, ok := strings.CutPrefix(pending, "asynq:{"+tasks.QueuePrefix)
	if !ok {
		return false
	}
	n, _ = strings.CutSuffix(n, "}:pending")
	return n != "" && strings.Trim(n, "0123456789") == ""
}

// dequeue runs a dequeue of the queue of keys, unless it is known empty.
func (c *fetchClient) dequeue(ctx context.Context, sha1 string, keys []string, args []any) *redis.Cmd {
	queue := keys[0]
	c.mu.Lock()
	now := time.Now()
	until, known := c.empty[queue]
	for known && now.Before(until) {
		if c.noWait || c.running.Load() > 0 || now.Sub(c.busy) <= c.window {
			c.mu.Unlock()
			cmd := redis.NewCmd(ctx)
			cmd.SetErr(redis.Nil)
			return cmd
		}
		// Idle: wait for a change, or until the queue is due.
		changed := c.changed
		c.mu.Unlock()
		t := time.NewTimer(until.Sub(now))
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			cmd := redis.NewCmd(ctx)
			cmd.SetErr(ctx.Err())
			return cmd
		}
		c.mu.Lock()
		now = time.Now()
		until, known = c.empty[queue]
	}
	if known {
		// This call looks again; the other servers wait for its answer.
		c.empty[queue] = now.Add(c.window)
	}
	wakes := c.wakes
	c.mu.Unlock()
	cmd := c.pipe.EvalSha(ctx, sha1, keys, args...)
	switch err := cmd.Err(); {
	case errors.Is(err, redis.Nil): // empty or paused
		c.mu.Lock()
		// An answer older than a wake-up message may miss its tasks.
		if c.wakes == wakes {
			c.empty[queue] = time.Now().Add(c.window)
		}
		c.mu.Unlock()
	case err == nil:
		if known {
			c.mu.Lock()
			delete(c.empty, queue)
			c.mu.Unlock()
		}
		c.found(time.Now())
	}
	return cmd
}
