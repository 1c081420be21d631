package tasks

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
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

// LaneShardOf returns which of a lane's shards queues host's task goes to:
// a hash of the host, as Queue's, so a re-run enqueue finds the task it
// added before.
func LaneShardOf(host string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(host))
	return int(h.Sum32() % uint32(shards))
}

// Lane is a batch's entry under LanesKey.
type Lane struct {
	Batch    string
	Priority Priority
	Shards   int
	// Rate is the batch's own limit in pings per second
	// (PingOptions.BatchRate), 0 for none, and Cost the pings of one of its
	// tasks (0 reads as 1): workers fetch a task of a limited lane only
	// once its pings are granted, so a throttled batch holds no worker
	// slot.
	Rate, Cost int
	// InFlight is the most of the batch's tasks that run at once across
	// the fleet, 0 for no cap of its own: workers fetch no more of its
	// tasks while that many are active (ShardCap splits it over the
	// lane's queues).
	InFlight int
	// Tenant is who submitted the batch through the API (ValidTenant), ""
	// for nobody in particular: the weighted levels share the fleet
	// between tenants first, then between each tenant's batches.
	// TenantRate is the tenant's limit in pings per second, 0 for none,
	// granted as Rate is.
	Tenant     string
	TenantRate int
	// Salts, one per queue or none, make the queues' names fall on
	// different masters of a Redis Cluster (SpreadSalts); nil for the
	// names without salts.
	Salts []int
}

// Equal reports whether l and o are the same lane with the same queues:
// what String writes of them is.
func (l Lane) Equal(o Lane) bool { return l.Batch == o.Batch && l.String() == o.String() }

// Queues returns the names of the lane's queues.
func (l Lane) Queues() []string {
	q := make([]string, max(l.Shards, 1))
	for i := range q {
		salt := 0
		if i < len(l.Salts) {
			salt = l.Salts[i]
		}
		q[i] = laneQueueName(l.Batch, i, salt)
	}
	return q
}

// QueueOf returns the lane's queue that host's task goes to (LaneShardOf).
func (l Lane) QueueOf(host string) string {
	q := l.Queues()
	return q[LaneShardOf(host, len(q))]
}

// LaneShardsCapped is LaneShards for a batch whose in-flight cap is
// inFlight (0: none): no more queues than the cap, so that each gets a
// share of it.
func LaneShardsCapped(hosts, shards, inFlight int) int {
	n := LaneShards(hosts, shards)
	if inFlight > 0 {
		n = min(n, inFlight)
	}
	return n
}

// ShardCap returns how many tasks of queue shard of the lane may be
// active at once, its share of InFlight; 0 when the lane has no cap.
func (l Lane) ShardCap(shard int) int {
	if l.InFlight <= 0 {
		return 0
	}
	n := max(l.Shards, 1)
	c := l.InFlight / n
	if shard < l.InFlight%n {
		c++
	}
	return max(c, 1)
}

// String is the lane's value under LanesKey: "<priority> <shards>", then
// "<name>=<value>" for each of rate, cost, inflight, tenant, trate and
// salts (dot-separated) that is set.
func (l Lane) String() string {
	var b strings.Builder
	b.WriteString(string(l.Priority) + " " + strconv.Itoa(l.Shards))
	num := func(name string, v int) {
		if v > 0 {
			b.WriteString(" " + name + "=" + strconv.Itoa(v))
		}
	}
	num("rate", l.Rate)
	if l.Cost > 1 {
		num("cost", l.Cost)
	}
	num("inflight", l.InFlight)
	if l.Tenant != "" {
		b.WriteString(" tenant=" + l.Tenant)
	}
	num("trate", l.TenantRate)
	if slices.ContainsFunc(l.Salts, func(s int) bool { return s != 0 }) {
		salts := make([]string, len(l.Salts))
		for i, s := range l.Salts {
			salts[i] = strconv.Itoa(s)
		}
		b.WriteString(" salts=" + strings.Join(salts, "."))
	}
	return b.String()
}

// ParseLane reads batch's entry under LanesKey, as String writes it or as
// the first lanes were ("<priority> <shards> <rate> <cost>").
func ParseLane(batch, v string) (Lane, error) {
	f := strings.Split(v, " ")
	bad := fmt.Errorf("lane of batch %s: %q is not \"<priority> <shards> [<name>=<value>...]\"", batch, v)
	if len(f) < 2 {
		return Lane{}, bad
	}
	p, err := ParsePriority(f[0])
	if err != nil {
		return Lane{}, bad
	}
	l := Lane{Batch: batch, Priority: p}
	positive := func(s string, n *int) bool {
		v, err := strconv.Atoi(s)
		*n = v
		return err == nil && v >= 1
	}
	if !positive(f[1], &l.Shards) || l.Shards > MaxShards {
		return Lane{}, bad
	}
	rest := f[2:]
	if len(rest) == 2 && !strings.Contains(rest[0], "=") {
		if !positive(rest[0], &l.Rate) || !positive(rest[1], &l.Cost) {
			return Lane{}, bad
		}
		return l, nil
	}
	for _, kv := range rest {
		k, v, _ := strings.Cut(kv, "=")
		var n *int
		switch k {
		case "rate":
			n = &l.Rate
		case "cost":
			n = &l.Cost
		case "inflight":
			n = &l.InFlight
		case "trate":
			n = &l.TenantRate
		case "tenant":
			if !ValidTenant(v) {
				return Lane{}, bad
			}
			l.Tenant = v
			continue
		case "salts":
			if l.Salts, err = parseSalts(v, l.Shards); err != nil {
				return Lane{}, bad
			}
			continue
		default:
			return Lane{}, bad
		}
		if !positive(v, n) {
			return Lane{}, bad
		}
	}
	return l, nil
}

// parseSalts reads the salts of a lane of shards queues: one number, 0 or
// more, per queue.
func parseSalts(v string, shards int) ([]int, error) {
	f := strings.Split(v, ".")
	if len(f) != shards {
		return nil, fmt.Errorf("%d salts for %d queues", len(f), shards)
	}
	salts := make([]int, len(f))
	for i, s := range f {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("salt %q", s)
		}
		salts[i] = n
	}
	return salts, nil
}

// ValidTenant reports whether name may name a tenant: 1 to 64 letters,
// digits, '.', '_' or '-'.
func ValidTenant(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
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
