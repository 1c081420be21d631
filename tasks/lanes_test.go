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
	} {
		got, err := tasks.ParseLane(l.Batch, l.String())
		if err != nil || got != l {
			t.Errorf("ParseLane(%q) = %+v, %v; want %+v", l.String(), got, err, l)
		}
	}
	for _, v := range []string{"", "normal", "normal 0", "asap 1", "normal 1 5", "normal 1 0 1", "normal 2000", "normal x", "normal 1 5 1 9"} {
		if _, err := tasks.ParseLane("b1", v); err == nil {
			t.Errorf("ParseLane(%q): no error", v)
		}
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
	if q := tasks.LaneQueueOf("B", "127.0.0.1", 8); !tasks.IsLaneQueue(q) || tasks.IsLaneQueue(tasks.Queue("127.0.0.1", 8)) {
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
