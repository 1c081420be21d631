package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/pingfleet/pingfleet/worker"
)

// A Worker with real pings drains a batch from a real Redis and stops
// cleanly (goleak checks the stop).
func TestWorkerRunsBatch(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	engine := worker.NewEngine(worker.EngineConfig{Logger: logger})
	defer engine.Close()
	h, err := worker.NewHandler(worker.HandlerConfig{Recorder: agg, Pinger: engine, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Redis: rdb, Handler: h, Concurrency: 50, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for i := range 100 {
		hosts = append(hosts, fmt.Sprintf("127.0.77.%d", i+1))
	}
	res, err := enq.Submit(ctx, enqueuer.Batch{Hosts: hosts, Options: tasks.PingOptions{Count: 2, Interval: tasks.Duration(10 * time.Millisecond), Timeout: tasks.Duration(5 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var s aggregator.Summary
	for time.Now().Before(deadline) {
		if s, err = agg.Summary(ctx, res.ID); err != nil {
			t.Fatal(err)
		}
		if s.Completed() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !s.Completed() || s.Up != 100 || s.Received != 200 {
		t.Errorf("summary = %+v; want complete, 100 up, 200 received", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
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
