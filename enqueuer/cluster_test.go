package enqueuer_test

import (
	"context"
	"testing"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
)

// On a Redis Cluster of three masters, a batch that would have eight
// queues gets six, two on each master, every master holds a third of its
// tasks, and the batch submitted again finds its tasks in the same queues.
func TestClusterSpreadsQueues(t *testing.T) {
	t.Parallel()
	rdb := redistest.StartClusterClient(t, 3)
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b := enqueuer.Batch{Hosts: hostList(8000), Options: tasks.PingOptions{Count: 1}}
	res, err := enq.Submit(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	v, err := rdb.HGet(ctx, tasks.LanesKey, res.ID).Result()
	if err != nil {
		t.Fatal(err)
	}
	lane, err := tasks.ParseLane(res.ID, v)
	if err != nil {
		t.Fatal(err)
	}
	slots, err := tasks.ReadSlotMap(ctx, rdb)
	if err != nil || slots == nil || len(slots.Masters) != 3 {
		t.Fatalf("slot map %+v, %v; want 3 masters", slots, err)
	}
	if on, best := slots.Spread(lane.Queues()); lane.Shards != 6 || on != 3 || best != 3 {
		t.Fatalf("lane %q: %d queues on %d masters; want 6 on 3", v, lane.Shards, on)
	}
	queues := map[string]int{}
	for _, q := range lane.Queues() {
		queues[slots.Master(tasks.QueueSlot(q))]++
	}
	for m, n := range queues {
		if n != 2 {
			t.Errorf("master %s has %d of the lane's queues; want 2 (%v)", m, n, queues)
		}
	}
	perMaster := map[string]int64{}
	var total int64
	for _, q := range lane.Queues() {
		n, err := rdb.LLen(ctx, tasks.AsynqKeys(q)+":pending").Result()
		if err != nil {
			t.Fatal(err)
		}
		perMaster[slots.Master(tasks.QueueSlot(q))] += n
		total += n
	}
	if total != 8000 || len(perMaster) != 3 {
		t.Errorf("tasks queued per master: %v (%d in all); want 8000 over 3", perMaster, total)
	}
	for m, n := range perMaster {
		if n < 2400 || n > 2933 {
			t.Errorf("master %s holds %d of 8,000 tasks; want a third, within 10 %%", m, n)
		}
	}

	b.ID = res.ID
	again, err := enq.Submit(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if again.Enqueued != 0 || again.Existing != 8000 {
		t.Errorf("re-Submit = %+v; want 0 enqueued, 8000 existing", again)
	}
	if v2, _ := rdb.HGet(ctx, tasks.LanesKey, res.ID).Result(); v2 != v {
		t.Errorf("lane after re-Submit %q; want %q", v2, v)
	}
}
