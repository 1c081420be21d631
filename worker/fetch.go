package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
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
type fetchClient struct {
	redis.UniversalClient // everything but script calls goes straight through
	pipe                  *asynqPipe
	window                time.Duration

	mu    sync.Mutex
	empty map[string]time.Time // queue's pending key → when to ask Redis again
	wakes uint64               // wake calls so far
}

func newFetchClient(c redis.UniversalClient, window time.Duration) *fetchClient {
	return &fetchClient{UniversalClient: c, pipe: newAsynqPipe(c), window: window, empty: make(map[string]time.Time)}
}

// StartPipe starts the pipelining. (Close is the client's own.)
func (c *fetchClient) StartPipe() { c.pipe.Start() }

// StopPipe ends the pipelining; later calls go straight to the client.
func (c *fetchClient) StopPipe() { c.pipe.Close() }

// wake forgets which queues were empty: tasks have been enqueued.
func (c *fetchClient) wake() {
	c.mu.Lock()
	clear(c.empty)
	c.wakes++
	c.mu.Unlock()
}

// EvalSha runs a script call through the pipeline, answering dequeues of
// queues known to be empty without asking Redis.
func (c *fetchClient) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	if !isDequeue(keys, args) {
		return c.pipe.EvalSha(ctx, sha1, keys, args...)
	}
	queue := keys[0]
	now := time.Now()
	c.mu.Lock()
	until, known := c.empty[queue]
	if known {
		if now.Before(until) {
			c.mu.Unlock()
			cmd := redis.NewCmd(ctx)
			cmd.SetErr(redis.Nil)
			return cmd
		}
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
	}
	return cmd
}
