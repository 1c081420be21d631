package ratelimit_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/ratelimit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(deathsig.Spawner)) }

func newLimiter(t *testing.T, cfg ratelimit.Config) *ratelimit.Limiter {
	t.Helper()
	l, err := ratelimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// countHook counts everything a Redis client does (dials and commands), and
// apart the scripts Redis ran.
type countHook struct{ n, scripts atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.n.Add(1)
		return next(ctx, network, addr)
	}
}

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		err := next(ctx, cmd)
		if name := cmd.Name(); err == nil && (name == "eval" || name == "evalsha") {
			h.scripts.Add(1)
		}
		return err
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// offlineClient returns a client of an address nobody listens on, and a
// counter of what it tried to do.
func offlineClient(t *testing.T) (*redis.Client, *countHook) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	h := &countHook{}
	c.AddHook(h)
	return c, h
}

// grants calls Wait(ctx, batch, rate, 1) from the given number of goroutines
// until ctx ends, or until stopAfter grants if stopAfter > 0, and returns when each grant
// came.
func grants(ctx context.Context, l *ratelimit.Limiter, batch string, rate, goroutines, stopAfter int) ([]time.Time, error) {
	var (
		mu  sync.Mutex
		got []time.Time
	)
	g, ctx := errgroup.WithContext(ctx)
	for range goroutines {
		g.Go(func() error {
			for {
				if err := l.Wait(ctx, batch, rate, 1); err != nil {
					if ctx.Err() != nil {
						return nil //nolint:nilerr // the test's time is up: not a failure
					}
					return err
				}
				mu.Lock()
				got = append(got, time.Now())
				done := stopAfter > 0 && len(got) >= stopAfter
				mu.Unlock()
				if done {
					return nil
				}
			}
		})
	}
	err := g.Wait()
	return got, err
}

// checkRate fails t unless the grants kept to rate per second from the first
// to the last: a full bucket of burst at once, then rate per second, within
// 10 %. This asserts how many tokens were handed out, not how fast.
func checkRate(t *testing.T, name string, at []time.Time, rate, burst int) {
	t.Helper()
	if len(at) < 2 {
		t.Errorf("%s: %d grants; want many", name, len(at))
		return
	}
	slices.SortFunc(at, time.Time.Compare)
	window := at[len(at)-1].Sub(at[0]).Seconds()
	want := float64(rate)*window + float64(burst)
	got := float64(len(at))
	t.Logf("%s: %d grants in %.3fs; %d/s with burst %d allows %.1f (%+.1f%%)",
		name, len(at), window, rate, burst, want, 100*(got-want)/want)
	if got < 0.9*want || got > 1.1*want {
		t.Errorf("%s: %d grants in %.3fs; want %.1f ± 10%% (%d/s, burst %d)", name, len(at), window, want, rate, burst)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	client, _ := offlineClient(t)
	tests := []struct {
		desc    string
		cfg     ratelimit.Config
		wantErr string
	}{
		{desc: "no limits", cfg: ratelimit.Config{Client: client}},
		{desc: "fleet limit", cfg: ratelimit.Config{Client: client, FleetRate: 100, Burst: 5}},
		{desc: "no client", cfg: ratelimit.Config{FleetRate: 100}, wantErr: "ratelimit: Config.Client is required"},
		{desc: "negative rate", cfg: ratelimit.Config{Client: client, FleetRate: -1}, wantErr: "ratelimit: negative fleet rate -1"},
		{desc: "negative burst", cfg: ratelimit.Config{Client: client, FleetRate: 1, Burst: -2}, wantErr: "ratelimit: negative burst -2"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := ratelimit.New(tt.cfg)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff(tt.wantErr, gotErr); diff != "" {
				t.Errorf("New error (-want +got):\n%s", diff)
			}
		})
	}
}

