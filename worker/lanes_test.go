package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/tasks"
)

// batchOf returns the batch of a lane's queue name, "" for the static
// queues.
func batchOf(q string) string {
	if q == staticLane {
		return ""
	}
	b := strings.TrimPrefix(q, tasks.QueuePrefix+"b-")
	return b[:strings.LastIndexByte(b, '-')]
}

// served picks n times at now and counts the lanes served.
func served(s *laneScheduler, n int, now time.Time) (order []string, count map[string]int) {
	count = make(map[string]int)
	for range n {
		q, _, ok := s.pick(now)
		if !ok {
			break
		}
		b := batchOf(q)
		order = append(order, b)
		count[b]++
	}
	return order, count
}

// Two batches of the same priority are served one after the other, the
// static queues (tasks of older enqueuers) as a third.
func TestLanesInterleave(t *testing.T) {
	s := newLaneScheduler(50 * time.Millisecond)
	s.set([]tasks.Lane{{Batch: "sweep", Priority: tasks.PriorityNormal, Shards: 8}, {Batch: "deploy", Priority: tasks.PriorityNormal, Shards: 1}})
	order, count := served(s, 300, time.Now())
	if count["sweep"] != 100 || count["deploy"] != 100 || count[""] != 100 {
		t.Errorf("300 picks: %v; want 100 each", count)
	}
	for i := 3; i < len(order); i++ {
		if order[i] != order[i-3] {
			t.Fatalf("pick %d: %s after %v; want a round-robin", i, order[i], order[i-3:i])
		}
	}
	// A lane spreads its picks over its queues.
	shards := make(map[string]bool)
	for range 30 {
		q, _, _ := s.pick(time.Now())
		shards[q] = true
	}
	if len(shards) != 8+1+1 {
		t.Errorf("30 picks asked %d queues; want the 8 of the sweep, the deploy's one and the static one", len(shards))
	}
}

// Weights: a high batch gets three times a normal one's tasks, a normal
// one three times a low one's; an urgent one is served before all.
func TestLanesPriorities(t *testing.T) {
	s := newLaneScheduler(50 * time.Millisecond)
	s.set([]tasks.Lane{{Batch: "low", Priority: tasks.PriorityLow, Shards: 1}, {Batch: "normal", Priority: tasks.PriorityNormal, Shards: 1}, {Batch: "high", Priority: tasks.PriorityHigh, Shards: 1}})
	now := time.Now()
	s.answered(staticLane, true, 0, now) // no old tasks
	_, count := served(s, 1300, now)
	if count["high"] != 900 || count["normal"] != 300 || count["low"] != 100 {
		t.Errorf("1,300 picks: %v; want 900 high, 300 normal, 100 low", count)
	}
	s.set([]tasks.Lane{{Batch: "low", Priority: tasks.PriorityLow, Shards: 1}, {Batch: "alert", Priority: tasks.PriorityUrgent, Shards: 1}, {Batch: "high", Priority: tasks.PriorityHigh, Shards: 1}})
	order, _ := served(s, 10, now)
	for i, b := range order {
		if b != "alert" {
			t.Fatalf("pick %d went to %s; want the urgent batch while it has tasks", i, b)
		}
	}
	// Once the urgent lane is empty, the others go on.
	q, gen, _ := s.pick(now)
	s.answered(q, true, gen, now)
	if _, count := served(s, 100, now); count["alert"] != 0 || count["high"] != 90 {
		t.Errorf("after the urgent lane was found empty: %v; want 90 high, 10 low", count)
	}
}

// A batch that comes while another has been served for long starts level
// with it: it gets its share from then on, neither a burst for the time
// before it came nor a wait.
func TestLanesNewcomerStartsLevel(t *testing.T) {
	s := newLaneScheduler(50 * time.Millisecond)
	now := time.Now()
	s.set([]tasks.Lane{{Batch: "sweep", Priority: tasks.PriorityNormal, Shards: 8}})
	s.answered(staticLane, true, 0, now)
	served(s, 10000, now)
	s.set([]tasks.Lane{{Batch: "sweep", Priority: tasks.PriorityNormal, Shards: 8}, {Batch: "deploy", Priority: tasks.PriorityNormal, Shards: 1}})
	order, count := served(s, 20, now)
	if count["deploy"] < 10 || count["deploy"] > 11 || order[0] != "deploy" && order[1] != "deploy" {
		t.Errorf("the 20 picks after a new batch came: %v; want it served within 2 picks, and every other pick", order)
	}
}

// A queue found empty is not asked again before its wait, which doubles
// up to maxLaneBackoff; a task found ends it, and so does a wake-up.
func TestLanesEmptyBackoff(t *testing.T) {
	s := newLaneScheduler(50 * time.Millisecond)
	now := time.Now()
	s.set([]tasks.Lane{{Batch: "b", Priority: tasks.PriorityNormal, Shards: 1}})
	q := tasks.LaneQueue("b", 0)
	var waits []time.Duration
	for range 7 {
		got, gen, ok := s.pick(now)
		if got == staticLane { // no old tasks either
			s.answered(staticLane, true, gen, now)
			s.lanes[staticLane].until[0] = now.Add(time.Hour)
			got, gen, ok = s.pick(now)
		}
		if !ok || got != q {
			t.Fatalf("pick at %v: %q, %v; want %s", now, got, ok, q)
		}
		s.answered(q, true, gen, now)
		if _, _, ok := s.pick(now); ok {
			t.Fatal("an empty lane was picked again at once")
		}
		wait := s.lanes["b"].until[0].Sub(now)
		waits = append(waits, wait)
		now = now.Add(wait)
	}
	want := []time.Duration{50, 100, 200, 400, 800, 1000, 1000}
	for i, w := range waits {
		if w != want[i]*time.Millisecond {
			t.Errorf("waits after empty answers: %v; want %v ms", waits, want)
			break
		}
	}
	_, gen, _ := s.pick(now)
	s.wake("b")
	s.answered(q, true, gen, now) // older than the wake-up: no wait
	if _, _, ok := s.pick(now); !ok {
		t.Error("after a wake-up, the lane waits")
	}
}

// A wake-up naming a batch ends the waits of its lane (and the static
// queues') only: the drained lanes of other batches stay unasked.
func TestLanesWakeNamesBatch(t *testing.T) {
	s := newLaneScheduler(50 * time.Millisecond)
	now := time.Now()
	s.set([]tasks.Lane{{Batch: "old", Priority: tasks.PriorityNormal, Shards: 1}, {Batch: "new", Priority: tasks.PriorityNormal, Shards: 1}})
	for _, q := range []string{staticLane, tasks.LaneQueue("old", 0), tasks.LaneQueue("new", 0)} {
		s.answered(q, true, 0, now)
	}
	s.wake("new")
	_, count := served(s, 4, now)
	if count["old"] != 0 || count["new"] == 0 || count[""] == 0 {
		t.Errorf("after a wake-up for batch new: %v; want new and the static queues, not old", count)
	}
}
