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
