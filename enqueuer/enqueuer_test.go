package enqueuer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.uber.org/goleak"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/tasks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(deathsig.Spawner)) }

type env struct {
	srv   *redistest.Server
	store *testkit.Store
	agg   *aggregator.Aggregator
	enq   *enqueuer.Enqueuer
	ins   *asynq.Inspector
}

func setup(t testing.TB) env {
	t.Helper()
	srv := redistest.Start(t)
	st := testkit.NewStore(t, srv.Client(), aggregator.Config{})
	return env{srv: srv, store: st, agg: st.Aggregator, enq: st.Enqueuer, ins: st.Inspector}
}

// queued counts the tasks waiting in every ping queue.
func (e env) queued(t testing.TB) int { return e.store.Queued(t) }

func hostList(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.%d.%d.%d", i/50000, i/200%250, i%200+1)
	}
	return out
}

func TestSubmitAndResubmit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	hosts := hostList(300)
	b := enqueuer.Batch{Hosts: hosts, Options: tasks.PingOptions{Count: 2}}
	res, err := e.enq.Submit(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if res.ID == "" || res.Total != 300 || res.Enqueued != 300 || res.Resumed {
		t.Fatalf("Submit = %+v; want a new ID, 300 enqueued", res)
	}
	if n := e.queued(t); n != 300 {
		t.Fatalf("queued tasks = %d; want 300", n)
	}
	s, err := e.agg.Summary(ctx, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != aggregator.StateRunning || s.Total != 300 || s.Options.Count != 2 {
		t.Errorf("summary = %+v; want running, 300 hosts, count 2", s)
	}

	// Two hosts finish (their tasks leave the queue); then the same batch
	// is submitted again, as after an interrupted enqueue.
	for _, h := range hosts[:2] {
		if _, err := e.agg.Record(ctx, res.ID, aggregator.Result{Host: h, Status: aggregator.StatusUp, Sent: 2, Received: 2}); err != nil {
			t.Fatal(err)
		}
		if err := e.ins.DeleteTask(tasks.Lane{Batch: res.ID, Shards: tasks.LaneShards(len(hosts), tasks.DefaultShards)}.QueueOf(h), tasks.TaskID(res.ID, h)); err != nil {
			t.Fatal(err)
		}
	}
	b.ID = res.ID
	again, err := e.enq.Submit(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if again.Enqueued != 0 || again.Existing != 300 || !again.Resumed {
		t.Errorf("re-Submit = %+v; want 0 enqueued, 300 existing, resumed", again)
	}
	if n := e.queued(t); n != 298 {
		t.Errorf("queued tasks after re-submit = %d; want 298 (no duplicates, finished hosts not re-run)", n)
	}
}

func TestSubmitRejectsWithoutWriting(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	if _, err := e.enq.Submit(ctx, enqueuer.Batch{ID: "taken", Hosts: hostList(3)}); err != nil {
		t.Fatal(err)
	}
	keysBefore := e.srv.Client().DBSize(ctx).Val()
	tests := []struct {
		desc  string
		batch enqueuer.Batch
		is    error
	}{
		{"bad count", enqueuer.Batch{Hosts: hostList(3), Options: tasks.PingOptions{Count: -2}}, nil},
		{"zero-ish interval", enqueuer.Batch{Hosts: hostList(3), Options: tasks.PingOptions{Interval: tasks.Duration(1)}}, nil},
		{"bad batch ID", enqueuer.Batch{ID: "no spaces", Hosts: hostList(3)}, enqueuer.ErrInvalidBatchID},
		{"no hosts", enqueuer.Batch{}, nil},
		{"ID of another batch", enqueuer.Batch{ID: "taken", Hosts: hostList(4)}, aggregator.ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := e.enq.Submit(ctx, tc.batch)
			if err == nil {
				t.Fatal("Submit succeeded; want an error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error = %v; want %v", err, tc.is)
			}
			if n := e.srv.Client().DBSize(ctx).Val(); n != keysBefore {
				t.Errorf("keys after rejected submit = %d; want %d (nothing written)", n, keysBefore)
			}
		})
	}
	if n := e.queued(t); n != 3 {
		t.Errorf("queued tasks = %d; want 3", n)
	}
}

func TestSubmitRedisDown(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.srv.Kill()
	_, err := e.enq.Submit(context.Background(), enqueuer.Batch{Hosts: hostList(3)})
	if err == nil {
		t.Fatal("Submit with Redis down succeeded")
	}
}

// The enqueuer writes asynq's tasks itself, many per script call: what it
// writes must be what asynq's own client writes for the same task, byte for
// byte, so that asynq servers and the Inspector read it as theirs.
func TestAsynqReadsOurTasks(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rdb := e.srv.Client()
	opts := tasks.PingOptions{Count: 3, Interval: tasks.Duration(200 * time.Millisecond), Timeout: tasks.Duration(time.Second)}
	const id, host = "compat", "127.0.0.1"
	queue := tasks.LaneQueue(id, 0) // a batch of one host has a lane of one queue
	taskKey := "asynq:{" + queue + "}:t:" + tasks.TaskID(id, host)
	written := func() (map[string]string, []string) {
		t.Helper()
		h := rdb.HGetAll(ctx, taskKey).Val()
		list := rdb.LRange(ctx, "asynq:{"+queue+"}:pending", 0, -1).Val()
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		return h, list
	}

	task, err := tasks.NewPingTask(tasks.PingPayload{BatchID: id, Host: host, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(rdb)
	_, err = client.EnqueueContext(ctx, task, asynq.TaskID(tasks.TaskID(id, host)), asynq.Queue(queue),
		asynq.MaxRetry(enqueuer.DefaultMaxRetry), asynq.Timeout(opts.RunTime()+enqueuer.TaskSlack))
	if err != nil {
		t.Fatal(err)
	}
	theirs, theirList := written()

	if _, err := e.enq.Submit(ctx, enqueuer.Batch{ID: id, Hosts: []string{host}, Options: opts}); err != nil {
		t.Fatal(err)
	}
	ours, ourList := written()
	if theirs["msg"] == "" || theirs["msg"] != ours["msg"] || theirs["state"] != ours["state"] || ours["pending_since"] == "" {
		t.Errorf("task hash: asynq writes %q, the enqueuer %q", theirs, ours)
	}
	if diff := cmp.Diff(theirList, ourList); diff != "" {
		t.Errorf("pending list (-asynq +enqueuer):\n%s", diff)
	}

	// And asynq's Inspector reads them as its own.
	if _, err := e.enq.Submit(ctx, enqueuer.Batch{ID: id, Hosts: []string{host}, Options: opts}); err != nil {
		t.Fatal(err)
	}
	info, err := e.ins.GetTaskInfo(queue, tasks.TaskID(id, host))
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != tasks.TypePingHost || info.State != asynq.TaskStatePending || info.MaxRetry != enqueuer.DefaultMaxRetry ||
		info.Timeout != opts.RunTime().Truncate(time.Second)+enqueuer.TaskSlack || string(info.Payload) != string(task.Payload()) {
		t.Errorf("Inspector reads %+v", info)
	}
}

// With a window, the queues never hold more of a batch's tasks than the
// window ahead of its results, and every task gets queued in the end.
func TestSubmitWindow(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rdb := e.srv.Client()
	const window, n = 300, 3000
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: e.agg, Window: window})
	if err != nil {
		t.Fatal(err)
	}
	hosts := hostList(n)
	sub, err := enq.Start(ctx, enqueuer.Batch{ID: "paced", Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	pingQueues := func() []string {
		q, err := tasks.PingQueues(ctx, rdb, tasks.DefaultShards)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	waiting := func() int {
		n := 0
		for _, q := range pingQueues() {
			n += int(rdb.LLen(ctx, "asynq:{"+q+"}:pending").Val())
		}
		return n
	}
	// A consumer: takes each queued task as a worker would, counts how many
	// wait, and records their hosts' results. It starts once the enqueuer
	// has filled its window, as a slow fleet would.
	testkit.Eventually(t, 10*time.Second, func() bool { return waiting() >= window }, "the window filled")
	most, taken := 0, 0
	for taken < n {
		most = max(most, waiting())
		for _, q := range pingQueues() {
			for {
				id, err := rdb.RPop(ctx, "asynq:{"+q+"}:pending").Result()
				if err != nil {
					break
				}
				host := id[len("paced/"):]
				if _, err := e.agg.Record(ctx, "paced", aggregator.Result{Host: host, Status: aggregator.StatusDown, Sent: 1, LossPct: 100}); err != nil {
					t.Fatal(err)
				}
				taken++
			}
		}
		time.Sleep(time.Millisecond)
	}
	o := <-sub.Done()
	if o.Err != nil || o.Enqueued != n || sub.ID != "paced" {
		t.Fatalf("outcome %+v; want %d enqueued", o, n)
	}
	if most > window || most == 0 {
		t.Errorf("up to %d tasks waited in the queues; want at most the window, %d", most, window)
	}
	if s, err := e.agg.Summary(ctx, "paced"); err != nil || s.State != aggregator.StateComplete {
		t.Errorf("summary %+v, %v; want complete", s, err)
	}
}

// Hurry lets a paced enqueue queue all that is left at once.
func TestSubmitHurry(t *testing.T) {
	t.Parallel()
	e := setup(t)
	enq, err := enqueuer.New(enqueuer.Config{Redis: e.srv.Client(), Aggregator: e.agg, Window: 100})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := enq.Start(context.Background(), enqueuer.Batch{Hosts: hostList(1000)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-sub.Done():
		t.Fatalf("without results, the enqueue ended: %+v", o)
	case <-time.After(200 * time.Millisecond):
	}
	if n := e.queued(t); n > 100 {
		t.Fatalf("%d tasks queued before Hurry; want at most the window, 100", n)
	}
	sub.Hurry()
	select {
	case o := <-sub.Done():
		if o.Err != nil || o.Enqueued != 1000 {
			t.Errorf("after Hurry: %+v; want all 1000 enqueued", o)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still enqueuing 10 s after Hurry")
	}
	if n := e.queued(t); n != 1000 {
		t.Errorf("%d tasks queued; want 1000", n)
	}
}
