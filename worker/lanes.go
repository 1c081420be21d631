package worker

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/ratelimit"
	"github.com/pingfleet/pingfleet/tasks"
)

// Fair sharing between batches (see tasks.Lane). For each task one of its
// asynq servers fetches, a worker chooses the lane it comes from by stride
// scheduling: every lane has a pass, the lane with the lowest is served
// and its pass grows by 1/weight, so each open batch gets tasks in
// proportion to its priority's weight, one after the other, whatever its
// size or when it came; urgent lanes are served before any other. A lane
// that comes (or comes back from being empty) starts at the pass of the
// last lane served: no credit for the time it had nothing to run.
//
// Every worker process schedules on its own; as each one interleaves the
// lanes, so does the fleet. A lane found empty is not asked again for a
// while (the fetch window, doubling up to maxLaneBackoff), and a wake-up
// message from an enqueuer ends every such wait.

// Timing of the lanes: how often a worker reads them (a wake-up message
// also makes it read them at once), and the longest wait before an empty
// lane is asked again.
const (
	laneRefresh    = 500 * time.Millisecond
	maxLaneBackoff = time.Second
)

// staticLane stands in the scheduler for the static shard queues (tasks of
// older enqueuers), served as a normal batch's lane.
const staticLane = ""

// fullRetry is how long a lane's queue at its in-flight cap waits before
// it is asked again: a slot of a capped batch freed by any worker of the
// fleet is taken within about that.
const fullRetry = 10 * time.Millisecond

type laneState struct {
	lane   tasks.Lane
	tenant *tenantState
	queues []string
	weight float64 // 0: strict
	pass   float64
	next   int         // the shard to try first
	until  []time.Time // per shard: do not ask before
	streak []int       // per shard: empty answers in a row
	// buckets are the rates its tasks are granted pings from before they
	// are fetched: its batch's, its tenant's, the fleet's.
	buckets []*bucket
}

// tenantState is a tenant's place among the weighted lanes: tenants share
// the fleet equally, and each tenant's lanes its share by their weights.
type tenantState struct {
	pass  float64 // among the tenants
	vtime float64 // the pass of its lane last served
}

// bucket holds the pings a worker was granted from one of the fleet's
// buckets and has not spent yet.
type bucket struct {
	b      ratelimit.Bucket
	tokens int
	askAt  time.Time // after a refusal: when to ask again
}

// cost is the pings of one of l's tasks, as the rates count them.
func (l *laneState) cost() int { return max(l.lane.Cost, 1) }

// granted reports whether l has the pings of one more task in every
// bucket it draws from (true when it draws from none).
func (l *laneState) granted() bool {
	for _, b := range l.buckets {
		if b.tokens < l.cost() {
			return false
		}
	}
	return true
}

// spend takes (n=1) or gives back (n=-1) the pings of one task.
func (l *laneState) spend(n int) {
	for _, b := range l.buckets {
		b.tokens -= n * l.cost()
	}
}

// laneScheduler chooses the queue of each dequeue.
type laneScheduler struct {
	backoff time.Duration // the first wait after an empty answer
	gated   bool          // lanes with rates wait for their pings (a Granter gets them)
	fleet   int           // with gated: the fleet's rate, 0 for none

	mu      sync.Mutex
	lanes   map[string]*laneState // batch → lane
	byQueue map[string]laneShard  // queue → its lane and shard
	order   []*laneState          // lanes in a fixed order (ties go to the first)
	tenants map[string]*tenantState
	buckets map[ratelimit.Bucket]*bucket
	vtime   [2]float64    // the pass last served: tenants' [0], strict lanes' [1]
	gen     uint64        // wake calls so far
	changed chan struct{} // closed (and replaced) when pings are granted, lanes change or a wake-up comes
}

type laneShard struct {
	l     *laneState
	shard int
}

func newLaneScheduler(backoff time.Duration) *laneScheduler {
	s := &laneScheduler{backoff: backoff, lanes: make(map[string]*laneState), byQueue: make(map[string]laneShard),
		tenants: make(map[string]*tenantState), buckets: make(map[ratelimit.Bucket]*bucket), changed: make(chan struct{})}
	s.set(nil)
	return s
}

