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
	"github.com/pingfleet/pingfleet/ratelimit"
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
	return replyAfter(ctx, p.pause)
}

// replyAfter answers a ping with one reply of 1 ms after pause, unless ctx
// ends first.
func replyAfter(ctx context.Context, pause time.Duration) (ping.Stats, error) {
	select {
	case <-time.After(pause):
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
	submitWith, agg, rdb := fairFleetWith(t, p, concurrency, false)
	return func(b byte, n int, prio tasks.Priority) string {
		return submitWith(b, n, prio, tasks.PingOptions{Count: 1})
	}, agg, rdb
}

// fairFleetWith is fairFleet with the options of each batch given, and,
// with rates, a rate limiter (as the worker command has).
func fairFleetWith(t *testing.T, p worker.Pinger, concurrency int, rates bool) (submit func(b byte, n int, prio tasks.Priority, opts tasks.PingOptions) string, agg *aggregator.Aggregator, rdb *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	rdb = srv.Client()
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	hc := worker.HandlerConfig{Recorder: agg, Pinger: p, Logger: logger}
	wc := worker.Config{Redis: rdb, Logger: logger, Concurrency: concurrency, Servers: 1}
	if rates {
		l, err := ratelimit.New(ratelimit.Config{Client: rdb})
		if err != nil {
			t.Fatal(err)
		}
		hc.Limiter, wc.Rates = l, l
	}
	h, err := worker.NewHandler(hc)
	if err != nil {
		t.Fatal(err)
	}
	wc.Handler = h
	w, err := worker.New(wc)
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, w)
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	return func(b byte, n int, prio tasks.Priority, opts tasks.PingOptions) string {
		t.Helper()
		hosts := make([]string, n)
		for i := range hosts {
			hosts[i] = fmt.Sprintf("127.%d.%d.%d", b, i/250, i%250+1)
		}
		res, err := enq.Submit(context.Background(), enqueuer.Batch{Hosts: hosts, Priority: prio, Options: opts})
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

// A batch held back by its own rate holds no worker slot: its tasks are
// fetched only once their pings are granted, so with two slots a batch
// submitted after it runs at once, and the throttled one never has more
// than the granted task running, while it keeps its rate.
func TestFairThrottledHoldsNoSlot(t *testing.T) {
	t.Parallel()
	p := &orderPinger{pause: 2 * time.Millisecond}
	submit, agg, rdb := fairFleetWith(t, p, 2, true)
	began := time.Now()
	slow := submit(1, 100, "", tasks.PingOptions{Count: 1, BatchRate: 4})
	testkit.Eventually(t, 10*time.Second, func() bool { return countOf(p.served(), 1) >= 1 }, "the throttled batch under way")
	// Sample the throttled lane's running tasks meanwhile.
	stop := make(chan struct{})
	most := make(chan int64, 1)
	go func() {
		var m int64
		defer func() { most <- m }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			m = max(m, rdb.LLen(context.Background(), tasks.AsynqKeys(tasks.LaneQueue(slow, 0))+":active").Val())
		}
	}()
	start := time.Now()
	fast := submit(2, 40, "", tasks.PingOptions{Count: 1})
	testkit.Eventually(t, 20*time.Second, func() bool {
		s, err := agg.Progress(context.Background(), fast)
		return err == nil && s.Completed()
	}, "the unlimited batch complete")
	took := time.Since(start)
	time.Sleep(time.Second) // the throttled batch goes on at its rate
	close(stop)
	if m := <-most; m > 1 {
		t.Errorf("the throttled batch had %d tasks running at once; want at most the one granted (4 pings/s, 2 ms each)", m)
	}
	// 40 tasks of 2 ms on 2 slots: about 40 ms, and well under the 10 s
	// the throttled batch's 40 next tasks take at its rate.
	if took > 2*time.Second {
		t.Errorf("the unlimited batch took %v beside a throttled one; want it unhindered", took)
	}
	// The throttled batch keeps its rate: 4/s and a burst of 1.
	elapsed := time.Since(began).Seconds()
	if n := countOf(p.served(), 1); float64(n) > 4*elapsed+2 || n < 2 {
		t.Errorf("the throttled batch had %d tasks in %.1f s; want about 4 a second", n, elapsed)
	}
}

// crowdPinger answers every ping after a pause and records, per batch (the
// second byte of the address), the most of its pings at once.
type crowdPinger struct {
	pause time.Duration
	mu    sync.Mutex
	now   map[byte]int
	most  map[byte]int
	total map[byte]int
}

func newCrowdPinger(pause time.Duration) *crowdPinger {
	return &crowdPinger{pause: pause, now: map[byte]int{}, most: map[byte]int{}, total: map[byte]int{}}
}

func (p *crowdPinger) Ping(ctx context.Context, ip netip.Addr, _ tasks.PingOptions) (ping.Stats, error) {
	b := ip.As4()[1]
	p.mu.Lock()
	p.now[b]++
	p.total[b]++
	p.most[b] = max(p.most[b], p.now[b])
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.now[b]--
		p.mu.Unlock()
	}()
	return replyAfter(ctx, p.pause)
}

