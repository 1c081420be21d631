package tasks_test

import (
	"testing"

	"github.com/pingfleet/pingfleet/tasks"
)

// A lane's entry reads back as written, with or without a rate; entries
// that are not lanes are refused, naming the batch.
func TestLaneEntries(t *testing.T) {
	for _, l := range []tasks.Lane{
		{Batch: "a", Priority: tasks.PriorityNormal, Shards: 1},
		{Batch: "b", Priority: tasks.PriorityUrgent, Shards: 8, Rate: 500, Cost: 3},
		{Batch: "c", Priority: tasks.PriorityLow, Shards: 2, InFlight: 50, Tenant: "ops-team.eu", TenantRate: 1000},
		{Batch: "d", Priority: tasks.PriorityNormal, Shards: 3, Salts: []int{0, 7, 12}},
	} {
		got, err := tasks.ParseLane(l.Batch, l.String())
		if err != nil || !got.Equal(l) {
			t.Errorf("ParseLane(%q) = %+v, %v; want %+v", l.String(), got, err, l)
		}
	}
	for _, v := range []string{"", "normal", "normal 0", "asap 1", "normal 1 5", "normal 1 0 1", "normal 2000", "normal x", "normal 1 5 1 9",
		"normal 1 rate=0", "normal 1 inflight=x", "normal 1 tenant=a b", "normal 1 tenant=", "normal 1 colour=red", "normal 1 rate",
		"normal 2 salts=1", "normal 2 salts=1.x", "normal 2 salts=1.-2", "normal 2 salts=1.2.3"} {
		if _, err := tasks.ParseLane("b1", v); err == nil {
			t.Errorf("ParseLane(%q): no error", v)
		}
	}
	// Lanes as the first version wrote them still read.
	if l, err := tasks.ParseLane("old", "high 2 500 3"); err != nil || !l.Equal(tasks.Lane{Batch: "old", Priority: tasks.PriorityHigh, Shards: 2, Rate: 500, Cost: 3}) {
		t.Errorf("ParseLane(high 2 500 3) = %+v, %v", l, err)
	}
	if got := tasks.LaneShards(1, 8); got != 1 {
		t.Errorf("LaneShards(1, 8) = %d; want 1", got)
	}
	if got := tasks.LaneShards(2500, 8); got != 3 {
		t.Errorf("LaneShards(2500, 8) = %d; want 3", got)
	}
	if got := tasks.LaneShards(1_000_000, 8); got != 8 {
		t.Errorf("LaneShards(1,000,000, 8) = %d; want 8", got)
	}
	if q := (tasks.Lane{Batch: "B", Shards: 8}).QueueOf("127.0.0.1"); !tasks.IsLaneQueue(q) || tasks.IsLaneQueue(tasks.Queue("127.0.0.1", 8)) {
		t.Errorf("IsLaneQueue: %s is a lane's, %s not", q, tasks.Queue("127.0.0.1", 8))
	}
	for _, p := range []string{"", "low", "normal", "high", "urgent"} {
		if _, err := tasks.ParsePriority(p); err != nil {
			t.Errorf("ParsePriority(%q): %v", p, err)
		}
	}
	if _, err := tasks.ParsePriority("URGENT"); err == nil {
		t.Error("ParsePriority(URGENT): no error")
	}
}

// An in-flight cap is split over the lane's queues, each getting a share
// and the shares adding up to the cap; a lane never has more queues than
// its cap.
func TestLaneShardCaps(t *testing.T) {
	for _, c := range []struct{ hosts, shards, inFlight, wantShards int }{
		{100_000, 8, 0, 8}, {100_000, 8, 3, 3}, {100_000, 8, 1, 1}, {100_000, 8, 50, 8}, {10, 8, 50, 1},
	} {
		n := tasks.LaneShardsCapped(c.hosts, c.shards, c.inFlight)
		if n != c.wantShards {
			t.Errorf("LaneShardsCapped(%d, %d, %d) = %d; want %d", c.hosts, c.shards, c.inFlight, n, c.wantShards)
		}
		l := tasks.Lane{Shards: n, InFlight: c.inFlight}
		sum := 0
		for i := range n {
			sc := l.ShardCap(i)
			if c.inFlight > 0 && sc < 1 {
				t.Errorf("cap %d over %d queues: queue %d gets %d", c.inFlight, n, i, sc)
			}
			sum += sc
		}
		if sum != c.inFlight {
			t.Errorf("cap %d over %d queues: shares add up to %d", c.inFlight, n, sum)
		}
	}
}