// Without a limit that applies, or with nothing to wait for, Wait answers
// without Redis: the client's server does not even exist.
func TestWaitWithoutRedis(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		desc      string
		fleetRate int
		ctx       context.Context
		batchID   string
		batchRate int
		n         int
		wantErr   string
	}{
		{desc: "no limits", ctx: context.Background(), batchID: "b", n: 1},
		{desc: "no limits, many pings", ctx: context.Background(), batchID: "b", n: 1000},
		{desc: "no limits, no batch", ctx: context.Background(), n: 1},
		{desc: "no limits, context ended", ctx: cancelled, batchID: "b", n: 1},
		{desc: "nothing to wait for", fleetRate: 10, ctx: context.Background(), batchID: "b", batchRate: 10},
		{desc: "negative count", fleetRate: 10, ctx: context.Background(), n: -1, wantErr: "rate limit: negative count -1"},
		{desc: "negative batch rate", ctx: context.Background(), batchID: "b", batchRate: -5, n: 1, wantErr: "rate limit batch b: negative rate -5"},
		{desc: "batch rate without ID", ctx: context.Background(), batchRate: 5, n: 1, wantErr: "rate limit: batch rate without batch ID"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			client, calls := offlineClient(t)
			l := newLimiter(t, ratelimit.Config{Client: client, FleetRate: tt.fleetRate})
			for range 100 {
				err := l.Wait(tt.ctx, tt.batchID, tt.batchRate, tt.n)
				gotErr := ""
				if err != nil {
					gotErr = err.Error()
				}
				if diff := cmp.Diff(tt.wantErr, gotErr); diff != "" {
					t.Fatalf("Wait error (-want +got):\n%s", diff)
				}
			}
			if n := calls.n.Load(); n != 0 {
				t.Errorf("Wait used Redis %d times; want none", n)
			}
		})
	}
}

// Four limiters on four connections stand for four worker processes: together
// they keep to the fleet rate.
func TestWaitFleetRateAcrossProcesses(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const rate, burst, workers = 200, 20, 4 // burst: the default, FleetRate/10
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()

	var (
		mu  sync.Mutex
		all []time.Time
	)
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		l := newLimiter(t, ratelimit.Config{Client: srv.Client(), FleetRate: rate})
		g.Go(func() error {
			at, err := grants(gctx, l, "b", 0, 1, 0)
			mu.Lock()
			all = append(all, at...)
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	checkRate(t, "fleet", all, rate, burst)
}

// A batch's limit holds back that batch only.
func TestWaitBatchRate(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := newLimiter(t, ratelimit.Config{Client: srv.Client()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()

	batches := []struct {
		id         string
		rate       int // 0: no batch limit
		goroutines int
		max        int // stop after that many grants; 0: run until ctx ends
	}{
		{id: "slow", rate: 50, goroutines: 3},
		{id: "other", rate: 50, goroutines: 3},
		{id: "fast", goroutines: 2, max: 10000},
	}
	got := make([][]time.Time, len(batches))
	var g errgroup.Group
	for i, b := range batches {
		g.Go(func() (err error) {
			got[i], err = grants(ctx, l, b.id, b.rate, b.goroutines, b.max)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for i, b := range batches {
		if b.rate == 0 {
			// Never held back: all its grants came before the others' time was up.
			if len(got[i]) < b.max {
				t.Errorf("%s: %d grants; want %d", b.id, len(got[i]), b.max)
			}
			continue
		}
		checkRate(t, b.id, got[i], b.rate, max(1, b.rate/10))
	}
}

// With a fleet and a batch limit, the lower one governs.
func TestWaitLowerLimitGoverns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		fleetRate int
		batchRate int
		wantRate  int
		wantBurst int
	}{
		{desc: "fleet lower", fleetRate: 40, batchRate: 1000, wantRate: 40, wantBurst: 4},
		{desc: "batch lower", fleetRate: 1000, batchRate: 40, wantRate: 40, wantBurst: 4},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			l := newLimiter(t, ratelimit.Config{Client: srv.Client(), FleetRate: tt.fleetRate})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			at, err := grants(ctx, l, "01ABC", tt.batchRate, 3, 0)
			if err != nil {
				t.Fatal(err)
			}
			checkRate(t, tt.desc, at, tt.wantRate, tt.wantBurst)
		})
	}
}

// The buckets live where the rest of pingfleet's keys do; a batch's carries
// its hash tag. redis_rate adds its own "rate:" prefix.
func TestWaitKeys(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := newLimiter(t, ratelimit.Config{Client: srv.Client(), FleetRate: 10})
	ctx := context.Background()
	if err := l.Wait(ctx, "01ABC", 10, 1); err != nil {
		t.Fatal(err)
	}
	keys, err := srv.Client().Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	if diff := cmp.Diff([]string{"rate:pingfleet:rate", "rate:pingfleet:{01ABC}:rate"}, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
}

func TestWaitCancelled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		fleetRate int
		batchRate int
	}{
		{desc: "fleet", fleetRate: 1},
		{desc: "batch", batchRate: 1},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			l := newLimiter(t, ratelimit.Config{Client: srv.Client(), FleetRate: tt.fleetRate})
			// Take the only token: the next comes in a second.
			if err := l.Wait(context.Background(), "b", tt.batchRate, 1); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			stop := time.AfterFunc(100*time.Millisecond, cancel)
			defer stop.Stop()
			// Several callers: the head of the line sleeps, the others queue.
			errs := make([]error, 3)
			var wg sync.WaitGroup
			for i := range errs {
				wg.Go(func() { errs[i] = l.Wait(ctx, "b", tt.batchRate, 1) })
			}
			wg.Wait()
			for i, err := range errs {
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Wait #%d = %v; want %v", i, err, context.Canceled)
				}
			}
		})
	}
}

