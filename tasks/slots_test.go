package tasks

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// Slot agrees with Redis's CLUSTER KEYSLOT (values read from a
// cluster-enabled redis-server 7), hash tags included.
func TestSlot(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":                         12739,
		"foo":                               12182,
		"{user1000}.following":              3443,
		"foo{}{bar}":                        8363, // an empty tag: the whole key
		"foo{{bar}}zap":                     4015, // the tag is "{bar"
		"asynq:{pingfleet-b-X-0.3}:pending": 6007,
	} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d; want %d", key, got, want)
		}
	}
}

// threeMasters is the slot map of `redis-cli --cluster create` with three
// masters.
var threeMasters = newSlotMap([]redis.ClusterSlot{
	{Start: 0, End: 5460, Nodes: []redis.ClusterNode{{Addr: "127.0.0.1:7000"}}},
	{Start: 5461, End: 10922, Nodes: []redis.ClusterNode{{Addr: "127.0.0.1:7001"}, {Addr: "127.0.0.1:7004"}}},
	{Start: 10923, End: 16383, Nodes: []redis.ClusterNode{{Addr: "127.0.0.1:7002"}}},
})

// A lane's queues with salts go round the masters in turn; without a
// Cluster they have no salts and keep their names.
func TestSpreadSalts(t *testing.T) {
	for _, shards := range []int{2, 3, 8} {
		salts := SpreadSalts(threeMasters, "01JBATCH", shards)
		l := Lane{Batch: "01JBATCH", Priority: PriorityNormal, Shards: shards, Salts: salts}
		count := map[string]int{}
		for k, q := range l.Queues() {
			m := threeMasters.Master(QueueSlot(q))
			if want := threeMasters.Masters[k%3]; m != want { // Masters are sorted already
				t.Errorf("%d queues: queue %d (%s) on %s; want %s", shards, k, q, m, want)
			}
			count[m]++
		}
		if on, best := threeMasters.Spread(l.Queues()); on != best || best != min(shards, 3) {
			t.Errorf("%d queues on %d masters of a best %d (%v)", shards, on, best, count)
		}
		if back, err := ParseLane(l.Batch, l.String()); err != nil || !back.Equal(l) {
			t.Errorf("ParseLane(%q) = %+v, %v", l.String(), back, err)
		}
	}
	if s := SpreadSalts(nil, "b", 8); s != nil {
		t.Errorf("SpreadSalts without a cluster = %v; want nil", s)
	}
	if q := (Lane{Batch: "b", Shards: 2}).Queues(); q[1] != LaneQueue("b", 1) {
		t.Errorf("queue 1 of a lane without salts: %s; want %s", q[1], LaneQueue("b", 1))
	}
	// The names alone, by chance: 8 queues often miss a master of 6.
	six := make([]redis.ClusterSlot, 6)
	for i := range six {
		six[i] = redis.ClusterSlot{Start: i * NumSlots / 6, End: (i+1)*NumSlots/6 - 1, Nodes: []redis.ClusterNode{{Addr: string(rune('a' + i))}}}
	}
	m6 := newSlotMap(six)
	missed := 0
	for _, b := range []string{"b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10"} {
		if on, _ := m6.Spread(Lane{Batch: b, Shards: 8}.Queues()); on < 6 {
			missed++
		}
		if on, best := m6.Spread(Lane{Batch: b, Shards: 8, Salts: SpreadSalts(m6, b, 8)}.Queues()); on != best {
			t.Errorf("batch %s: 8 queues with salts on %d of 6 masters", b, on)
		}
	}
	t.Logf("without salts, %d of 10 batches' 8 queues missed a master of 6", missed)
}
