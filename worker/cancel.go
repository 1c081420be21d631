package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
)

// cancelMemory is how long a worker remembers a cancelled batch: longer
// than any of its tasks can still be queued after the cancel.
const cancelMemory = time.Hour

// CancelWatch listens for cancelled batches (aggregator.CancelChannel) so
// that the worker drops their tasks without pinging.
type CancelWatch struct {
	rdb  redis.UniversalClient
	sub  *redis.PubSub
	done chan struct{}
	mu   sync.Mutex
	ids  map[string]time.Time
}

// NewCancelWatch returns a CancelWatch on rdb; Start starts it.
func NewCancelWatch(rdb redis.UniversalClient) (*CancelWatch, error) {
	if rdb == nil {
		return nil, errors.New("worker: NewCancelWatch needs a Redis client")
	}
	return &CancelWatch{rdb: rdb, done: make(chan struct{}), ids: map[string]time.Time{}}, nil
}

// Start subscribes to cancel announcements until Close. The subscription
// outlives ctx's cancellation (it takes only its values), so that a
// worker shutting down still skips the tasks of cancelled batches.
func (c *CancelWatch) Start(ctx context.Context) {
	c.sub = c.rdb.Subscribe(context.WithoutCancel(ctx), aggregator.CancelChannel)
	go c.loop()
}

func (c *CancelWatch) loop() {
	defer close(c.done)
	for msg := range c.sub.Channel() {
		now := time.Now()
		c.mu.Lock()
		for id, at := range c.ids {
			if now.Sub(at) > cancelMemory {
				delete(c.ids, id)
			}
		}
		c.ids[msg.Payload] = now
		c.mu.Unlock()
	}
}

// Cancelled reports whether batch id was cancelled.
func (c *CancelWatch) Cancelled(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ids[id]
	return ok
}

// Close ends the subscription.
func (c *CancelWatch) Close() {
	if c.sub == nil {
		return // never started
	}
	_ = c.sub.Close()
	<-c.done
}
