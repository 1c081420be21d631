// Package aggregator owns the state of every batch in Redis: its record, the
// hosts still pending, each host's result, the counters and the summary.
//
// Execution is at-least-once (asynq may run a task twice), accounting is
// exactly-once: a result is counted only by the call that removes its host
// from the batch's pending set, inside one Lua script, and the call that
// counts the last host is the only one told the batch is complete.
//
// A batch costs Redis about 130 bytes per host once it is final: its host
// list and one short text record per host (codec.go). Per-host copies that
// serve only a running batch go when it ends: the pending set empties, and
// the event stream, which lists hosts in the order their results were
// counted, keeps only its last entries. RTT percentiles come from a
// histogram of a few hundred buckets, whatever the batch's size.
//
// All keys of one batch carry the hash tag {<batchID>}, so they live in one
// Redis Cluster slot and a script may touch them together, and they all
// expire together after the retention period; on a Cluster, a large
// batch's per-host state is split over shards of their own tags instead,
// one per master (shards.go).
package aggregator

import (
	"cmp"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/tasks"
)

// DefaultRetention is how long a batch's keys live after it is created.
const DefaultRetention = 7 * 24 * time.Hour

// Sentinel errors.
var (
	// ErrNotFound means no batch has that ID (or it expired).
	ErrNotFound = errors.New("batch not found")
	// ErrConflict means a batch with that ID exists with other hosts or options.
	ErrConflict = errors.New("batch ID already used by another batch")
)

// Config configures an Aggregator.
type Config struct {
	// Client is the Redis connection. Required.
	Client redis.UniversalClient
	// Retention is how long a batch's keys live. If zero, DefaultRetention.
	Retention time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
	// NoEvents, if set, keeps no event stream for the batches this
	// Aggregator records: for a Redis that only this process uses (run's
	// private one), where no one follows a batch's events. Events then
	// find none.
	NoEvents bool
	// StateShards is how many shards the per-host state of a new batch is
	// split into (see shards.go): 0, the default, for one per 1,000 hosts
	// up to one per master of a Redis Cluster (none on a single Redis or
	// Sentinel); 1 for never; n for up to n whatever the Redis (tests).
	StateShards int
}

// Aggregator reads and writes batch state in Redis. It is safe for
// concurrent use.
type Aggregator struct {
	rdb       redis.UniversalClient
	retention time.Duration
	now       func() time.Time
	tail      int // events a final batch's stream keeps; 0: no stream
	shards    int // Config.StateShards

	mu      sync.Mutex
	layouts map[string]layout // sharded batches' layouts, for the writers

	slotsMu   sync.Mutex
	slots     *tasks.SlotMap // the Cluster's, read at slotsRead
	slotsRead time.Time
}

// New returns an Aggregator for cfg.
func New(cfg Config) (*Aggregator, error) {
	if cfg.Client == nil {
		return nil, errors.New("aggregator: Config.Client is required")
	}
	if cfg.StateShards < 0 || cfg.StateShards > maxShards {
		return nil, fmt.Errorf("aggregator: %d state shards: 0 to %d", cfg.StateShards, maxShards)
	}
	if cfg.Retention < 0 {
		return nil, fmt.Errorf("aggregator: negative retention %s", cfg.Retention)
	}
	a := &Aggregator{
		rdb:       cfg.Client,
		retention: cmp.Or(cfg.Retention, DefaultRetention),
		now:       cfg.Now,
		tail:      streamTail,
		shards:    cfg.StateShards,
		layouts:   make(map[string]layout),
	}
	if cfg.NoEvents {
		a.tail = 0
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}
