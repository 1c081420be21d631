package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/pingfleet/pingfleet/worker"
)

// runWorker runs a Worker with real pings on a private Redis, configured
// by cfg (Redis, Handler and Logger are filled in), until the test ends;
// the end checks that Run stopped cleanly.
func runWorker(t *testing.T, cfg worker.Config) (*redis.Client, *aggregator.Aggregator) {
	rdb, agg, _ := startWorker(t, cfg)
	return rdb, agg
}

func startWorker(t *testing.T, cfg worker.Config) (*redis.Client, *aggregator.Aggregator, *worker.Worker) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client()
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	h, err := worker.NewHandler(worker.HandlerConfig{Recorder: agg, Pinger: newEngine(t), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Redis, cfg.Handler, cfg.Logger = rdb, h, logger
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, w)
	return rdb, agg, w
}

// runUntilEnd runs w until the test ends, and then checks that Run
// stopped cleanly.
func runUntilEnd(t *testing.T, w *worker.Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// pingBatch submits n hosts of 127.0.subnet.0/24 with opts and returns the
// summary once the batch completes (or after 30 s).
func pingBatch(t *testing.T, rdb *redis.Client, agg *aggregator.Aggregator, subnet, n int, opts tasks.PingOptions) aggregator.Summary {
	t.Helper()
	ctx := context.Background()
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for i := range n {
		hosts = append(hosts, fmt.Sprintf("127.0.%d.%d", subnet, i+1))
	}
	res, err := enq.Submit(ctx, enqueuer.Batch{Hosts: hosts, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	var s aggregator.Summary
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if s, err = agg.Summary(ctx, res.ID); err != nil {
			t.Fatal(err)
		}
		if s.Completed() {
			break
		}
	}
	return s
}

// A Worker with real pings drains a batch from a real Redis and stops
// cleanly (goleak checks the stop).
func TestWorkerRunsBatch(t *testing.T) {
	t.Parallel()
	rdb, agg := runWorker(t, worker.Config{Concurrency: 50})
	s := pingBatch(t, rdb, agg, 77, 100, tasks.PingOptions{Count: 2, Interval: tasks.Duration(10 * time.Millisecond), Timeout: tasks.Duration(5 * time.Second)})
	if !s.Completed() || s.Up != 100 || s.Received != 200 {
		t.Errorf("summary = %+v; want complete, 100 up, 200 received", s)
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	var got []time.Duration
	for n := 1; n <= 7; n++ {
		got = append(got, worker.RetryDelay(n, nil, nil))
	}
	want := fmt.Sprint([]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second})
	if fmt.Sprint(got) != want {
		t.Errorf("RetryDelay(1..7) = %v; want %v", got, want)
	}
}

// An idle worker looks at each queue about once per TaskCheckInterval,
// however many asynq servers it runs (each of which would poll every queue
// that often), and still picks up a batch submitted while it idles.
func TestFetchClientIdlePolls(t *testing.T) {
	t.Parallel()
	const servers, interval = 16, 50 * time.Millisecond
	rdb, agg := runWorker(t, worker.Config{Concurrency: 64, Servers: servers, TaskCheckInterval: interval})

	// Every dequeue of a queue that is not paused pops from it once.
	pops := func() int {
		info, err := rdb.Info(context.Background(), "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		_, after, _ := strings.Cut(info, "cmdstat_rpoplpush:calls=")
		n, _ := strconv.Atoi(after[:strings.IndexByte(after+",", ',')])
		return n
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return pops() >= tasks.DefaultShards }, "the servers' first looks at the queues")
	start, before := time.Now(), pops()
	time.Sleep(time.Second)
	got, elapsed := pops()-before, time.Since(start)
	queues := tasks.DefaultShards
	limit := queues * (int(elapsed/interval) + 2)
	t.Logf("%d dequeues in %v by %d servers from %d queues; each server polling on its own: about %d", got, elapsed.Round(time.Millisecond), servers, queues, servers*queues*int(elapsed/interval))
	if got == 0 || got > limit {
		t.Errorf("idle worker dequeued %d times in %v; want 1 to %d (about one look per queue per %v)", got, elapsed, limit, interval)
	}

	s := pingBatch(t, rdb, agg, 78, 50, tasks.PingOptions{Count: 1, Timeout: tasks.Duration(5 * time.Second)})
	if !s.Completed() || s.Up != 50 {
		t.Errorf("summary = %+v; want complete, 50 up", s)
	}
}

func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		concurrency int
		want        int64
	}{
		{1, 64 << 20},
		{1000, 64 << 20},
		{10000, 16<<20 + 10000*16<<10},
		{100000, 16<<20 + 100000*16<<10},
	} {
		if got := worker.MemoryLimit(tc.concurrency); got != tc.want {
			t.Errorf("MemoryLimit(%d) = %d; want %d", tc.concurrency, got, tc.want)
		}
	}
}

// An enqueuer's wake-up message reaches the worker, which then forgets the
// queues it found empty (TestFetchClientWake shows what that changes), and
// the batch is picked up.
func TestWakeUp(t *testing.T) {
	t.Parallel()
	const interval = 5 * time.Second
	rdb, agg, w := startWorker(t, worker.Config{Concurrency: 64, Servers: 32, TaskCheckInterval: interval})
	// Every server finds the queues empty, and they are remembered so.
	testkit.Eventually(t, 10*time.Second, func() bool { return w.EmptyQueues() == tasks.DefaultShards }, "every queue found empty")
	before := w.Wakes()
	start := time.Now()
	s := pingBatch(t, rdb, agg, 79, 10, tasks.PingOptions{Count: 1, Timeout: tasks.Duration(5 * time.Second)})
	t.Logf("batch of 10 took %v", time.Since(start).Round(time.Millisecond))
	if !s.Completed() || s.Up != 10 {
		t.Fatalf("summary = %+v; want complete, 10 up", s)
	}
	if w.Wakes() == before {
		t.Error("the worker heard no wake-up message from the enqueuer")
	}
}