// gate makes lanes with rates wait for their pings, the fleet's too when
// fleetRate > 0: the worker's Granter gets them.
func (s *laneScheduler) gate(fleetRate int) {
	s.mu.Lock()
	s.gated, s.fleet = true, fleetRate
	s.mu.Unlock()
}

// set replaces the lanes by those registered now; lanes that stay keep
// their state.
func (s *laneScheduler) set(lanes []tasks.Lane) (added bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lanes = append(lanes, tasks.Lane{Batch: staticLane, Priority: tasks.PriorityNormal, Shards: 1})
	keep := make(map[string]*laneState, len(lanes))
	tenants := make(map[string]*tenantState)
	buckets := make(map[ratelimit.Bucket]*bucket)
	for _, l := range lanes {
		t := tenants[l.Tenant]
		if t == nil {
			t = cmp.Or(s.tenants[l.Tenant], &tenantState{pass: s.vtime[0]})
			tenants[l.Tenant] = t
		}
		st, ok := s.lanes[l.Batch]
		added = added || !ok
		if !ok || !st.lane.Equal(l) {
			st = &laneState{lane: l, queues: l.Queues(), weight: float64(l.Priority.Weight()), until: make([]time.Time, l.Shards), streak: make([]int, l.Shards)}
			if l.Batch == staticLane {
				st.queues = []string{staticLane}
			}
			if st.class() == 1 {
				st.pass = s.vtime[1]
			} else {
				st.pass = t.vtime
			}
		}
		st.tenant = t
		st.buckets = st.buckets[:0]
		for _, b := range s.bucketsOf(l) {
			k := buckets[b]
			if k == nil {
				k = cmp.Or(s.buckets[b], &bucket{b: b})
				buckets[b] = k
			}
			st.buckets = append(st.buckets, k)
		}
		keep[l.Batch] = st
	}
	s.lanes, s.tenants, s.buckets = keep, tenants, buckets
	s.broadcast()
	clear(s.byQueue)
	s.order = s.order[:0]
	for _, st := range keep {
		s.order = append(s.order, st)
		for i, q := range st.queues {
			s.byQueue[q] = laneShard{st, i}
		}
	}
	slices.SortFunc(s.order, func(a, b *laneState) int { return cmp.Compare(a.lane.Batch, b.lane.Batch) })
	return added
}

// bucketsOf returns the buckets l's tasks are granted pings from before
// they are fetched: none unless the scheduler is gated; none for the
// static queues, whose tasks wait for their rates in their slot.
func (s *laneScheduler) bucketsOf(l tasks.Lane) []ratelimit.Bucket {
	if !s.gated || l.Batch == staticLane {
		return nil
	}
	var b []ratelimit.Bucket
	if l.Rate > 0 {
		b = append(b, ratelimit.Bucket{Kind: ratelimit.BatchBucket, ID: l.Batch, Rate: l.Rate})
	}
	if l.TenantRate > 0 && l.Tenant != "" {
		b = append(b, ratelimit.Bucket{Kind: ratelimit.TenantBucket, ID: l.Tenant, Rate: l.TenantRate})
	}
	if s.fleet > 0 {
		b = append(b, ratelimit.Bucket{Kind: ratelimit.FleetBucket, Rate: s.fleet})
	}
	return b
}

// class is 1 for a strict lane, 0 for a weighted one.
func (l *laneState) class() int {
	if l.weight == 0 {
		return 1
	}
	return 0
}

// step is what one task served adds to the lane's pass.
func (l *laneState) step() float64 {
	if l.weight == 0 {
		return 1
	}
	return 1 / l.weight
}

// shardAt returns the first shard of l to ask at now, or -1.
func (l *laneState) shardAt(now time.Time) int {
	n := len(l.queues)
	for k := range n {
		i := (l.next + k) % n
		if !now.Before(l.until[i]) {
			return i
		}
	}
	return -1
}

// passes returns the passes l would be served at: its tenant's among the
// tenants (weighted lanes only) and its own among its tenant's lanes (or
// among the strict lanes).
func (s *laneScheduler) passes(l *laneState) (tenant, lane float64) {
	if l.class() == 1 {
		return 0, max(l.pass, s.vtime[1])
	}
	return max(l.tenant.pass, s.vtime[0]), max(l.pass, l.tenant.vtime)
}

