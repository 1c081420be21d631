package redisconn_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/redisconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(deathsig.Spawner)) }

var incrBy = redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)

// Concurrent script calls through the wrapper each get their own result,
// including the first ones, which find the script not loaded yet.
func TestAutoPipeline(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ap := redisconn.NewAutoPipeline(srv.Client())
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			key := fmt.Sprintf("k%d", i%10)
			if err := incrBy.Run(ctx, ap, []string{key}, 1).Err(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range 10 {
		if n, _ := srv.Client().Get(ctx, fmt.Sprintf("k%d", i)).Int(); n != 20 {
			t.Errorf("k%d = %d; want 20", i, n)
		}
	}
	// Errors stay with their own call.
	if err := ap.EvalSha(ctx, "0000000000000000000000000000000000000000", []string{"x"}).Err(); err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
		t.Errorf("unknown script: %v; want NOSCRIPT", err)
	}
	ap.Stop()
	if err := incrBy.Run(ctx, ap, []string{"k0"}, 1).Err(); err != nil {
		t.Errorf("after Stop, calls go straight through: %v", err)
	}
}
