package worker_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/pingfleet/pingfleet/worker"
)

// lease takes task id of queue q as a worker's dequeue does (pending to
// active, a lease that ends at until), for a worker that then stops.
func lease(t *testing.T, rdb redis.UniversalClient, q, id string, until time.Time) {
	t.Helper()
	base := "asynq:{" + q + "}"
	ctx := context.Background()
	if n := rdb.LRem(ctx, base+":pending", 0, id).Val(); n != 1 {
		t.Fatalf("task %s not pending", id)
	}
	rdb.LPush(ctx, base+":active", id)
	rdb.ZAdd(ctx, base+":lease", redis.Z{Score: float64(until.Unix()), Member: id})
	rdb.HSet(ctx, base+":t:"+id, "state", "active")
}

// The recoverer hands a task whose lease ran out (its worker died) back
// to its queue with one more retry counted, as asynq's recoverer would but
// within seconds; a task out of retries goes to the archive; leases still
// running, or ended within the grace, are left alone; two recoverers
// racing take each task once.
func TestRecoverer(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	client := asynq.NewClientFromRedisClient(rdb)
	q := tasks.QueuePrefix + "0"
	now := time.Now()
	for _, tc := range []struct {
		id    string
		retry int
		until time.Time
	}{
		{"dead", 3, now.Add(-10 * time.Second)},
		{"dead-out-of-retries", 0, now.Add(-10 * time.Second)},
		{"alive", 3, now.Add(25 * time.Second)},
		{"just-ended", 3, now.Add(-2 * time.Second)},
	} {
		if _, err := client.Enqueue(asynq.NewTask(tasks.TypePingHost, []byte("{}")), asynq.Queue(q), asynq.TaskID(tc.id), asynq.MaxRetry(tc.retry)); err != nil {
			t.Fatal(err)
		}
		lease(t, rdb, q, tc.id, tc.until)
	}
	var recovered [2]int
	var wg sync.WaitGroup
	for i := range recovered {
		r, err := worker.NewRecoverer(worker.RecovererConfig{Redis: rdb, Shards: 1, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			n, err := r.Recover(context.Background())
			if err != nil {
				t.Error(err)
			}
			recovered[i] = n
		})
	}
	wg.Wait()
	if got := recovered[0] + recovered[1]; got != 2 {
		t.Errorf("racing recoverers took %v tasks; want 2 in all (each once)", recovered)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for _, tc := range []struct {
		id      string
		state   asynq.TaskState
		retried int
	}{
		{"dead", asynq.TaskStatePending, 1},
		{"dead-out-of-retries", asynq.TaskStateArchived, 1},
		{"alive", asynq.TaskStateActive, 0},
		{"just-ended", asynq.TaskStateActive, 0},
	} {
		info, err := insp.GetTaskInfo(q, tc.id)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if info.State != tc.state || info.Retried != tc.retried || (tc.retried > 0 && info.LastErr != "asynq: task lease expired") {
			t.Errorf("%s: %s, retried %d, last error %q; want %s, retried %d", tc.id, info.State, info.Retried, info.LastErr, tc.state, tc.retried)
		}
		if tc.id == "dead" && (info.Type != tasks.TypePingHost || string(info.Payload) != "{}" || info.MaxRetry != 3) {
			t.Errorf("dead: %+v; want its type, payload and retry kept", info)
		}
	}
	if n := rdb.LLen(context.Background(), "asynq:{"+q+"}:active").Val(); n != 2 {
		t.Errorf("%d tasks still active; want the 2 whose leases hold", n)
	}
	if ids := rdb.LRange(context.Background(), "asynq:{"+q+"}:pending", 0, -1).Val(); len(ids) != 1 || ids[0] != "dead" {
		t.Errorf("pending %v; want [dead]", ids)
	}
}
