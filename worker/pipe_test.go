package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/internal/redistest"
)

func TestRecognizeAsynqScripts(t *testing.T) {
	t.Parallel()
	q := "asynq:{pingfleet-3}"
	dequeueKeys := []string{q + ":pending", q + ":paused", q + ":active", q + ":lease"}
	doneKeys := []string{q + ":active", q + ":lease", q + ":t:b/h", q + ":processed:2026-12-01", q + ":processed"}
	for _, tc := range []struct {
		desc          string
		keys          []string
		args          []any
		dequeue, done bool
	}{
		{"asynq dequeue", dequeueKeys, []any{int64(1764612345), q + ":t:"}, true, false},
		{"asynq done", doneKeys, []any{"b/h", int64(1772388345), int64(1<<63 - 1)}, false, true},
		{"done of another task", doneKeys, []any{"b/x", int64(1), int64(1)}, false, false},
		{"done with a uniqueness lock", append(doneKeys, "asynq:{q}:unique:x"), []any{"b/h", int64(1), int64(1)}, false, false},
		{"keys of two queues", []string{"asynq:{a}:pending", "asynq:{a}:paused", "asynq:{b}:active", "asynq:{b}:lease"}, []any{int64(1), "asynq:{a}:t:"}, false, false},
		{"another prefix", dequeueKeys, []any{int64(1), "asynq:{other}:t:"}, false, false},
		{"not asynq's", []string{"x:pending", "x:paused", "x:active", "x:lease"}, []any{int64(1), "x:t:"}, false, false},
		{"a day counter of another queue", []string{q + ":active", q + ":lease", q + ":t:b/h", "asynq:{x}:processed:2026-12-01", q + ":processed"}, []any{"b/h", int64(1), int64(1)}, false, false},
		{"a task key with more after the ID", []string{q + ":active", q + ":lease", q + ":t:b/hx", q + ":processed:2026-12-01", q + ":processed"}, []any{"b/h", int64(1), int64(1)}, false, false},
		{"no keys", nil, nil, false, false},
	} {
		if got := isDequeue(tc.keys, tc.args); got != tc.dequeue {
			t.Errorf("%s: isDequeue = %v; want %v", tc.desc, got, tc.dequeue)
		}
		if got := isDone(tc.keys, tc.args); got != tc.done {
			t.Errorf("%s: isDone = %v; want %v", tc.desc, got, tc.done)
		}
	}
}

// Recognising a call builds no string: it runs for every script call.
func TestRecognizeAllocatesNothing(t *testing.T) {
	q := "asynq:{pingfleet-3}"
	dk := []string{q + ":pending", q + ":paused", q + ":active", q + ":lease"}
	da := []any{int64(1764612345), q + ":t:"}
	ak := []string{q + ":active", q + ":lease", q + ":t:b/h", q + ":processed:2026-12-01", q + ":processed"}
	aa := []any{"b/h", int64(1772388345), int64(1<<63 - 1)}
	if n := testing.AllocsPerRun(100, func() {
		if !isDequeue(dk, da) || !isDone(ak, aa) || isDone(dk, da) {
			t.Fatal("not recognised")
		}
	}); n != 0 {
		t.Errorf("%.0f allocations per recognition; want 0", n)
	}
}

func evalshaCalls(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info := rdb.Info(context.Background(), "commandstats").Val()
	_, after, ok := strings.Cut(info, "cmdstat_evalsha:calls=")
	if !ok {
		return 0
	}
	n, _ := strconv.Atoi(after[:strings.IndexByte(after, ',')])
	return n
}

