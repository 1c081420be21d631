package notify

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
)

// A batch's lane stays while the batch is open, and a little after it
// ended while a task of it still runs; then the janitor's sweep deletes
// every key of it: the queues, asynq's counters, its entries in asynq's
// set of queues and in the lanes.
func TestLaneLifecycle(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	res, err := enq.Submit(ctx, enqueuer.Batch{Hosts: hosts, Priority: tasks.PriorityHigh})
	if err != nil {
		t.Fatal(err)
	}
	q := tasks.LaneQueue(res.ID, 0)
	base := tasks.AsynqKeys(q)
	if v := rdb.HGet(ctx, tasks.LanesKey, res.ID).Val(); v != "high 1" {
		t.Fatalf("lane entry %q; want \"high 1\"", v)
	}
	if n := rdb.LLen(ctx, base+":pending").Val(); n != 3 {
		t.Fatalf("%d tasks in the lane; want 3", n)
	}
	c := cleaner{agg: agg, client: rdb, shards: tasks.DefaultShards, logger: slog.New(slog.DiscardHandler)}
	sweep := func(at time.Time) int {
		t.Helper()
		n, err := c.sweepLanes(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if sweep(time.Now().Add(time.Hour)) != 0 {
		t.Fatal("the lane of an open batch was deleted")
	}
	// A worker takes one task, as asynq's dequeue does, and counts one
	// done; every host gets its result.
	id := rdb.LMove(ctx, base+":pending", base+":active", "RIGHT", "LEFT").Val()
	rdb.Set(ctx, base+":processed", 1, 0)
	rdb.Set(ctx, base+":processed:"+time.Now().UTC().Format(time.DateOnly), 1, 0)
	for _, h := range hosts {
		if _, err := agg.Record(ctx, res.ID, aggregator.Result{Host: h, Status: aggregator.StatusUp, Sent: 1, Received: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if sweep(time.Now()) != 0 {
		t.Error("the lane was deleted as its batch ended, before its last acknowledgements")
	}
	later := time.Now().Add(laneGrace + time.Second)
	if sweep(later) != 0 {
		t.Error("the lane was deleted while a task of it runs")
	}
	rdb.LRem(ctx, base+":active", 0, id) // acknowledged, as asynq's done script does
	rdb.Del(ctx, base+":t:"+id)
	if sweep(later) != 1 {
		t.Fatal("the lane of an ended batch, none of its tasks running, is still there")
	}
	if keys := rdb.Keys(ctx, "asynq:{"+tasks.QueuePrefix+"b-*").Val(); len(keys) > 0 {
		t.Errorf("keys left of the lane: %v", keys)
	}
	if rdb.HExists(ctx, tasks.LanesKey, res.ID).Val() || rdb.SIsMember(ctx, asynqAllQueues, q).Val() {
		t.Error("the lane is still listed")
	}
}
