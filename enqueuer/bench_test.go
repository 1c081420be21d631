package enqueuer_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/tasks"
)

// BenchmarkSubmit measures enqueue throughput (batch record plus one asynq
// task per host) against a private redis-server:
//
//	go test ./enqueuer -run '^$' -bench Submit -benchtime 3x
func BenchmarkSubmit(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := setup(b)
			hosts := hostList(n)
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				if err := e.srv.Client().FlushAll(ctx).Err(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := e.enq.Submit(ctx, enqueuer.Batch{Hosts: hosts, Options: tasks.PingOptions{}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}