// asynq servers on the pipe run every task once and leave the queues as
// their own scripts would (empty, counted), in far fewer script calls than
// two per task.
func TestAsynqPipe(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	const n = 3000
	client := asynq.NewClientFromRedisClient(rdb)
	defer client.Close()
	for i := range n {
		q := "a"
		if i%3 == 0 {
			q = "b"
		}
		if _, err := client.Enqueue(asynq.NewTask("t", nil), asynq.Queue(q), asynq.TaskID(fmt.Sprint("task-", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := evalshaCalls(t, rdb)
	fc := newFetchClient(rdb, 10*time.Millisecond)
	fc.StartPipe()
	var mu sync.Mutex
	runs := map[string]int{}
	var total atomic.Int64
	mux := asynq.NewServeMux()
	mux.HandleFunc("t", func(ctx context.Context, _ *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		mu.Lock()
		runs[id]++
		mu.Unlock()
		total.Add(1)
		return nil
	})
	var srvs []*asynq.Server
	for range 8 {
		s := asynq.NewServerFromRedisClient(fc, asynq.Config{Concurrency: 50, Queues: map[string]int{"a": 1, "b": 1},
			TaskCheckInterval: 10 * time.Millisecond, LogLevel: asynq.ErrorLevel})
		if err := s.Start(mux); err != nil {
			t.Fatal(err)
		}
		srvs = append(srvs, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	ins := asynq.NewInspectorFromRedisClient(rdb)
	defer ins.Close()
	var qa, qb *asynq.QueueInfo
	for {
		qa, _ = ins.GetQueueInfo("a")
		qb, _ = ins.GetQueueInfo("b")
		if qa != nil && qb != nil && qa.Processed+qb.Processed == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	calls := evalshaCalls(t, rdb) - before
	for _, s := range srvs {
		s.Shutdown()
	}
	fc.StopPipe()
	if total.Load() != n || len(runs) != n {
		t.Fatalf("%d runs of %d tasks; want each of %d once", total.Load(), len(runs), n)
	}
	for id, k := range runs {
		if k != 1 {
			t.Errorf("task %s ran %d times", id, k)
		}
	}
	for _, q := range []*asynq.QueueInfo{qa, qb} {
		if q.Pending != 0 || q.Active != 0 || q.Processed != q.ProcessedTotal || q.Failed != 0 {
			t.Errorf("queue %s after the run: %+v; want nothing left, each task processed", q.Queue, q)
		}
	}
	if keys := rdb.Keys(ctx, "asynq:{*}:t:*").Val(); len(keys) != 0 {
		t.Errorf("%d task keys left, e.g. %s", len(keys), keys[0])
	}
	if lease := rdb.ZCard(ctx, "asynq:{a}:lease").Val() + rdb.ZCard(ctx, "asynq:{b}:lease").Val(); lease != 0 {
		t.Errorf("%d leases left", lease)
	}
	t.Logf("%d tasks in %d script calls", n, calls)
	// Unmerged, each task takes two calls (its dequeue and its
	// acknowledgement). How many merge depends on the machine's pace (on 2
	// vCPUs: 2,400 to 3,100 calls for 3,000 tasks, the race detector on or
	// off), so the bound only catches a pipe that merges nothing.
	if calls >= 3*n/2 {
		t.Errorf("%d script calls for %d tasks; want well under two per task", calls, n)
	}
}

// A combined call answers each request as asynq's script would have: a
// message or nothing for dequeues (nothing from a paused queue), OK or
// NOT FOUND for acknowledgements, counting only the tasks it removed.
func TestAsynqPipeAnswers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	q := "asynq:{q}"
	for i := range 3 {
		id := fmt.Sprint("t", i)
		rdb.HSet(ctx, q+":t:"+id, "msg", "m"+id, "state", "pending", "pending_since", 1)
		rdb.LPush(ctx, q+":pending", id)
	}
	p := newAsynqPipe(rdb)
	p.Start()
	defer p.Close()
	req := func(keys []string, args ...any) *pipeReq {
		return &pipeReq{ctx: ctx, keys: keys, args: args, out: make(chan *redis.Cmd, 1)}
	}
	dequeue := func() *pipeReq {
		return req([]string{q + ":pending", q + ":paused", q + ":active", q + ":lease"}, int64(2000000000), q+":t:")
	}
	done := func(id string) *pipeReq {
		return req([]string{q + ":active", q + ":lease", q + ":t:" + id, q + ":processed:2026-12-01", q + ":processed"}, id, int64(2000000000), int64(1<<63-1))
	}
	get := func(rs ...*pipeReq) []string {
		p.flush(rs)
		var out []string
		for _, r := range rs {
			cmd := <-r.out
			v, err := cmd.Text()
			switch {
			case errors.Is(err, redis.Nil):
				out = append(out, "nil")
			case err != nil:
				out = append(out, "error "+err.Error())
			default:
				out = append(out, v)
			}
		}
		return out
	}
	// Four dequeues for three tasks, oldest first.
	if got := fmt.Sprint(get(dequeue(), dequeue(), dequeue(), dequeue())); got != "[mt0 mt1 mt2 nil]" {
		t.Errorf("dequeues = %s; want the three tasks in order, then nothing", got)
	}
	if n := rdb.ZCard(ctx, q+":lease").Val(); n != 3 || rdb.HGet(ctx, q+":t:t1", "state").Val() != "active" {
		t.Errorf("after the dequeues: %d leases, t1 %v; want 3, active", n, rdb.HGetAll(ctx, q+":t:t1").Val())
	}
	// Two known tasks and one that is not there.
	if got := fmt.Sprint(get(done("t0"), done("nope"), done("t2"))); got != "[OK error NOT FOUND OK]" {
		t.Errorf("acknowledgements = %s; want OK, NOT FOUND, OK", got)
	}
	if day, all := rdb.Get(ctx, q+":processed:2026-12-01").Val(), rdb.Get(ctx, q+":processed").Val(); day != "2" || all != "2" {
		t.Errorf("processed counters %s, %s; want 2, 2", day, all)
	}
	if ttl := rdb.TTL(ctx, q+":processed:2026-12-01").Val(); ttl <= 0 {
		t.Errorf("day counter TTL %v; want one", ttl)
	}
	if rdb.Exists(ctx, q+":t:t0", q+":t:t2").Val() != 0 || rdb.LLen(ctx, q+":active").Val() != 1 {
		t.Errorf("acknowledged tasks left behind: active %v", rdb.LRange(ctx, q+":active", 0, -1).Val())
	}
	// t1 is active but its lease went (another worker's recovery): as with
	// asynq's script, it leaves the active list, keeps its key, and is not
	// counted.
	rdb.ZRem(ctx, q+":lease", "t1")
	if got := fmt.Sprint(get(done("t1"), done("nope"))); got != "[error NOT FOUND error NOT FOUND]" {
		t.Errorf("acknowledgement without a lease = %s; want NOT FOUND", got)
	}
	if rdb.LLen(ctx, q+":active").Val() != 0 || rdb.Exists(ctx, q+":t:t1").Val() != 1 || rdb.Get(ctx, q+":processed").Val() != "2" {
		t.Errorf("after it: active %v, t1 %v, processed %s", rdb.LRange(ctx, q+":active", 0, -1).Val(), rdb.HGetAll(ctx, q+":t:t1").Val(), rdb.Get(ctx, q+":processed").Val())
	}
	// A paused queue gives nothing.
	rdb.LPush(ctx, q+":pending", "t9")
	rdb.Set(ctx, q+":paused", 1, 0)
	if got := fmt.Sprint(get(dequeue(), dequeue())); got != "[nil nil]" {
		t.Errorf("dequeues of a paused queue = %s; want nothing", got)
	}
}

// A queue found empty is answered from memory for the window while the
// worker is busy (a task found within the window), and looked at again at
// once after a wake-up message. An idle worker's dequeue of such a queue
// waits instead, until the queue is due (then it asks Redis) or until a
// wake-up message, or a task found elsewhere, releases it.
func TestFetchClientWake(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	empty, err := rdb.ScriptLoad(ctx, "return false").Result() // answers as a dequeue of an empty queue
	if err != nil {
		t.Fatal(err)
	}
	task, err := rdb.ScriptLoad(ctx, "return 'msg'").Result() // as one that found a task
	if err != nil {
		t.Fatal(err)
	}
	const window = 400 * time.Millisecond
	fc := newFetchClient(rdb, window)
	fc.StartPipe()
	defer fc.StopPipe()
	keys := func(q string) []string { return []string{q + ":pending", q + ":paused", q + ":active", q + ":lease"} }
	q, other := "asynq:{pingfleet-0}", "asynq:{pingfleet-1}"
	// dequeue dequeues q and returns how long it took and how many script
	// calls Redis saw meanwhile.
	dequeue := func(sha, q string) (time.Duration, int) {
		t.Helper()
		before, t0 := evalshaCalls(t, rdb), time.Now()
		err := fc.EvalSha(ctx, sha, keys(q), int64(1), q+":t:").Err()
		if want := redis.Nil; sha == empty && !errors.Is(err, want) || sha == task && err != nil {
			t.Fatalf("dequeue: %v", err)
		}
		return time.Since(t0), evalshaCalls(t, rdb) - before
	}

	if _, calls := dequeue(empty, q); calls != 1 {
		t.Errorf("first look: Redis saw %d script calls; want 1", calls)
	}
	// Idle: the next dequeue waits for the window's end, then asks.
	if took, calls := dequeue(empty, q); took < window/2 || calls != 1 {
		t.Errorf("idle, within the window: took %v with %d script calls; want about %v and 1", took, calls, window)
	}
	// A wake-up message releases a waiting dequeue at once.
	released := make(chan time.Duration, 1)
	go func() {
		t0 := time.Now()
		_ = fc.EvalSha(ctx, empty, keys(q), int64(1), q+":t:")
		released <- time.Since(t0)
	}()
	time.Sleep(50 * time.Millisecond)
	fc.wake("")
	if took := <-released; took > window/2 {
		t.Errorf("a waiting dequeue took %v; want released by the wake-up message after about 50ms", took)
	}
	// Busy (a task found on another queue): from memory, at once.
	if _, calls := dequeue(task, other); calls != 1 {
		t.Errorf("a dequeue that finds a task: %d script calls; want 1", calls)
	}
	if took, calls := dequeue(empty, q); took > window/4 || calls != 0 {
		t.Errorf("busy, within the window: took %v with %d script calls; want at once, from memory", took, calls)
	}
	// A task running (its slot taken, nothing fetched since): busy too.
	time.Sleep(window)
	dequeue(empty, q) // due: asks
	running := make(chan struct{})
	finish := make(chan struct{})
	h := fc.counting(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		close(running)
		<-finish
		return nil
	}))
	go func() { _ = h.ProcessTask(ctx, asynq.NewTask("ping:host", nil)) }()
	<-running
	if took, calls := dequeue(empty, q); took > window/4 || calls != 0 {
		t.Errorf("a task running: took %v with %d script calls; want at once, from memory", took, calls)
	}
	close(finish)
	// Stopping: idle again, but nothing waits (asynq's servers each wait
	// for their dequeue before they stop).
	time.Sleep(window)
	dequeue(empty, q) // due: asks, and q is known empty again
	fc.StopWaiting()
	if took, calls := dequeue(empty, q); took > window/4 || calls != 0 {
		t.Errorf("after StopWaiting: took %v with %d script calls; want at once, from memory", took, calls)
	}
}

// asynq's own recoverer (one per asynq server, run at its start and every
// minute) finds nothing through the fetch client: a task whose lease ran
// out a minute ago stays for the process's Recoverer, which puts it back
// in its queue, instead of being raced into asynq's retry set by each
// server.
func TestAsynqRecovererSilenced(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	defer client.Close()
	if _, err := client.Enqueue(asynq.NewTask("t", nil), asynq.Queue("q"), asynq.TaskID("stranded")); err != nil {
		t.Fatal(err)
	}
	// A worker took it, then died: active, with a lease long run out.
	base := "asynq:{q}"
	rdb.LMove(ctx, base+":pending", base+":active", "RIGHT", "LEFT")
	rdb.ZAdd(ctx, base+":lease", redis.Z{Score: float64(time.Now().Add(-time.Minute).Unix()), Member: "stranded"})
	rdb.HSet(ctx, base+":t:stranded", "state", "active")
	fc := newFetchClient(rdb, 10*time.Millisecond)
	fc.StartPipe()
	defer fc.StopPipe()
	mux := asynq.NewServeMux()
	mux.HandleFunc("t", func(context.Context, *asynq.Task) error { return nil })
	s := asynq.NewServerFromRedisClient(fc, asynq.Config{Concurrency: 1, Queues: map[string]int{"other": 1}, LogLevel: asynq.ErrorLevel})
	s2 := asynq.NewServerFromRedisClient(fc, asynq.Config{Concurrency: 1, Queues: map[string]int{"q": 1}, LogLevel: asynq.ErrorLevel,
		TaskCheckInterval: 10 * time.Millisecond})
	if err := s.Start(mux); err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(mux); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // each recoverer runs once at start
	s.Shutdown()
	s2.Shutdown()
	if n := rdb.ZCard(ctx, base+":retry").Val(); n != 0 {
		t.Errorf("%d tasks in the retry set: asynq's recoverer acted", n)
	}
	if ids := rdb.LRange(ctx, base+":active", 0, -1).Val(); len(ids) != 1 || ids[0] != "stranded" {
		t.Errorf("active list %v; want the stranded task left for the Recoverer", ids)
	}
	rec, err := NewRecoverer(RecovererConfig{Redis: rdb, Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	rec.queues = append(rec.queues, "q")
	if n, err := rec.Recover(ctx); err != nil || n != 1 {
		t.Errorf("Recover: %d, %v; want the stranded task put back", n, err)
	}
}
