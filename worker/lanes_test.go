package worker

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/ratelimit"
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
		q, _, _, ok := s.pick(now)
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
		q, _, _, _ := s.pick(time.Now())
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
	s.answered(staticLane, foundEmpty, 0, now) // no old tasks
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
	q, _, gen, _ := s.pick(now)
	s.answered(q, foundEmpty, gen, now)
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
	s.answered(staticLane, foundEmpty, 0, now)
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
		got, _, gen, ok := s.pick(now)
		if got == staticLane { // no old tasks either
			s.answered(staticLane, foundEmpty, gen, now)
			s.lanes[staticLane].until[0] = now.Add(time.Hour)
			got, _, gen, ok = s.pick(now)
		}
		if !ok || got != q {
			t.Fatalf("pick at %v: %q, %v; want %s", now, got, ok, q)
		}
		s.answered(q, foundEmpty, gen, now)
		if _, _, _, ok := s.pick(now); ok {
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
	_, _, gen, _ := s.pick(now)
	s.wake("b")
	s.answered(q, foundEmpty, gen, now) // older than the wake-up: no wait
	if _, _, _, ok := s.pick(now); !ok {
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
		s.answered(q, foundEmpty, 0, now)
	}
	s.wake("new")
	_, count := served(s, 4, now)
	if count["old"] != 0 || count["new"] == 0 || count[""] == 0 {
		t.Errorf("after a wake-up for batch new: %v; want new and the static queues, not old", count)
	}
}

// Tenants share the fleet equally whatever their batches' number and
// priorities; priorities weigh the batches of one tenant. Batches of no
// tenant are one tenant more.
func TestLanesTenants(t *testing.T) {
	s := newLaneScheduler(50 * time.Millisecond)
	now := time.Now()
	s.set([]tasks.Lane{
		{Batch: "a1", Priority: tasks.PriorityHigh, Shards: 1, Tenant: "a"},
		{Batch: "a2", Priority: tasks.PriorityNormal, Shards: 1, Tenant: "a"},
		{Batch: "a3", Priority: tasks.PriorityLow, Shards: 1, Tenant: "a"},
		{Batch: "b1", Priority: tasks.PriorityLow, Shards: 1, Tenant: "b"},
		{Batch: "c1", Priority: tasks.PriorityNormal, Shards: 1},
	})
	s.answered(staticLane, foundEmpty, 0, now)
	s.lanes[staticLane].until[0] = now.Add(time.Hour)
	_, count := served(s, 3900, now)
	a := count["a1"] + count["a2"] + count["a3"]
	if a != 1300 || count["b1"] != 1300 || count["c1"] != 1300 {
		t.Errorf("3,900 picks: %v; want 1,300 for each tenant", count)
	}
	if count["a1"] != 900 || count["a2"] != 300 || count["a3"] != 100 {
		t.Errorf("tenant a's 1,300: %v; want 900 high, 300 normal, 100 low", count)
	}
	// An urgent batch comes first, whoever's it is.
	s.set(append(slices.Collect(maps.Values(lanesOf(s))), tasks.Lane{Batch: "alert", Priority: tasks.PriorityUrgent, Shards: 1, Tenant: "b"}))
	if order, _ := served(s, 5, now); slices.ContainsFunc(order, func(b string) bool { return b != "alert" }) {
		t.Errorf("with an urgent batch: %v; want it served first", order)
	}
}

// lanesOf returns the lanes s knows, the static queues aside.
func lanesOf(s *laneScheduler) map[string]tasks.Lane {
	m := make(map[string]tasks.Lane)
	for b, l := range s.lanes {
		if b != staticLane {
			m[b] = l.lane
		}
	}
	return m
}

