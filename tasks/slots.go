package tasks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Queues over the nodes of a Redis Cluster. asynq keeps all of a queue's
// keys under one hash tag, the queue's name ("asynq:{<queue>}:..."), so
// one queue lives on one node. A batch's lane has up to a fleet's shards
// queues; named only by batch and shard, they fall on nodes by chance (8
// of them cover 4 of 6 masters as often as not). An enqueuer on a Cluster
// therefore gives each of a lane's queues a salt, a number appended to its
// name, chosen so that the lane's queues go round the masters in turn
// (SpreadSalts), and records the salts in the lane, where every worker
// reads its queues' names.

// NumSlots is the number of hash slots of a Redis Cluster.
const NumSlots = 16384

// Slot returns the Cluster hash slot of key: CRC16 (XMODEM) of its hash
// tag, the part between the first '{' and the next '}' if that is not
// empty, or of the whole key, modulo NumSlots.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % NumSlots
}

// QueueSlot returns the hash slot of asynq's keys for queue.
func QueueSlot(queue string) int { return Slot(AsynqKeys(queue)) }

// SlotMap says which master serves each hash slot of a Cluster: the
// masters' addresses, and for each slot an index into them (-1 for a slot
// no master serves).
type SlotMap struct {
	Masters []string
	owner   []int16
}

// Len is the number of masters, 0 for no map.
func (m *SlotMap) Len() int {
	if m == nil {
		return 0
	}
	return len(m.Masters)
}

// Master returns the address of the master that serves slot, "" if none.
func (m *SlotMap) Master(slot int) string {
	if i := m.owner[slot]; i >= 0 {
		return m.Masters[i]
	}
	return ""
}

// ReadSlotMap returns the slot map of the Cluster rdb is a client of, nil
// when rdb is not a Cluster client (one Redis, or Sentinel: nothing to
// spread over).
func ReadSlotMap(ctx context.Context, rdb redis.UniversalClient) (*SlotMap, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return nil, nil
	}
	shards, err := cc.ClusterShards(ctx).Result()
	if err == nil {
		return newSlotMap(shardRanges(shards)), nil
	}
	// Redis 6 has no CLUSTER SHARDS.
	ranges, err2 := cc.ClusterSlots(ctx).Result() //nolint:staticcheck // for Redis 6
	if err2 != nil {
		return nil, fmt.Errorf("read the cluster's slots: %w", errors.Join(err, err2))
	}
	return newSlotMap(ranges), nil
}

// shardRanges turns CLUSTER SHARDS into CLUSTER SLOTS's form: each range of
// slots with its master first.
func shardRanges(shards []redis.ClusterShard) []redis.ClusterSlot {
	var ranges []redis.ClusterSlot
	for _, sh := range shards {
		i := slices.IndexFunc(sh.Nodes, func(n redis.Node) bool { return n.Role == "master" })
		if i < 0 {
			continue
		}
		n := sh.Nodes[i]
		port := n.Port
		if port == 0 {
			port = n.TLSPort
		}
		addr := net.JoinHostPort(cmp.Or(n.Endpoint, n.IP), strconv.FormatInt(port, 10))
		for _, r := range sh.Slots {
			ranges = append(ranges, redis.ClusterSlot{Start: int(r.Start), End: int(r.End), Nodes: []redis.ClusterNode{{ID: n.ID, Addr: addr}}})
		}
	}
	return ranges
}

func newSlotMap(ranges []redis.ClusterSlot) *SlotMap {
	m := &SlotMap{owner: make([]int16, NumSlots)}
	for i := range m.owner {
		m.owner[i] = -1
	}
	for _, r := range ranges {
		if len(r.Nodes) == 0 || r.Start < 0 || r.End >= NumSlots || r.Start > r.End {
			continue
		}
		addr := r.Nodes[0].Addr // the master, then its replicas
		i := slices.Index(m.Masters, addr)
		if i < 0 {
			i = len(m.Masters)
			m.Masters = append(m.Masters, addr)
		}
		for s := r.Start; s <= r.End; s++ {
			m.owner[s] = int16(i)
		}
	}
	return m
}

// maxSalt bounds the search for a salt: with m masters a salt lands on a
// given one with a probability of about 1/m, so past 64 tries per master
// the Cluster's slots are too uneven to bother.
func maxSalt(masters int) int { return 64 * max(masters, 1) }

// SpreadSalts returns salts for the shards queues of batch's lane (see
// LaneQueue) so that they go round m's masters in turn: queue k on the
// (k mod masters)-th, in the order of their addresses. A queue whose
// master cannot be reached in maxSalt tries gets salt 0. With no map (not
// a Cluster) or one master, it returns nil: the names without salts.
func SpreadSalts(m *SlotMap, batch string, shards int) []int {
	if m == nil || len(m.Masters) < 2 || shards < 2 {
		return nil
	}
	masters := slices.Sorted(slices.Values(m.Masters))
	salts := make([]int, shards)
	for k := range salts {
		want := masters[k%len(masters)]
		for s := range maxSalt(len(masters)) {
			if m.Master(QueueSlot(laneQueueName(batch, k, s))) == want {
				salts[k] = s
				break
			}
		}
	}
	return salts
}

// Spread returns the number of masters of m that queues fall on, and the
// most any could: one per queue, up to the number of masters.
func (m *SlotMap) Spread(queues []string) (on, best int) {
	seen := make(map[string]bool)
	for _, q := range queues {
		seen[m.Master(QueueSlot(q))] = true
	}
	return len(seen), min(len(queues), len(m.Masters))
}

// laneQueueName is the name of queue shard of batch's lane with salt
// salt: LaneQueue's, then "." and the salt unless it is 0.
func laneQueueName(batch string, shard, salt int) string {
	name := LaneQueue(batch, shard)
	if salt != 0 {
		name += "." + strconv.Itoa(salt)
	}
	return name
}
