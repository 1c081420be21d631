package notify

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
)

// A batch without a deadline of its own expires only once its results stop
// coming for the idle timeout; one with a deadline expires at it, results
// or not.
func TestDeadlineFollowsProgress(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := start
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}
	at := func(d time.Duration) {
		mu.Lock()
		clock = start.Add(d)
		mu.Unlock()
	}
	agg, err := aggregator.New(aggregator.Config{Client: rdb, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	notifier, err := NewNotifier(NotifierConfig{Client: asynq.NewClientFromRedisClient(rdb), Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	j, err := NewJanitor(JanitorConfig{Aggregator: agg, Notifier: notifier, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	j.now = now
	opts := tasks.PingOptions{Count: 1}
	idle := aggregator.IdleTimeout(opts) // 5 min and one ping time
	hosts := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}
	for _, b := range []aggregator.Batch{
		{ID: "draining", Hosts: hosts, Options: opts},
		{ID: "fixed", Hosts: hosts, Options: opts, Deadline: start.Add(6 * time.Minute)},
	} {
		if _, err := agg.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	record := func(id, host string) {
		t.Helper()
		if _, err := agg.Record(ctx, id, aggregator.Result{Host: host, Status: aggregator.StatusUp, Sent: 1, Received: 1, RTTAvg: 1}); err != nil {
			t.Fatal(err)
		}
	}
	state := func(id string) aggregator.State {
		t.Helper()
		s, err := agg.Summary(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return s.State
	}
	// A result every four minutes: slower than the first deadline
	// (5 min + one ping time per 1,000 hosts), faster than the idle timeout.
	for i, host := range hosts[:3] {
		at(time.Duration(4*(i+1)) * time.Minute)
		record("draining", host)
		record("fixed", host)
		at(time.Duration(4*(i+1))*time.Minute + 3*time.Minute)
		if err := j.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if got := state("draining"); got != aggregator.StateRunning && got != aggregator.StateEnqueuing {
			t.Fatalf("after %d results, 3 min after the last: the draining batch is %s", i+1, got)
		}
	}
	if got := state("fixed"); got != aggregator.StateExpired {
		t.Errorf("the batch with a deadline of its own is %s past it; want expired", got)
	}
	// Then no result: the batch expires once idle for the timeout.
	at(12*time.Minute + idle - time.Second)
	if err := j.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := state("draining"); got == aggregator.StateExpired {
		t.Fatalf("expired %s before its idle timeout", time.Second)
	}
	at(12*time.Minute + idle + time.Second)
	if err := j.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := agg.Summary(ctx, "draining")
	if err != nil {
		t.Fatal(err)
	}
	if s.State != aggregator.StateExpired || s.Up != 3 || s.Expired != 1 {
		t.Errorf("idle batch: %+v; want expired with 3 up and 1 expired", s)
	}
}