// A lane with an in-flight cap gives each pick its queue's share of the
// cap; a queue found full is asked again after fullRetry, not after the
// empty backoff, and meanwhile the other lanes are served.
func TestLanesInFlightCap(t *testing.T) {
	s := newLaneScheduler(50 * time.Millisecond)
	now := time.Now()
	s.set([]tasks.Lane{{Batch: "capped", Priority: tasks.PriorityNormal, Shards: 2, InFlight: 3}, {Batch: "free", Priority: tasks.PriorityNormal, Shards: 1}})
	s.answered(staticLane, foundEmpty, 0, now)
	caps := map[string]int{}
	for range 4 {
		q, c, gen, _ := s.pick(now)
		caps[q] = c
		s.answered(q, foundTask, gen, now)
	}
	if caps[tasks.LaneQueue("capped", 0)] != 2 || caps[tasks.LaneQueue("capped", 1)] != 1 || caps[tasks.LaneQueue("free", 0)] != 0 {
		t.Errorf("caps given with the picks: %v; want 2 and 1 for the capped lane's queues, 0 for the other", caps)
	}
	for _, q := range []string{tasks.LaneQueue("capped", 0), tasks.LaneQueue("capped", 1)} {
		s.answered(q, foundFull, s.gen, now)
	}
	if _, count := served(s, 10, now); count["capped"] != 0 || count["free"] != 10 {
		t.Errorf("while the capped lane is full: %v; want the other lane only", count)
	}
	if _, count := served(s, 10, now.Add(fullRetry)); count["capped"] < 5 || count["capped"] > 6 {
		t.Errorf("%v after it was found full: %v; want the capped lane served again, every other pick", fullRetry, count)
	}
}

// Gated by a fleet rate, a lane is picked only with the pings of one of
// its tasks granted, which a pick spends and an empty answer gives back;
// a batch rate and a tenant rate add buckets of their own.
func TestLanesFleetGate(t *testing.T) {
	s := newLaneScheduler(50 * time.Millisecond)
	s.gate(1000)
	now := time.Now()
	s.set([]tasks.Lane{{Batch: "b", Priority: tasks.PriorityNormal, Shards: 1, Cost: 3, Rate: 200, Tenant: "t", TenantRate: 500}})
	s.answered(staticLane, foundEmpty, 0, now)
	s.lanes[staticLane].until[0] = now.Add(time.Hour)
	if _, _, _, ok := s.pick(now); ok {
		t.Fatal("picked without pings granted")
	}
	w := s.wants(now)
	if len(w) != 3 {
		t.Fatalf("wants %+v; want the batch's, the tenant's and the fleet's buckets", w)
	}
	fleet := ratelimit.Bucket{Kind: ratelimit.FleetBucket, Rate: 1000}
	for _, x := range w {
		want := map[ratelimit.BucketKind]int{ratelimit.FleetBucket: 12, ratelimit.BatchBucket: 12, ratelimit.TenantBucket: 12}[x.b.Kind]
		if x.want != want {
			t.Errorf("%+v asks for %d pings; want %d (at most 4 tasks' worth)", x.b, x.want, want)
		}
		n := 6
		if x.b == fleet {
			n = 3 // one task's
		}
		s.granted(x.b, n, 0, now)
	}
	q, _, gen, ok := s.pick(now)
	if !ok {
		t.Fatal("not picked with its pings granted")
	}
	if _, _, _, ok := s.pick(now); ok {
		t.Fatal("picked twice with one task's pings of the fleet")
	}
	s.answered(q, foundEmpty, gen, now)
	s.wake("b")
	if _, _, _, ok := s.pick(now); !ok {
		t.Fatal("the pings of a task not found were not given back")
	}
	s.granted(fleet, 0, 30*time.Millisecond, now)
	for _, x := range s.wants(now) {
		if x.b == fleet {
			t.Error("the fleet's bucket asks again before its retry")
		}
	}
}

// A lane the scheduler did not have is reported as added (the worker then
// releases the dequeues that wait while it is idle); the same lanes read
// again, or fewer, are not.
func TestLanesSetReportsAdded(t *testing.T) {
	s := newLaneScheduler(time.Second)
	a := tasks.Lane{Batch: "a", Priority: tasks.PriorityNormal, Shards: 1}
	b := tasks.Lane{Batch: "b", Priority: tasks.PriorityNormal, Shards: 2}
	for i, step := range []struct {
		lanes []tasks.Lane
		added bool
	}{
		{[]tasks.Lane{a}, true}, {[]tasks.Lane{a}, false}, {[]tasks.Lane{a, b}, true}, {[]tasks.Lane{b}, false}, {nil, false},
	} {
		if got := s.set(step.lanes); got != step.added {
			t.Errorf("step %d: set reported added %v; want %v", i, got, step.added)
		}
	}
}