// A Redis failure is an error the task can retry, not a hang.
func TestWaitRedisDown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		fleetRate int
		batchRate int
	}{
		{desc: "fleet", fleetRate: 100},
		{desc: "batch", batchRate: 100},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			l := newLimiter(t, ratelimit.Config{Client: srv.Client(), FleetRate: tt.fleetRate})
			if err := l.Wait(context.Background(), "b", tt.batchRate, 1); err != nil {
				t.Fatal(err)
			}
			srv.Kill()
			// The server dies a moment after the signal: wait until it is gone.
			deadline := time.Now().Add(10 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := l.Wait(ctx, "b", tt.batchRate, 1)
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Wait = %v; want a Redis error before the deadline", err)
				}
				if err != nil {
					t.Logf("Wait = %v", err)
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("Wait kept succeeding after Redis was killed")
				}
			}
		})
	}
}

// A count above the burst is served in several steps, not refused forever.
func TestWaitMoreThanBurst(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		fleetRate int
		burst     int
		batchRate int
		n         int
		rate      int // of the bucket that governs
		wantBurst int
	}{
		{desc: "fleet, default burst", fleetRate: 10, n: 5, rate: 10, wantBurst: 1},
		{desc: "fleet, burst 3", fleetRate: 20, burst: 3, n: 7, rate: 20, wantBurst: 3},
		{desc: "batch", batchRate: 10, n: 5, rate: 10, wantBurst: 1},
		{desc: "both", fleetRate: 100, batchRate: 20, n: 6, rate: 20, wantBurst: 2},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			l := newLimiter(t, ratelimit.Config{Client: srv.Client(), FleetRate: tt.fleetRate, Burst: tt.burst})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			if err := l.Wait(ctx, "b", tt.batchRate, tt.n); err != nil {
				t.Fatal(err)
			}
			// A lower bound, not a speed: the tokens above the burst
			// must have been earned at the bucket's rate.
			earned := time.Duration(tt.n-tt.wantBurst) * time.Second / time.Duration(tt.rate)
			if took := time.Since(start); took < earned*9/10 {
				t.Errorf("Wait(n=%d) returned after %v; want at least %v", tt.n, took, earned)
			}
		})
	}
}

