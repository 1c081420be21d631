package aggregator_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(deathsig.Spawner)) }

// stateShards, when set, splits every test batch's state into that many
// shards (aggregator.Config.StateShards): TestShardedLayout runs the
// package's tests again with it.
var stateShards, _ = strconv.Atoi(os.Getenv("PINGFLEET_TEST_STATE_SHARDS"))

func setup(t *testing.T, cfg aggregator.Config) (*aggregator.Aggregator, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	cfg.Client = srv.Client()
	if cfg.StateShards == 0 {
		cfg.StateShards = stateShards
	}
	agg, err := aggregator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return agg, srv
}

// keysOf returns every key of batch id.
func keysOf(t *testing.T, agg *aggregator.Aggregator, id string) []string {
	t.Helper()
	keys, err := agg.KeysOf(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func hosts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.%d.%d", i/250, i%250+1)
	}
	return out
}

func create(t *testing.T, agg *aggregator.Aggregator, id string, hs []string) {
	t.Helper()
	existed, err := agg.Create(context.Background(), aggregator.Batch{ID: id, Hosts: hs, Options: tasks.PingOptions{Count: 2}})
	if err != nil || existed {
		t.Fatalf("Create(%s) = %v, %v; want false, nil", id, existed, err)
	}
}

func up(host string, rtt float64) aggregator.Result {
	return aggregator.Result{Host: host, Status: aggregator.StatusUp, Sent: 2, Received: 2, RTTAvg: rtt, RTTMin: rtt, RTTMax: rtt}
}

