// Package testkit holds what many of pingfleet's tests need: polling for a
// condition instead of sleeping, a free port, a buffer safe for concurrent
// writers, and a ready batch store (an aggregator and an enqueuer on the
// private redis-server of package redistest).
package testkit

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/tasks"
)

// PollInterval is how often Eventually checks its condition.
const PollInterval = 10 * time.Millisecond

// Eventually checks cond every PollInterval until it holds, and fails t if
// it does not within timeout, with msg (a format and its arguments) saying
// what was awaited.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg ...any) {
	t.Helper()
	if Within(timeout, cond) {
		return
	}
	what := "condition"
	if len(msg) > 0 {
		what = fmt.Sprintf(fmt.Sprint(msg[0]), msg[1:]...)
	}
	t.Fatalf("%s: not met within %s", what, timeout)
}

// Within reports whether cond holds, checked every PollInterval, within
// timeout.
func Within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(PollInterval)
	}
	return true
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// SyncBuffer is a bytes.Buffer that goroutines may write and read at once
// (a child process's output, a logger's).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Store is a ready batch store for one test: an aggregator and an
// enqueuer on one Redis (redistest.Start gives a private one), and an
// asynq inspector.
type Store struct {
	Client     redis.UniversalClient
	Aggregator *aggregator.Aggregator
	Enqueuer   *enqueuer.Enqueuer
	Inspector  *asynq.Inspector
}

// NewStore returns a Store on rdb. cfg configures the aggregator; its
// Client is rdb.
func NewStore(t testing.TB, rdb redis.UniversalClient, cfg aggregator.Config) *Store {
	t.Helper()
	cfg.Client = rdb
	agg, err := aggregator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	return &Store{Client: rdb, Aggregator: agg, Enqueuer: enq, Inspector: asynq.NewInspectorFromRedisClient(rdb)}
}

// Queued counts the tasks waiting in the ping queues: the default set of
// static ones and the batches' lanes.
func (s *Store) Queued(t testing.TB) int {
	t.Helper()
	queues, err := tasks.PingQueues(context.Background(), s.Client, tasks.DefaultShards)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range queues {
		n += int(s.Client.LLen(context.Background(), tasks.AsynqKeys(q)+":pending").Val())
	}
	return n
}

// CallbackSettled reports whether nothing more can happen to the callback
// of batch id: the batch is out of the aggregator's open batches (no
// janitor looks at it again) and its callback task has completed, with
// nothing of the callback queue pending, running or waiting for a retry.
// Tests check it instead of sleeping to see that no second delivery comes.
func CallbackSettled(ctx context.Context, rdb redis.UniversalClient, agg *aggregator.Aggregator, id string) bool {
	open, err := agg.OpenBatches(ctx, 10000)
	if err != nil {
		return false
	}
	for _, b := range open {
		if b.ID == id {
			return false
		}
	}
	ins := asynq.NewInspectorFromRedisClient(rdb)
	q, err := ins.GetQueueInfo(tasks.CallbackQueue)
	if err != nil {
		return false
	}
	if q.Pending+q.Active+q.Scheduled+q.Retry+q.Aggregating > 0 {
		return false
	}
	info, err := ins.GetTaskInfo(tasks.CallbackQueue, tasks.CallbackTaskID(id))
	return err == nil && info.State == asynq.TaskStateCompleted
}