// peak returns the most pings of batch b at once so far, and their number.
func (p *crowdPinger) peak(b byte) (most, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.most[b], p.total[b]
}

// startFairWorker runs a worker of concurrency slots on rdb with p, as the
// worker command does (a Limiter, fleetRate its fleet rate, both for the
// Handler and to grant pings before fetching).
func startFairWorker(t *testing.T, rdb *redis.Client, agg *aggregator.Aggregator, p worker.Pinger, concurrency, fleetRate int) {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	l, err := ratelimit.New(ratelimit.Config{Client: rdb, FleetRate: fleetRate})
	if err != nil {
		t.Fatal(err)
	}
	h, err := worker.NewHandler(worker.HandlerConfig{Recorder: agg, Pinger: p, Logger: logger, Limiter: l})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Redis: rdb, Logger: logger, Concurrency: concurrency, Servers: 2, Handler: h, Rates: l})
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, w)
}

// hostsOf returns n addresses of 127.<b>.0.0/16.
func hostsOf(b byte, n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.%d.%d.%d", b, i/250, i%250+1)
	}
	return hosts
}

// A batch's in-flight cap holds across the fleet: two workers never run
// more of its tasks at once than the cap, reach it, and keep their other
// slots busy with another batch's tasks.
func TestFairInFlightCap(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	p := newCrowdPinger(20 * time.Millisecond)
	startFairWorker(t, rdb, agg, p, 16, 0)
	startFairWorker(t, rdb, agg, p, 16, 0)
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	capped, err := enq.Submit(context.Background(), enqueuer.Batch{Hosts: hostsOf(1, 2500), MaxInFlight: 5, Options: tasks.PingOptions{Count: 1}})
	if err != nil {
		t.Fatal(err)
	}
	free, err := enq.Submit(context.Background(), enqueuer.Batch{Hosts: hostsOf(2, 600), Options: tasks.PingOptions{Count: 1}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		s, err := agg.Progress(context.Background(), free.ID)
		return err == nil && s.Completed()
	}, "the unlimited batch complete")
	if most, _ := p.peak(2); most < 10 {
		t.Errorf("the unlimited batch had at most %d pings at once; want the slots the capped one leaves (up to 27)", most)
	}
	// The capped batch goes on at its cap: 5 at a time, 20 ms each.
	testkit.Eventually(t, 10*time.Second, func() bool { _, n := p.peak(1); return n >= 400 }, "400 of the capped batch's hosts pinged")
	most, _ := p.peak(1)
	if most > 5 || most < 4 {
		t.Errorf("the capped batch (cap 5, 3 queues, 2 workers of 16 slots) had at most %d pings at once; want 5", most)
	}
	s, err := agg.Summary(context.Background(), capped.ID)
	if err != nil || s.MaxInFlight != 5 {
		t.Errorf("summary: in-flight cap %d, %v; want 5", s.MaxInFlight, err)
	}
}

// The fleet's rate holds no slot either: a worker fetches a task only with
// its pings granted, so of its 20 slots only about the tenth of a second's
// pings it was granted run (or wait) at once, not all 20, and the fleet
// keeps its rate.
func TestFairFleetRateHoldsNoSlot(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	p := newCrowdPinger(time.Millisecond)
	startFairWorker(t, rdb, agg, p, 20, 40)
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	b, err := enq.Submit(context.Background(), enqueuer.Batch{Hosts: hostsOf(1, 200), Options: tasks.PingOptions{Count: 1}})
	if err != nil {
		t.Fatal(err)
	}
	active := tasks.AsynqKeys(tasks.LaneQueue(b.ID, 0)) + ":active"
	var most int64
	start := time.Now()
	for time.Since(start) < 1500*time.Millisecond {
		most = max(most, rdb.LLen(context.Background(), active).Val())
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start).Seconds()
	if most > 5 {
		t.Errorf("%d of the batch's tasks active at once under a fleet rate of 40/s; want at most the 4 granted at a time", most)
	}
	if _, n := p.peak(1); float64(n) > 40*elapsed+4+1 || float64(n) < 32*elapsed {
		t.Errorf("%d pings in %.1f s; want the fleet's 40 a second (and its burst of 4)", n, elapsed)
	}
}