func TestRecordCountsOnce(t *testing.T) {
	t.Parallel()
	agg, _ := setup(t, aggregator.Config{})
	ctx := context.Background()
	create(t, agg, "b1", []string{"127.0.0.1", "127.0.0.2"})

	for i, want := range []aggregator.Outcome{aggregator.Counted, aggregator.Duplicate, aggregator.Duplicate} {
		r := up("127.0.0.1", 1)
		if i > 0 { // a retried execution may find something else: the first result stands
			r = aggregator.Result{Host: "127.0.0.1", Status: aggregator.StatusDown, Sent: 2}
		}
		got, err := agg.Record(ctx, "b1", r)
		if err != nil || got != want {
			t.Fatalf("Record #%d = %v, %v; want %v", i, got, err, want)
		}
	}
	// A host outside the batch is never counted.
	if got, err := agg.Record(ctx, "b1", up("127.0.0.9", 1)); err != nil || got != aggregator.Duplicate {
		t.Fatalf("Record(foreign host) = %v, %v; want Duplicate", got, err)
	}
	s, err := agg.Summary(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Done != 1 || s.Up != 1 || s.Down != 0 || s.Sent != 2 || s.Pending != 1 || s.State != aggregator.StateEnqueuing {
		t.Errorf("summary after duplicates = %+v; want done 1, up 1, sent 2, pending 1, enqueuing", s)
	}
	var got []aggregator.Result
	if err := agg.Results(ctx, "b1", func(r aggregator.Result) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []aggregator.Result{up("127.0.0.1", 1), {Host: "127.0.0.2", Status: aggregator.StatusPending}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Results (-want +got):\n%s", diff)
	}
}

func TestRecordUnknownBatch(t *testing.T) {
	t.Parallel()
	agg, _ := setup(t, aggregator.Config{})
	_, err := agg.Record(context.Background(), "nope", up("127.0.0.1", 1))
	if !errors.Is(err, aggregator.ErrNotFound) {
		t.Fatalf("Record(unknown batch) error = %v; want ErrNotFound", err)
	}
}

// Two workers finishing the last two hosts at the same moment: exactly one
// of them is told the batch completed, every time.
func TestCompletionFiresOnce(t *testing.T) {
	t.Parallel()
	agg, _ := setup(t, aggregator.Config{})
	ctx := context.Background()
	for round := range 50 {
		id := fmt.Sprintf("race-%d", round)
		hs := hosts(4)
		create(t, agg, id, hs)
		for _, h := range hs[:2] {
			if _, err := agg.Record(ctx, id, up(h, 1)); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		outcomes := make([]aggregator.Outcome, 4)
		start := make(chan struct{})
		for i := range outcomes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				// Workers 0,1 record host 2 (a duplicate execution), 2,3 host 3.
				var err error
				outcomes[i], err = agg.Record(ctx, id, up(hs[2+i/2], 1))
				if err != nil {
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		completed := 0
		for _, o := range outcomes {
			if o == aggregator.Completed {
				completed++
			}
		}
		if completed != 1 {
			t.Fatalf("round %d: %d calls saw completion (%v); want exactly 1", round, completed, outcomes)
		}
		s, err := agg.Summary(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if s.State != aggregator.StateComplete || s.Done != 4 || s.Up != 4 || s.Finished.IsZero() {
			t.Fatalf("round %d: summary %+v; want complete with 4 up", round, s)
		}
	}
}

func TestKeysExpire(t *testing.T) {
	t.Parallel()
	agg, srv := setup(t, aggregator.Config{Retention: time.Hour})
	ctx := context.Background()
	rdb := srv.Client()
	create(t, agg, "ttl", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"})
	// Each key gets its TTL from the write that creates it: the results,
	// events and worker names with the first result (a down host here),
	// the RTT histogram with the first host up, which comes later.
	down := aggregator.Result{Host: "127.0.0.2", Status: aggregator.StatusDown, Sent: 2}
	for _, r := range []aggregator.Result{down, up("127.0.0.1", 1)} {
		if _, err := agg.Record(ctx, "ttl", r); err != nil {
			t.Fatal(err)
		}
		for _, k := range keysOf(t, agg, "ttl") {
			ttl, err := rdb.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl == -2 && stateShards > 0 {
				continue // a shard without results yet
			}
			// -2: the RTT histogram does not exist before the first host up.
			if (ttl <= 59*time.Minute || ttl > time.Hour) && !(ttl == -2 && reflect.DeepEqual(r, down) && strings.HasSuffix(k, ":rtt")) {
				t.Errorf("after %s %s: PTTL(%s) = %v; want about 1h", r.Host, r.Status, k, ttl)
			}
		}
	}
}

func TestSummaryMath(t *testing.T) {
	t.Parallel()
	agg, _ := setup(t, aggregator.Config{})
	ctx := context.Background()
	// 20 hosts up with average RTTs 1..20 ms, 3 down, 2 errors.
	hs := hosts(25)
	create(t, agg, "math", hs)
	for i := range 20 {
		r := aggregator.Result{Host: hs[i], Status: aggregator.StatusUp, Sent: 4, Received: 4, RTTAvg: float64(20 - i)}
		if i%5 == 0 { // one in five lost half its packets
			r.Received = 2
		}
		if _, err := agg.Record(ctx, "math", r); err != nil {
			t.Fatal(err)
		}
	}
	for i := 20; i < 23; i++ {
		if _, err := agg.Record(ctx, "math", aggregator.Result{Host: hs[i], Status: aggregator.StatusDown, Sent: 4}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 23; i < 25; i++ {
		out, err := agg.Record(ctx, "math", aggregator.Result{Host: hs[i], Status: aggregator.StatusError, Error: "resolve: no such host"})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]aggregator.Outcome{true: aggregator.Completed, false: aggregator.Counted}[i == 24]; out != want {
			t.Errorf("Record(host %d) = %v; want %v", i, out, want)
		}
	}
	s, err := agg.Summary(ctx, "math")
	if err != nil {
		t.Fatal(err)
	}
	// Nearest rank over 1..20: p50 = ceil(10)th = 10, p90 = 18th = 18,
	// p99 = ceil(19.8) = 20th = 20, each within the histogram's 0.5 %; the
	// maximum is exact. Sent 23*4 = 92, received 16*4+4*2 = 72.
	for _, p := range []struct {
		name      string
		got, want float64
	}{{"p50", s.RTTP50, 10}, {"p90", s.RTTP90, 18}, {"p99", s.RTTP99, 20}} {
		if math.Abs(p.got-p.want) > p.want*0.005 {
			t.Errorf("%s = %v; want %v within 0.5 %%", p.name, p.got, p.want)
		}
	}
	got := []float64{s.RTTMax, float64(s.Sent), float64(s.Received)}
	want := []float64{20, 92, 72}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("max, sent, received (-want +got):\n%s", diff)
	}
	if wantLoss := 21.739; s.LossPct != wantLoss { // 20 of 92, to a thousandth of a percent
		t.Errorf("LossPct = %v; want %v", s.LossPct, wantLoss)
	}
	if s.Up != 20 || s.Down != 3 || s.Error != 2 || s.Done != 25 || s.Pending != 0 || s.State != aggregator.StateComplete {
		t.Errorf("counts = %+v", s)
	}
	var downAndError []string
	err = agg.Results(ctx, "math", func(r aggregator.Result) error {
		downAndError = append(downAndError, r.Host+":"+string(r.Status))
		return nil
	}, aggregator.StatusDown, aggregator.StatusError)
	if err != nil {
		t.Fatal(err)
	}
	wantDE := []string{hs[20] + ":down", hs[21] + ":down", hs[22] + ":down", hs[23] + ":error", hs[24] + ":error"}
	if diff := cmp.Diff(wantDE, downAndError); diff != "" {
		t.Errorf("Results(down, error) (-want +got):\n%s", diff)
	}
}

func TestCreateIdempotent(t *testing.T) {
	t.Parallel()
	agg, srv := setup(t, aggregator.Config{})
	ctx := context.Background()
	hs := hosts(2500) // more than one loading chunk
	create(t, agg, "again", hs)
	existed, err := agg.Create(ctx, aggregator.Batch{ID: "again", Hosts: hs, Options: tasks.PingOptions{Count: 2}})
	if err != nil || !existed {
		t.Fatalf("second Create = %v, %v; want true, nil", existed, err)
	}
	if n := srv.Client().LLen(ctx, aggregator.Keys("again")[1]).Val(); n != 2500 {
		t.Errorf("host list length after re-create = %d; want 2500", n)
	}
	_, err = agg.Create(ctx, aggregator.Batch{ID: "again", Hosts: hs[:10], Options: tasks.PingOptions{Count: 2}})
	if !errors.Is(err, aggregator.ErrConflict) {
		t.Errorf("Create with other hosts: error %v; want ErrConflict", err)
	}
}

func TestRecent(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	agg, _ := setup(t, aggregator.Config{Now: func() time.Time { return now }})
	for i := range 3 {
		now = now.Add(time.Second)
		create(t, agg, fmt.Sprintf("r%d", i), []string{"127.0.0.1"})
	}
	list, err := agg.Recent(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	if diff := cmp.Diff([]string{"r2", "r1"}, ids); diff != "" {
		t.Errorf("Recent(2) (-want +got):\n%s", diff)
	}
}

// Many workers recording through one Batcher, every host twice and after
// the script cache was flushed: each counted once, completion seen once.
func TestBatcherExactlyOnce(t *testing.T) {
	t.Parallel()
	agg, srv := setup(t, aggregator.Config{})
	ctx := context.Background()
	hs := hosts(2000)
	create(t, agg, "batched", hs)
	if err := srv.Client().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	b := startBatcher(t, agg, 64)
	defer b.Close()
	var mu sync.Mutex
	outcomes := map[aggregator.Outcome]int{}
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Go(func() {
			for i := w; i < len(hs)*2; i += 50 {
				o, err := b.Record(ctx, "batched", up(hs[i%len(hs)], float64(i%len(hs))))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				outcomes[o]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	want := map[aggregator.Outcome]int{aggregator.Counted: 1999, aggregator.Completed: 1, aggregator.Duplicate: 2000}
	if diff := cmp.Diff(want, outcomes); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	s, err := agg.Summary(ctx, "batched")
	if err != nil {
		t.Fatal(err)
	}
	if s.Done != 2000 || s.Up != 2000 || s.Sent != 4000 || s.State != aggregator.StateComplete {
		t.Errorf("summary = %+v", s)
	}
	if _, err := b.Record(ctx, "nope", up("127.0.0.1", 1)); !errors.Is(err, aggregator.ErrNotFound) {
		t.Errorf("Record(unknown batch) error = %v; want ErrNotFound", err)
	}
}

// Results of several batches, of every status, duplicates among them, and
// of a batch that does not exist, written by one Batcher at once: each
// batch counts each host once, in its own script call.
func TestBatcherMixedBatches(t *testing.T) {
	t.Parallel()
	agg, srv := setup(t, aggregator.Config{Retention: time.Hour})
	ctx := context.Background()
	hs := hosts(300)
	create(t, agg, "a", hs)
	create(t, agg, "b", hs[:150])
	result := func(i int) aggregator.Result {
		switch i % 3 {
		case 0:
			return up(hs[i], float64(i))
		case 1:
			return aggregator.Result{Host: hs[i], Status: aggregator.StatusDown, Sent: 2, LossPct: 100}
		default:
			return aggregator.Result{Host: hs[i], Status: aggregator.StatusError}
		}
	}
	b := startBatcher(t, agg, 0)
	defer b.Close()
	var mu sync.Mutex
	outcomes := map[string]map[aggregator.Outcome]int{"a": {}, "b": {}}
	var notFound atomic.Int64
	var wg sync.WaitGroup
	for w := range 40 {
		wg.Go(func() {
			for i := w; i < 600; i += 40 {
				// Batch a gets every host, most of them twice; b a
				// quarter of its hosts, so it stays incomplete.
				id, r := "a", result(i%300)
				if i%4 == 1 && i < 150 {
					id = "b"
				}
				if i%50 == 7 {
					if _, err := b.Record(ctx, "gone", r); !errors.Is(err, aggregator.ErrNotFound) {
						t.Errorf("Record(gone, %s) error = %v; want ErrNotFound", r.Host, err)
					}
					notFound.Add(1)
				}
				o, err := b.Record(ctx, id, r)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				outcomes[id][o]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if notFound.Load() == 0 {
		t.Fatal("no result for a missing batch was written")
	}
	for _, id := range []string{"a", "b"} {
		s, err := agg.Summary(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		counted := outcomes[id][aggregator.Counted] + outcomes[id][aggregator.Completed]
		var want aggregator.Summary
		err = agg.Results(ctx, id, func(r aggregator.Result) error {
			if diff := cmp.Diff(result(slices.Index(hs, r.Host)), r); diff != "" {
				t.Errorf("batch %s, result of %s (-want +got):\n%s", id, r.Host, diff)
			}
			switch r.Status {
			case aggregator.StatusUp:
				want.Up++
			case aggregator.StatusDown:
				want.Down++
			default:
				want.Error++
			}
			want.Sent += r.Sent
			want.Received += r.Received
			want.Done++
			return nil
		}, aggregator.StatusUp, aggregator.StatusDown, aggregator.StatusError)
		if err != nil {
			t.Fatal(err)
		}
		if s.Done != counted || s.Done != want.Done || s.Up != want.Up || s.Down != want.Down || s.Error != want.Error || s.Sent != want.Sent || s.Received != want.Received {
			t.Errorf("batch %s: summary %+v; want %+v from its %d results (%d counted)", id, s, want, want.Done, counted)
		}
		complete := s.Done == s.Total
		if complete != (s.State == aggregator.StateComplete) || outcomes[id][aggregator.Completed] != map[bool]int{true: 1}[complete] {
			t.Errorf("batch %s: %d of %d done, state %s, %d results completed it", id, s.Done, s.Total, s.State, outcomes[id][aggregator.Completed])
		}
		inHist := 0
		for _, k := range keysOf(t, agg, id) {
			if !strings.HasSuffix(k, ":rtt") {
				continue
			}
			hist, err := srv.Client().HGetAll(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range hist {
				v, _ := strconv.Atoi(n)
				inHist += v
			}
		}
		if inHist != s.Up {
			t.Errorf("batch %s: %d RTTs in the histogram; want %d", id, inHist, s.Up)
		}
		events := readEvents(t, agg, id, "")
		if len(events) != s.Done+map[bool]int{true: 1}[complete] {
			t.Errorf("batch %s: %d events; want a result event per host done (%d), and one complete event if complete", id, len(events), s.Done)
		}
		for _, k := range keysOf(t, agg, id) {
			ttl, err := srv.Client().PTTL(ctx, k).Result()
			if (complete || stateShards > 0) && strings.HasSuffix(k, ":pending") && ttl == -2 {
				continue // a set that empties is deleted
			}
			if stateShards > 0 && ttl == -2 && k == "pingfleet:{"+id+"}:rtt" {
				continue // a sharded batch's histograms are its shards'
			}
			if stateShards > 0 && ttl == -2 && !strings.Contains(k, ":s") {
				continue // a sharded batch's per-host keys are its shards'
			}
			if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
				t.Errorf("PTTL(%s) = %v, %v; want about 1h", k, ttl, err)
			}
		}
	}
	if a := outcomes["a"]; a[aggregator.Completed] != 1 {
		t.Errorf("batch a: outcomes %v; want it completed", a)
	}
}

// A finished batch keeps one compact record per host and its host list:
// no pending set, an event stream cut to its tail, and at most 200 bytes
// per host in all (MEMORY USAGE of every key).
func TestFinishedBatchIsCompact(t *testing.T) {
	t.Parallel()
	agg, srv := setup(t, aggregator.Config{})
	ctx := context.Background()
	rdb := srv.Client()
	const n = 20000 // past every small encoding of hashes, lists and streams
	hs := make([]string, n)
	for i := range hs {
		hs[i] = fmt.Sprintf("127.%d.%d.%d", 1+i/62500, (i/250)%250, i%250+1)
	}
	create(t, agg, "compact", hs)
	b := startBatcher(t, agg, 0)
	defer b.Close()
	start := time.Date(2026, 12, 1, 17, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < n; i += 32 {
				rtt := float64(20_000+i%50_000) / 1e6 // 20-70 µs, as on loopback
				r := aggregator.Result{Host: hs[i], IP: hs[i], Status: aggregator.StatusUp, Sent: 1, Received: 1,
					RTTMin: rtt, RTTAvg: rtt, RTTMax: rtt, ReplyTTL: 64, Attempts: 1, Worker: "worker-7f9c2d:31337",
					Started: start.Add(time.Duration(i) * time.Millisecond), Finished: start.Add(time.Duration(i+1) * time.Millisecond)}
				if _, err := b.Record(ctx, "compact", r); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s, err := agg.Summary(ctx, "compact")
	if err != nil || s.State != aggregator.StateComplete || s.Up != n {
		t.Fatalf("summary %+v, %v; want complete with %d up", s, err, n)
	}
	var total int64
	sizes := map[string]int64{}
	for _, k := range keysOf(t, agg, "compact") {
		size, err := rdb.MemoryUsage(ctx, k, 0).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes[k[strings.LastIndexByte(k, ':')+1:]] += size
		total += size
		switch {
		case strings.HasSuffix(k, ":pending"):
			t.Errorf("the pending set %s outlived the batch", k)
		case strings.HasSuffix(k, ":events"):
			if l := rdb.XLen(ctx, k).Val(); l > 1000 {
				t.Errorf("the event stream %s keeps %d entries; want at most 1000", k, l)
			}
			entries := rdb.XRange(ctx, k, "-", "+").Val()
			for _, e := range entries[:len(entries)-1] {
				if len(e.Values) != 1 || e.Values["h"] == nil {
					t.Fatalf("stream entry %v holds more than its host", e)
				}
			}
		}
	}
	perHost := float64(total) / n
	t.Logf("finished batch of %d hosts: %.0f bytes per host in Redis (%v)", n, perHost, sizes)
	if perHost > 200 {
		t.Errorf("%.0f bytes per host in Redis; want at most 200 (%v)", perHost, sizes)
	}
}

// An Aggregator without events records, completes and finalizes batches
// as any other, and keeps no event stream for them.
func TestNoEvents(t *testing.T) {
	t.Parallel()
	agg, srv := setup(t, aggregator.Config{NoEvents: true})
	ctx := context.Background()
	hs := hosts(5)
	create(t, agg, "quiet", hs)
	create(t, agg, "quiet-cancelled", hs)
	for i, h := range hs {
		o, err := agg.Record(ctx, "quiet", up(h, 1))
		if want := map[bool]aggregator.Outcome{true: aggregator.Completed, false: aggregator.Counted}[i == len(hs)-1]; err != nil || o != want {
			t.Fatalf("Record(%s) = %v, %v; want %v", h, o, err, want)
		}
	}
	if _, err := agg.Finalize(ctx, "quiet-cancelled", aggregator.StateCancelled); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"quiet", "quiet-cancelled"} {
		if s, err := agg.Summary(ctx, id); err != nil || !s.Completed() || s.Done != 5 {
			t.Errorf("summary of %s: %+v, %v; want final, 5 done", id, s, err)
		}
		for _, k := range keysOf(t, agg, id) {
			if strings.HasSuffix(k, ":events") && srv.Client().Exists(ctx, k).Val() != 0 {
				t.Errorf("batch %s has an event stream, %s", id, k)
			}
		}
	}
}

func startBatcher(t *testing.T, agg *aggregator.Aggregator, size int) *aggregator.Batcher {
	t.Helper()
	b, err := aggregator.NewBatcher(aggregator.BatcherConfig{Aggregator: agg, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// A batch started when its first ping did, not when its first result was
// counted: results come back out of order.
func TestSummaryStartedAtFirstPing(t *testing.T) {
	t.Parallel()
	agg, _ := setup(t, aggregator.Config{})
	ctx := context.Background()
	create(t, agg, "first-ping", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"})
	start := time.Now().Add(-time.Minute).Truncate(time.Millisecond).UTC()
	for i, host := range []string{"10.0.0.1", "10.0.0.2"} { // the second began first
		r := aggregator.Result{Host: host, Status: aggregator.StatusDown, Sent: 1, Started: start.Add(time.Duration(5-4*i) * time.Second)}
		if _, err := agg.Record(ctx, "first-ping", r); err != nil {
			t.Fatal(err)
		}
	}
	b := startBatcher(t, agg, 0)
	if _, err := b.Record(ctx, "first-ping", aggregator.Result{Host: "10.0.0.3", Status: aggregator.StatusDown, Sent: 1, Started: start}); err != nil {
		t.Fatal(err)
	}
	s, err := agg.Summary(ctx, "first-ping")
	if err != nil || !s.Started.Equal(start) {
		t.Errorf("started %v (%v); want %v, the earliest ping's start", s.Started, err, start)
	}
}

// Every test of the package again, each batch's state split into three
// shards: the layout a large batch gets on a Redis Cluster, here on one
// Redis, so each test's figures, outcomes and reads are checked on it too.
func TestShardedLayout(t *testing.T) {
	if stateShards > 0 {
		t.Skip("this run is the sharded one")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^Test", "-test.skip", "^TestShardedLayout$", "-test.timeout", "5m")
	cmd.Env = append(os.Environ(), "PINGFLEET_TEST_STATE_SHARDS=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the package's tests with 3 state shards: %v\n%s", err, out)
	}
}

// On a Redis Cluster of three masters, a batch of 3,000 hosts gets a shard
// of state on each master by default; written by two Batchers at once,
// each result twice, it counts each host once, completes once, and reads
// back in submission order with the right figures.
func TestClusterSpreadsBatchState(t *testing.T) {
	t.Parallel()
	rdb := redistest.StartClusterClient(t, 3)
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hs := hosts(3000)
	create(t, agg, "spread", hs)
	small := hosts(10)
	create(t, agg, "small", small)

	m, err := tasks.ReadSlotMap(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	masters := map[string]int{}
	for _, k := range keysOf(t, agg, "spread") {
		if strings.HasSuffix(k, ":shard") {
			masters[m.Master(tasks.Slot(k))]++
		}
	}
	if len(masters) != 3 {
		t.Errorf("the batch's shards are on %v; want one on each of the 3 masters", masters)
	}
	if keys := keysOf(t, agg, "small"); len(keys) != len(aggregator.Keys("small")) {
		t.Errorf("a 10-host batch has keys %v; want one tag's", keys)
	}

	var completed atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		b := startBatcher(t, agg, 0)
		for w := range 20 {
			wg.Go(func() {
				for i := w; i < len(hs); i += 20 {
					o, err := b.Record(ctx, "spread", up(hs[i], float64(1+i%50)))
					if err != nil {
						t.Error(err)
						return
					}
					if o == aggregator.Completed {
						completed.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	if n := completed.Load(); n != 1 {
		t.Errorf("%d results completed the batch; want 1", n)
	}
	s, err := agg.Summary(ctx, "spread")
	if err != nil {
		t.Fatal(err)
	}
	if s.State != aggregator.StateComplete || s.Done != 3000 || s.Up != 3000 || s.Sent != 6000 || s.RTTMax != 50 || s.RTTP50 < 24 || s.RTTP50 > 26 {
		t.Errorf("summary %+v; want complete, 3000 up, p50 about 25 ms, max 50 ms", s)
	}
	i := 0
	err = agg.Results(ctx, "spread", func(r aggregator.Result) error {
		if r.Host != hs[i] || r.Status != aggregator.StatusUp || r.RTTAvg != float64(1+i%50) {
			t.Errorf("result %d = %+v; want %s up at %d ms", i, r, hs[i], 1+i%50)
		}
		i++
		return nil
	})
	if err != nil || i != len(hs) {
		t.Errorf("Results: %d hosts, %v; want %d", i, err, len(hs))
	}
	if evs := readEvents(t, agg, "spread", ""); len(evs) != 3001 || evs[3000].Type != "complete" {
		t.Errorf("events: %d; want 3000 results and the complete event", len(evs))
	}
}

// A Create that stopped before indexing its batch (killed between the
// record and the indexes): the next Create of the same batch indexes it,
// so that listings and the janitor see it.
func TestCreateResumedIsIndexed(t *testing.T) {
	t.Parallel()
	agg, srv := setup(t, aggregator.Config{})
	ctx := context.Background()
	hs := hosts(3)
	create(t, agg, "unindexed", hs)
	rdb := srv.Client()
	rdb.ZRem(ctx, "pingfleet:open", "unindexed")
	rdb.ZRem(ctx, "pingfleet:batches", "unindexed")
	if existed, err := agg.Create(ctx, aggregator.Batch{ID: "unindexed", Hosts: hs, Options: tasks.PingOptions{Count: 2}}); err != nil || !existed {
		t.Fatalf("Create again = %v, %v; want existed", existed, err)
	}
	for _, k := range []string{"pingfleet:open", "pingfleet:batches"} {
		if _, err := rdb.ZScore(ctx, k, "unindexed").Result(); err != nil {
			t.Errorf("%s: batch not indexed after the second Create: %v", k, err)
		}
	}
}
