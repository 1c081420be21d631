package notify_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/notify"
)

// BenchmarkCancel cancels a batch of 100,000 hosts whose tasks are all
// queued (as the API queues them): the DELETE's work, from the final state
// to the last queued task deleted and the callback handed over.
//
//	go test ./notify -run '^$' -bench Cancel -benchtime 3x
func BenchmarkCancel(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client()
	st := testkit.NewStore(b, rdb, aggregator.Config{})
	notifier, err := notify.NewNotifier(notify.NotifierConfig{Client: asynq.NewClientFromRedisClient(rdb), Aggregator: st.Aggregator, Retention: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	c, err := notify.NewCanceller(notify.CancellerConfig{Aggregator: st.Aggregator, Notifier: notifier, Client: rdb})
	if err != nil {
		b.Fatal(err)
	}
	const n = 100000
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.%d.%d.%d", 1+i>>16, i>>8&255, i&255)
	}
	ctx := context.Background()
	for i := range b.N {
		b.StopTimer()
		id := fmt.Sprintf("cancelled-%d", i)
		if _, err := st.Enqueuer.Submit(ctx, enqueuer.Batch{ID: id, Hosts: hosts}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := c.Cancel(ctx, id); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if q := st.Queued(b); q != 0 {
			b.Fatalf("%d tasks still queued after the cancel", q)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/cancel")
}
