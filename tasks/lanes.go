package tasks

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Fair sharing. Every batch has queues of its own, its lane: LaneShards
// asynq queues named by LaneQueue, which its enqueuer registers under
// LanesKey before the first task. Workers read the lanes there and, for
// each task they fetch, choose the lane it comes from (weighted by the
// batches' priorities, a strict level first), so a small batch's tasks are
// fetched next to a sweep's instead of behind them. The static shard
// queues (Queue) stay served for tasks of older enqueuers.

// LanesKey is the Redis hash of the open lanes: batch ID → Lane.String.
const LanesKey = "pingfleet:lanes"

// Priority is a batch's claim on the fleet against other batches.
type Priority string

// Priorities. Among batches of the weighted levels, each gets a share of
// the tasks fetched in proportion to its level's weight (Weight): two
// normal batches get half each, a high one three times a normal one's.
// Urgent batches come first, before any other (strict priority): for the
// few hosts a deploy or an alert waits for, not for sweeps, which would
// stop every other batch.
const (
	PriorityLow    Priority = "low"
	PriorityNormal Priority = "normal"
	PriorityHigh   Priority = "high"
	PriorityUrgent Priority = "urgent"
)

// Priorities lists the levels, lowest first.
var Priorities = []Priority{PriorityLow, PriorityNormal, PriorityHigh, PriorityUrgent}

// ParsePriority reads a level's name; "" is PriorityNormal.
func ParsePriority(s string) (Priority, error) {
	if s == "" {
		return PriorityNormal, nil
	}
	for _, p := range Priorities {
		if s == string(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("priority %q: want low, normal, high or urgent", s)
}

// Weight is the level's share of the fleet against the weighted levels
// (1, 3, 9); 0 for PriorityUrgent, which is served first.
func (p Priority) Weight() int {
	switch p {
	case PriorityLow:
		return 1
	case PriorityHigh:
		return 9
	case PriorityUrgent:
		return 0
	default:
		return 3
	}
}

// Strict reports whether p is served before every weighted level.
func (p Priority) Strict() bool { return p == PriorityUrgent }

// laneHosts is how many hosts a lane's queue takes before the lane gets
// another: a queue's active list is scanned on each acknowledgement, so it
// is kept short, as the static shards keep theirs.
const laneHosts = 1000

// LaneShards returns the number of queues of the lane of a batch of hosts
// hosts, in a fleet of shards shards: one per 1,000 hosts, at most shards.
func LaneShards(hosts, shards int) int {
	return min(max(shards, 1), max((hosts+laneHosts-1)/laneHosts, 1))
}

// LaneQueue returns the name of queue shard of batch's lane.
func LaneQueue(batch string, shard int) string {
	return QueuePrefix + "b-" + batch + "-" + strconv.Itoa(shard)
}

// IsLaneQueue reports whether queue is one of a lane's.
func IsLaneQueue(queue string) bool { return strings.HasPrefix(queue, QueuePrefix+"b-") }

// LaneQueueOf returns the queue of batch's lane, of shards queues, that
// host's task goes to: a hash of the host, as Queue, so a re-run enqueue
// finds the task it added before.
func LaneQueueOf(batch, host string, shards int) string {
	if shards <= 1 {
		return LaneQueue(batch, 0)
	}
	h := fnv.New32a()
	h.Write([]byte(host))
	return LaneQueue(batch, int(h.Sum32()%uint32(shards)))
}

// Lane is a batch's entry under LanesKey.
type Lane struct {
	Batch    string
	Priority Priority
	Shards   int
	// Rate is the batch's own limit in pings per second
	// (PingOptions.BatchRate), 0 for none, and Cost the pings of one of its
	// tasks: workers fetch a task of a limited lane only once its pings
	// are granted, so a throttled batch holds no worker slot.
	Rate, Cost int
}

// Queues returns the names of the lane's queues.
func (l Lane) Queues() []string {
	q := make([]string, max(l.Shards, 1))
	for i := range q {
		q[i] = LaneQueue(l.Batch, i)
	}
	return q
}

// String is the lane's value under LanesKey: "<priority> <shards>", and
// " <rate> <cost>" for a limited batch.
func (l Lane) String() string {
	s := string(l.Priority) + " " + strconv.Itoa(l.Shards)
	if l.Rate > 0 {
		s += " " + strconv.Itoa(l.Rate) + " " + strconv.Itoa(max(l.Cost, 1))
	}
	return s
}

// ParseLane reads batch's entry under LanesKey.
func ParseLane(batch, v string) (Lane, error) {
	f := strings.Split(v, " ")
	bad := fmt.Errorf("lane of batch %s: %q is not \"<priority> <shards> [<rate> <cost>]\"", batch, v)
	if len(f) != 2 && len(f) != 4 {
		return Lane{}, bad
	}
	p, err := ParsePriority(f[0])
	if err != nil {
		return Lane{}, bad
	}
	l := Lane{Batch: batch, Priority: p}
	nums := []*int{&l.Shards, &l.Rate, &l.Cost}
	for i, x := range f[1:] {
		n, err := strconv.Atoi(x)
		if err != nil || n < 1 {
			return Lane{}, bad
		}
		*nums[i] = n
	}
	if l.Shards > MaxShards {
		return Lane{}, bad
	}
	return l, nil
}

// ReadLanes returns the lanes registered on rdb. An entry it cannot read
// (written by a later version) is skipped and reported in bad.
func ReadLanes(ctx context.Context, rdb redis.Cmdable) (lanes []Lane, bad []error, err error) {
	m, err := rdb.HGetAll(ctx, LanesKey).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("read the lanes: %w", err)
	}
	lanes = make([]Lane, 0, len(m))
	for b, v := range m {
		l, err := ParseLane(b, v)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		lanes = append(lanes, l)
	}
	return lanes, bad, nil
}

// PingQueues returns the names of every ping queue on rdb: the static
// shards' of a fleet of shards, then those of the lanes registered.
func PingQueues(ctx context.Context, rdb redis.Cmdable, shards int) ([]string, error) {
	lanes, _, err := ReadLanes(ctx, rdb)
	if err != nil {
		return nil, err
	}
	q := make([]string, 0, max(shards, 1)+len(lanes))
	for i := range max(shards, 1) {
		q = append(q, QueuePrefix+strconv.Itoa(i))
	}
	for _, l := range lanes {
		q = append(q, l.Queues()...)
	}
	return q, nil
}