// Callers of one process held back by the same bucket wait in line: Redis
// sees a few requests per token, not one per waiting caller.
func TestWaitQueuesInProcess(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := srv.Client()
	calls := &countHook{}
	client.AddHook(calls)
	const rate, burst, callers = 50, 5, 100
	l := newLimiter(t, ratelimit.Config{Client: client, FleetRate: rate})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	at, err := grants(ctx, l, "b", 0, callers, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRate(t, "fleet", at, rate, burst)
	// About two per grant (the new head of the line is refused, sleeps,
	// is granted), plus the first try of each caller before the line
	// formed. Without the line it would be one per caller per token.
	t.Logf("%d rate scripts for %d grants to %d callers", calls.scripts.Load(), len(at), callers)
	if n, most := calls.scripts.Load(), int64(3*len(at)+callers); n > most {
		t.Errorf("%d rate scripts for %d grants to %d callers; want at most %d", n, len(at), callers, most)
	}
}

// Grant hands out a bucket's tokens all or none, without waiting: two
// grantees asking every 10 ms for a few at a time together get the
// bucket's rate, not less (a grant of what is there would lose the
// fraction of a token it cannot give each time). Each kind of bucket has a
// key of its own; a bucket that does not exist is an error.
func TestGrant(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	l := newLimiter(t, ratelimit.Config{Client: rdb, FleetRate: 200})
	if l.FleetRate() != 200 {
		t.Errorf("FleetRate() = %d; want 200", l.FleetRate())
	}
	ctx := context.Background()
	for key, b := range map[string]ratelimit.Bucket{
		"rate:pingfleet:rate":               {Kind: ratelimit.FleetBucket},
		"rate:pingfleet:{B1}:rate":          {Kind: ratelimit.BatchBucket, ID: "B1", Rate: 200},
		"rate:pingfleet:tenant:{acme}:rate": {Kind: ratelimit.TenantBucket, ID: "acme", Rate: 200},
	} {
		var got atomic.Int64
		var g errgroup.Group
		start := time.Now()
		for range 2 {
			g.Go(func() error {
				for time.Since(start) < time.Second {
					n, _, err := l.Grant(ctx, b, 4)
					if err != nil {
						return err
					}
					if n != 0 && n != 4 {
						t.Errorf("granted %d of 4; want all or none", n)
					}
					got.Add(int64(n))
					time.Sleep(10 * time.Millisecond)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		el := time.Since(start).Seconds()
		// The burst (20) at once, then 200 a second.
		if n := float64(got.Load()); n < 0.9*(20+200*el)-4 || n > 20+200*el+4 {
			t.Errorf("%+v: %v tokens in %.2f s; want 20 + 200 a second", b, n, el)
		}
		if rdb.Exists(ctx, key).Val() != 1 {
			t.Errorf("%+v: no key %s", b, key)
		}
	}
	noFleet := newLimiter(t, ratelimit.Config{Client: rdb})
	for _, b := range []ratelimit.Bucket{{Kind: ratelimit.FleetBucket}, {Kind: ratelimit.BatchBucket, ID: "B1"}, {Kind: ratelimit.TenantBucket, Rate: 5}} {
		if _, _, err := noFleet.Grant(ctx, b, 1); err == nil {
			t.Errorf("Grant(%+v): no error; want one (no such bucket)", b)
		}
	}
	if n, _, err := noFleet.Grant(ctx, ratelimit.Bucket{Kind: ratelimit.BatchBucket, ID: "slow", Rate: 1}, 1); n != 1 || err != nil {
		t.Errorf("first grant of a 1/s bucket: %d, %v; want 1", n, err)
	} else if n, retry, _ := noFleet.Grant(ctx, ratelimit.Bucket{Kind: ratelimit.BatchBucket, ID: "slow", Rate: 1}, 1); n != 0 || retry < 900*time.Millisecond || retry > time.Second {
		t.Errorf("second grant of a 1/s bucket: %d, retry %v; want none for about 1 s", n, retry)
	}
}
