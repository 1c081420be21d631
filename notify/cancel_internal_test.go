package notify

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/internal/redistest"
)

// asynq refuses to delete a task a worker runs with an error that only its
// text tells apart (v0.26); isActive relies on that text.
func TestCancelRunningTask(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	const queue = "running"
	info, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("block", nil), asynq.Queue(queue), asynq.TaskID("t1"))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	running := make(chan struct{})
	s := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{queue: 1}, Concurrency: 1, LogLevel: asynq.FatalLevel})
	if err := s.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		close(running)
		<-release
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	defer close(release)
	select {
	case <-running:
	case <-time.After(30 * time.Second):
		t.Fatal("the task did not start")
	}
	err = asynq.NewInspectorFromRedisClient(rdb).DeleteTask(queue, info.ID)
	if err == nil || !isActive(err) {
		t.Errorf("DeleteTask of a running task: %v; want the error isActive recognises", err)
	}
}
