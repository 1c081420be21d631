package notify

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
)

// A cancel deletes the batch's waiting tasks (pending, scheduled, waiting
// to retry) in one script per queue, in asynq's layout: asynq's Inspector
// sees them gone and every other batch's tasks where they were, in order;
// a task a worker runs is left to finish.
func TestDeleteQueued(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	client := asynq.NewClientFromRedisClient(rdb)
	q := tasks.QueuePrefix + "0"
	enqueue := func(id string, opts ...asynq.Option) {
		t.Helper()
		if _, err := client.Enqueue(asynq.NewTask(tasks.TypePingHost, nil), append(opts, asynq.Queue(q), asynq.TaskID(id))...); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"A/h1", "B/h1", "A/h2", "AB/h1", "B/h2", "A/h3"} {
		enqueue(id)
	}
	enqueue("A/later", asynq.ProcessIn(time.Hour))
	enqueue("B/later", asynq.ProcessIn(time.Hour))
	// A/running is taken by a worker, as a dequeue does.
	enqueue("A/running")
	if err := rdb.LRem(context.Background(), "asynq:{"+q+"}:pending", 1, "A/running").Err(); err != nil {
		t.Fatal(err)
	}
	rdb.LPush(context.Background(), "asynq:{"+q+"}:active", "A/running")
	rdb.HSet(context.Background(), "asynq:{"+q+"}:t:A/running", "state", "active")

	c := cleaner{client: rdb, shards: 1, logger: slog.New(slog.DiscardHandler)}
	if err := c.deleteQueued(context.Background(), "A"); err != nil {
		t.Fatal(err)
	}
	ins := asynq.NewInspectorFromRedisClient(rdb)
	ids := func(list []*asynq.TaskInfo, err error) []string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ti := range list {
			out = append(out, ti.ID)
		}
		return out
	}
	if got, want := ids(ins.ListPendingTasks(q)), []string{"B/h1", "AB/h1", "B/h2"}; !slices.Equal(got, want) {
		t.Errorf("pending after the cancel of A: %v; want %v", got, want)
	}
	if got := ids(ins.ListScheduledTasks(q)); !slices.Equal(got, []string{"B/later"}) {
		t.Errorf("scheduled after the cancel of A: %v; want [B/later]", got)
	}
	if _, err := ins.GetTaskInfo(q, "A/h1"); err == nil {
		t.Error("A/h1's task is still there")
	}
	if info, err := ins.GetTaskInfo(q, "A/running"); err != nil || info.State != asynq.TaskStateActive {
		t.Errorf("the running task: %+v, %v; want it left to finish", info, err)
	}
}
