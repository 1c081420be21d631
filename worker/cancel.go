package worker

import (
	"context"
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
	sub  *redis.PubSub
	done chan struct{}
	mu   sync.Mutex
	ids  map[string]time.Time
}

// WatchCancels subscribes to cancel announcements until Close.
func WatchCancels(ctx context.Context, rdb redis.UniversalClient) *CancelWatch {
	c := &CancelWatch{sub: rdb.Subscribe(ctx, aggregator.CancelChannel), done: make(chan struct{}), ids: map[string]time.Time{}}
	go c.loop()
	return c
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
	_ = c.sub.Close()
	<-c.done
}