// pick returns the queue to dequeue from next (staticLane for the static
// queues) and how many of its tasks may be active at once (0: no cap), or
// false when every lane waits (after an empty answer, or for its pings),
// and the number of wake calls so far, for answered.
func (s *laneScheduler) pick(now time.Time) (queue string, capacity int, gen uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gen = s.gen
	var best *laneState
	bestShard, bestT, bestL := -1, 0.0, 0.0
	for _, l := range s.order {
		if !l.granted() {
			continue // not fetched until its pings are granted: it holds no slot
		}
		shard := l.shardAt(now)
		if shard < 0 {
			continue
		}
		pt, pl := s.passes(l)
		if best == nil || l.class() > best.class() || (l.class() == best.class() && (pt < bestT || pt == bestT && pl < bestL)) {
			best, bestShard, bestT, bestL = l, shard, pt, pl
		}
	}
	if best == nil {
		return "", 0, gen, false
	}
	if best.class() == 1 {
		s.vtime[1] = bestL
	} else {
		s.vtime[0], best.tenant.vtime = bestT, bestL
		best.tenant.pass = bestT + 1
	}
	best.pass = bestL + best.step()
	best.spend(1)
	best.next = bestShard + 1
	return best.queues[bestShard], best.lane.ShardCap(bestShard), gen, true
}

// found is what a dequeue of a lane's queue found.
type found int

const (
	foundTask  found = iota
	foundEmpty       // nothing to fetch (or the queue is paused)
	foundFull        // tasks, but as many active as the lane's cap
)

// answered records what a dequeue of queue, picked at wake count gen,
// found. Without a task, its lane gets its turn and its pings back; an
// empty queue waits before it is asked again, unless a wake call came
// since (the answer may miss the tasks it announced), a full one
// fullRetry.
func (s *laneScheduler) answered(queue string, f found, gen uint64, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ls, ok := s.byQueue[queue]
	if !ok {
		return // the lane is gone meanwhile
	}
	l, i := ls.l, ls.shard
	if f == foundTask {
		l.streak[i], l.until[i] = 0, time.Time{}
		return
	}
	l.pass -= l.step()
	if l.class() == 0 {
		l.tenant.pass--
	}
	l.spend(-1)
	switch {
	case f == foundFull:
		l.until[i] = now.Add(fullRetry)
	case gen == s.gen:
		l.streak[i]++
		l.until[i] = now.Add(min(s.backoff<<min(l.streak[i]-1, 10), maxLaneBackoff))
	}
}

// wake ends the waits after an empty answer: tasks were enqueued.
//
// A message naming a batch ends only the waits of its lane and of the
// static queues: the lanes of other batches, drained, would otherwise all
// be asked again, and a worker's asynq servers that find a run of empty
// queues sleep a fetch window.
func (s *laneScheduler) wake(batch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	s.broadcast()
	for b, l := range s.lanes {
		if batch == "" || b == batch || b == staticLane {
			clear(l.until)
			clear(l.streak)
		}
	}
}

// tokenWant is a request for pings of one of the fleet's buckets.
type tokenWant struct {
	b    ratelimit.Bucket
	want int
}

// wants returns the buckets that lack the pings of one task of a lane
// that may be asked at now, and that may ask for them: each asks for at
// most a tenth of a second's worth (the bucket's burst), at least one
// task's.
func (s *laneScheduler) wants(now time.Time) []tokenWant {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := make(map[*bucket]int)
	for _, l := range s.order {
		if len(l.buckets) == 0 || l.shardAt(now) < 0 {
			continue
		}
		cost := l.cost()
		for _, b := range l.buckets {
			if b.tokens >= cost || now.Before(b.askAt) {
				continue
			}
			want[b] = max(want[b], cost-b.tokens, min(max(1, b.b.Rate/10), 4*cost))
		}
	}
	w := make([]tokenWant, 0, len(want))
	for b, n := range want {
		w = append(w, tokenWant{b.b, n})
	}
	return w
}

