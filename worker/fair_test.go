package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/pingfleet/pingfleet/worker"
)

// orderPinger answers every ping after a pause and records the order of
// the addresses it was asked; the second byte of an address names its
// batch in these tests.
type orderPinger struct {
	pause time.Duration
	mu    sync.Mutex
	order []byte
}

func (p *orderPinger) Ping(ctx context.Context, ip netip.Addr, _ tasks.PingOptions) (ping.Stats, error) {
	p.mu.Lock()
	p.order = append(p.order, ip.As4()[1])
	p.mu.Unlock()
	select {
	case <-time.After(p.pause):
	case <-ctx.Done():
		return ping.Stats{}, ctx.Err()
	}
	return ping.Stats{Sent: 1, Received: 1, Min: time.Millisecond, Avg: time.Millisecond, Max: time.Millisecond}, nil
}

// served returns the batches of the pings so far, in order.
func (p *orderPinger) served() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.order)
}

// fairFleet runs a worker of concurrency slots on a private Redis with p,
// and returns a function that submits n hosts of 127.<b>.0.0/16 as a
// batch of priority prio.
func fairFleet(t *testing.T, p worker.Pinger, concurrency int) (submit func(b byte, n int, prio tasks.Priority) string, agg *aggregator.Aggregator, rdb *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	rdb = srv.Client()
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	h, err := worker.NewHandler(worker.HandlerConfig{Recorder: agg, Pinger: p, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Redis: rdb, Handler: h, Logger: logger, Concurrency: concurrency, Servers: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	return func(b byte, n int, prio tasks.Priority) string {
		t.Helper()
		hosts := make([]string, n)
		for i := range hosts {
			hosts[i] = fmt.Sprintf("127.%d.%d.%d", b, i/250, i%250+1)
		}
		res, err := enq.Submit(context.Background(), enqueuer.Batch{Hosts: hosts, Priority: prio, Options: tasks.PingOptions{Count: 1}})
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}, agg, rdb
}

// A small batch submitted while a big one runs is served beside it, not
// after it: with one task at a time, every other task is the small
// batch's until it is done. Its summary gives its wait and priority.
func TestFairSmallBatchBesideSweep(t *testing.T) {
	t.Parallel()
	p := &orderPinger{pause: 2 * time.Millisecond}
	submit, agg, rdb := fairFleet(t, p, 1)
	submit(1, 2000, "")
	testkit.Eventually(t, 10*time.Second, func() bool { return len(p.served()) >= 50 }, "the sweep under way")
	small := submit(2, 20, "")
	testkit.Eventually(t, 20*time.Second, func() bool {
		s, err := agg.Progress(context.Background(), small)
		return err == nil && s.Completed()
	}, "the small batch complete")
	order := p.served()
	first := slices.Index(order, 2)
	span := order[first:]
	n := 0
	for i, b := range span {
		if b == 2 {
			n++
		}
		if n == 20 {
			span = span[:i+1]
			break
		}
	}
	// Interleaved one for one (the static queues' turns take none): 20
	// of its tasks within 41 of the fleet's.
	if n != 20 || len(span) > 41 || first > 50+10 {
		t.Errorf("the small batch's 20 tasks: first at %d of %d served, all within %d tasks; want at once and within 41:\n%v", first, len(order), len(span), span)
	}
	s, err := agg.Summary(context.Background(), small)
	if err != nil {
		t.Fatal(err)
	}
	if s.Priority != tasks.PriorityNormal || s.WaitSec <= 0 || s.WaitSec > 5 {
		t.Errorf("summary: priority %q, wait %v s; want normal and a wait of a little above 0", s.Priority, s.WaitSec)
	}
	// asynq acknowledged each task on the lane's queue, which its message
	// names: none is left running there, and asynq counted 20 done.
	base := tasks.AsynqKeys(tasks.LaneQueue(small, 0))
	testkit.Eventually(t, 10*time.Second, func() bool {
		return rdb.LLen(context.Background(), base+":active").Val() == 0 && rdb.Get(context.Background(), base+":processed").Val() == "20"
	}, "the small batch's tasks acknowledged in its lane")
}

// Two equal batches submitted together share the fleet: each has half of
// the tasks served while both run. An urgent batch goes before both.
func TestFairSharesAndUrgent(t *testing.T) {
	t.Parallel()
	p := &orderPinger{pause: 2 * time.Millisecond}
	submit, _, _ := fairFleet(t, p, 1)
	submit(1, 600, "")
	submit(2, 600, "")
	testkit.Eventually(t, 20*time.Second, func() bool { return len(p.served()) >= 400 }, "400 tasks served")
	order := p.served()[100:400] // once both are queued
	if a := countOf(order, 1); a < 140 || a > 160 {
		t.Errorf("of 300 tasks while both ran, %d went to the first batch; want 150 (±10)", a)
	}
	submit(3, 30, tasks.PriorityUrgent)
	testkit.Eventually(t, 20*time.Second, func() bool { return countOf(p.served(), 3) == 30 }, "the urgent batch served")
	order = p.served()
	first := slices.Index(order, 3)
	if got := countOf(order[first:first+30], 3); got < 29 {
		t.Errorf("the urgent batch had %d of the 30 tasks after its first; want all (one may have been fetched already): %v", got, order[first:first+30])
	}
}

func countOf(order []byte, b byte) int {
	n := 0
	for _, x := range order {
		if x == b {
			n++
		}
	}
	return n
}
