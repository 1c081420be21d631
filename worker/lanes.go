package worker

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

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

type laneState struct {
	lane   tasks.Lane
	queues []string
	weight float64 // 0: strict
	pass   float64
	next   int         // the shard to try first
	until  []time.Time // per shard: do not ask before
	streak []int       // per shard: empty answers in a row
	// A limited lane (lane.Rate): pings granted and not spent yet, and
	// when to ask for more after a refusal.
	tokens   int
	tokensAt time.Time
}

// cost is the pings of one of l's tasks, as its rate counts them.
func (l *laneState) cost() int { return max(l.lane.Cost, 1) }

// limited reports whether l is fetched only with its pings granted, and
// whether it has them for one more task.
func (s *laneScheduler) limited(l *laneState) (limited, granted bool) {
	if l.lane.Rate <= 0 || !s.gated {
		return false, true
	}
	return true, l.tokens >= l.cost()
}

// laneScheduler chooses the queue of each dequeue.
type laneScheduler struct {
	backoff time.Duration // the first wait after an empty answer
	gated   bool          // limited lanes wait for their pings (a Granter gets them)

	mu      sync.Mutex
	lanes   map[string]*laneState // batch → lane
	byQueue map[string]laneShard  // queue → its lane and shard
	order   []*laneState          // lanes in a fixed order (ties go to the first)
	vtime   [2]float64            // the pass last served, weighted [0] and strict [1]
	gen     uint64                // wake calls so far
}

type laneShard struct {
	l     *laneState
	shard int
}

func newLaneScheduler(backoff time.Duration) *laneScheduler {
	s := &laneScheduler{backoff: backoff, lanes: make(map[string]*laneState), byQueue: make(map[string]laneShard)}
	s.set(nil)
	return s
}

// set replaces the lanes by those registered now; lanes that stay keep
// their state.
func (s *laneScheduler) set(lanes []tasks.Lane) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lanes = append(lanes, tasks.Lane{Batch: staticLane, Priority: tasks.PriorityNormal, Shards: 1})
	keep := make(map[string]*laneState, len(lanes))
	for _, l := range lanes {
		st, ok := s.lanes[l.Batch]
		if !ok || st.lane != l {
			st = &laneState{lane: l, queues: l.Queues(), weight: float64(l.Priority.Weight()), until: make([]time.Time, l.Shards), streak: make([]int, l.Shards)}
			if l.Batch == staticLane {
				st.queues = []string{staticLane}
			}
			st.pass = s.vtime[st.class()]
		}
		keep[l.Batch] = st
	}
	s.lanes = keep
	clear(s.byQueue)
	s.order = s.order[:0]
	for _, st := range keep {
		s.order = append(s.order, st)
		for i, q := range st.queues {
			s.byQueue[q] = laneShard{st, i}
		}
	}
	slices.SortFunc(s.order, func(a, b *laneState) int { return cmp.Compare(a.lane.Batch, b.lane.Batch) })
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

// pick returns the queue to dequeue from next (staticLane for the static
// queues), or false when every lane waits after an empty answer, and the
// number of wake calls so far, for answered.
func (s *laneScheduler) pick(now time.Time) (queue string, gen uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gen = s.gen
	var best *laneState
	bestShard, bestPass := -1, 0.0
	for _, l := range s.order {
		if _, granted := s.limited(l); !granted {
			continue // not fetched until its pings are granted: it holds no slot
		}
		shard := l.shardAt(now)
		if shard < 0 {
			continue
		}
		pass := max(l.pass, s.vtime[l.class()])
		if best == nil || l.class() > best.class() || (l.class() == best.class() && pass < bestPass) {
			best, bestShard, bestPass = l, shard, pass
		}
	}
	if best == nil {
		return "", gen, false
	}
	s.vtime[best.class()] = bestPass
	best.pass = bestPass + best.step()
	if limited, _ := s.limited(best); limited {
		best.tokens -= best.cost()
	}
	best.next = bestShard + 1
	return best.queues[bestShard], gen, true
}

// answered records what a dequeue of queue, picked at wake count gen,
// found: nothing (empty, or paused) gives its lane back its turn and makes
// the shard wait, unless a wake call came since (the answer may miss the
// tasks it announced).
func (s *laneScheduler) answered(queue string, empty bool, gen uint64, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ls, ok := s.byQueue[queue]
	if !ok {
		return // the lane is gone meanwhile
	}
	l, i := ls.l, ls.shard
	if !empty {
		l.streak[i], l.until[i] = 0, time.Time{}
		return
	}
	l.pass -= l.step()
	if limited, _ := s.limited(l); limited {
		l.tokens += l.cost() // not spent
	}
	if gen != s.gen {
		return
	}
	l.streak[i]++
	l.until[i] = now.Add(min(s.backoff<<min(l.streak[i]-1, 10), maxLaneBackoff))
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
	for b, l := range s.lanes {
		if batch == "" || b == batch || b == staticLane {
			clear(l.until)
			clear(l.streak)
		}
	}
}

// tokenWant is a limited lane's request for pings to be granted.
type tokenWant struct {
	batch      string
	rate, want int
}

// wants returns the limited lanes that lack the pings of one task and
// may ask for them at now: at most a tenth of a second's worth each (the
// bucket's burst), at least one task's.
func (s *laneScheduler) wants(now time.Time) []tokenWant {
	s.mu.Lock()
	defer s.mu.Unlock()
	var w []tokenWant
	for _, l := range s.order {
		limited, granted := s.limited(l)
		if !limited || granted || now.Before(l.tokensAt) || l.shardAt(now) < 0 {
			continue
		}
		cost := l.cost()
		w = append(w, tokenWant{l.lane.Batch, l.lane.Rate, max(cost-l.tokens, min(max(1, l.lane.Rate/10), 4*cost))})
	}
	return w
}

// granted adds n pings to batch's lane, or, with none, makes it wait
// until retry before it asks again.
func (s *laneScheduler) granted(batch string, n int, retry time.Duration, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.lanes[batch]
	if !ok {
		return
	}
	l.tokens += n
	if n == 0 {
		l.tokensAt = now.Add(max(retry, time.Millisecond))
	}
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

// Granter grants a batch's pings at its own rate without waiting;
// *ratelimit.Limiter is one.
type Granter interface {
	Grant(ctx context.Context, batchID string, batchRate, n int) (int, time.Duration, error)
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
}

func newLaneReader(rdb redis.UniversalClient, rates Granter, s *laneScheduler, logger *slog.Logger) *laneReader {
	s.mu.Lock()
	s.gated = rates != nil
	s.mu.Unlock()
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
	r.s.set(lanes)
	return nil
}

// grant asks for the pings the limited lanes lack, once.
func (r *laneReader) grant(ctx context.Context) {
	now := time.Now()
	for _, w := range r.s.wants(now) {
		n, retry, err := r.rates.Grant(ctx, w.batch, w.rate, w.want)
		if err != nil {
			r.logger.Warn("rate limit of a batch", "batch", w.batch, "error", err)
			n, retry = 0, time.Second
		}
		r.s.granted(w.batch, n, retry, now)
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