// granted adds n pings to bucket b, or, with none, makes it wait until
// retry before it asks again.
func (s *laneScheduler) granted(b ratelimit.Bucket, n int, retry time.Duration, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.buckets[b]
	if !ok {
		return
	}
	k.tokens += n
	if n == 0 {
		k.askAt = now.Add(max(retry, time.Millisecond))
		return
	}
	s.broadcast()
}

// broadcast wakes the dequeues waiting in starved. Call with s.mu held.
func (s *laneScheduler) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// starved reports whether a lane that may be asked at now waits for its
// pings, and returns a channel closed once pings are granted (or the lanes
// change): a dequeue that found no lane to ask may wait for it instead of
// answering asynq "nothing" (its server would then sleep a fetch window,
// the servers of a worker all at once, and leave the pings granted
// meanwhile unspent).
func (s *laneScheduler) starved(now time.Time) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.order {
		if len(l.buckets) > 0 && !l.granted() && l.shardAt(now) >= 0 {
			return true, s.changed
		}
	}
	return false, nil
}

// queues returns the queues of the lanes known now, static ones aside.
func (s *laneScheduler) queues() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var q []string
	for _, l := range s.order {
		if l.lane.Batch != staticLane {
			q = append(q, l.queues...)
		}
	}
	return q
}

// Granter grants pings of the fleet's buckets without waiting, and tells
// the fleet's rate; *ratelimit.Limiter is one.
type Granter interface {
	Grant(ctx context.Context, b ratelimit.Bucket, n int) (int, time.Duration, error)
	FleetRate() int
}

// grantTick is how often the limited lanes ask for their pings.
const grantTick = 10 * time.Millisecond

// laneReader keeps a scheduler's lanes as registered in Redis: it reads
// them every laneRefresh, and at once when asked (a wake-up message); and,
// with a Granter, gets the limited lanes their pings.
type laneReader struct {
	rdb    redis.UniversalClient
	rates  Granter
	s      *laneScheduler
	logger *rateLimitedLog
	kick   chan struct{}
	stop   chan struct{}
	done   sync.WaitGroup
	// added, if set, is called when a read finds lanes the scheduler did
	// not have.
	added func()
}

func newLaneReader(rdb redis.UniversalClient, rates Granter, s *laneScheduler, logger *slog.Logger) *laneReader {
	if rates != nil {
		s.gate(rates.FleetRate())
	}
	return &laneReader{rdb: rdb, rates: rates, s: s, logger: newRateLimitedLog(logger, time.Minute), kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// read reads the lanes once.
func (r *laneReader) read(ctx context.Context) error {
	lanes, bad, err := tasks.ReadLanes(ctx, r.rdb)
	if err != nil {
		return err
	}
	for _, e := range bad {
		r.logger.Warn("lane skipped", "error", e)
	}
	if r.s.set(lanes) && r.added != nil {
		r.added() // new batches' queues: dequeues waiting on an idle worker look
	}
	return nil
}

// grant asks for the pings the limited lanes lack, once.
func (r *laneReader) grant(ctx context.Context) {
	now := time.Now()
	for _, w := range r.s.wants(now) {
		n, retry, err := r.rates.Grant(ctx, w.b, w.want)
		if err != nil {
			r.logger.Warn("rate limit", "bucket", w.b.ID, "error", err)
			n, retry = 0, time.Second
		}
		r.s.granted(w.b, n, retry, now)
	}
}

// Start reads the lanes until Close.
func (r *laneReader) Start() {
	if r.rates != nil {
		r.done.Go(func() { every(r.stop, grantTick, 5*time.Second, r.grant) })
	}
	r.done.Go(func() {
		t := time.NewTicker(laneRefresh)
		defer t.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := r.read(ctx); err != nil {
				r.logger.Warn("read the lanes of open batches", "error", err)
			}
			cancel()
			select {
			case <-r.stop:
				return
			case <-t.C:
			case <-r.kick:
			}
		}
	})
}

// Kick makes it read the lanes now.
func (r *laneReader) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Close stops it.
func (r *laneReader) Close() {
	close(r.stop)
	r.done.Wait()
}
