package worker

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// NewFetchClient lets benchmarks run bare asynq servers on the client a
// Worker gives its own.
func NewFetchClient(c redis.UniversalClient, window time.Duration) interface {
	redis.UniversalClient
	StopPipe()
} {
	fc := newFetchClient(c, window)
	fc.StartPipe()
	return fc
}

// Wakes is the number of wake-up messages w's fetch client has heard.
func (w *Worker) Wakes() uint64 {
	w.fetch.mu.Lock()
	defer w.fetch.mu.Unlock()
	return w.fetch.wakes
}

// EmptyQueues is the number of queues w remembers as empty.
func (w *Worker) EmptyQueues() int {
	w.fetch.mu.Lock()
	defer w.fetch.mu.Unlock()
	return len(w.fetch.empty)
}
