package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/pingfleet/pingfleet/worker"
)

// instantPinger answers every ping at once without sending a packet: it
// takes the ping out of BenchmarkDrain's "handler" case.
type instantPinger struct{}

func (instantPinger) Ping(_ context.Context, _ netip.Addr, opts tasks.PingOptions) (ping.Stats, error) {
	return ping.Stats{Sent: opts.Count, Received: opts.Count, Min: time.Microsecond, Avg: time.Microsecond, Max: time.Microsecond, TTL: 64}, nil
}

// BenchmarkDrain measures how fast workers empty the queues of a batch
// already enqueued (20,000 loopback hosts, one request each) on a private
// redis-server, taking the pipeline apart:
//
//   - asynq: asynq servers with a handler that does nothing, on the
//     pipelined client a Worker gives them: the floor that asynq's dequeue
//     and acknowledgement scripts set on this machine;
//   - handler: the real Handler and result writes, with a pinger that
//     answers at once;
//   - engine: the real Handler pinging loopback with the Engine, as
//     `pingfleet worker` does.
//
// One process with the default number of asynq servers and a concurrency
// of 10,000, like the worker of bench scenario 3:
//
//	go test ./worker -run '^$' -bench Drain -benchtime 3x
func BenchmarkDrain(b *testing.B) {
	const n, servers, concurrency = 20000, worker.DefaultServers, 10000
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.%d.%d.%d", 30+i/62500, i/250%250, i%250+1)
	}
	opts := tasks.PingOptions{Count: 1, Timeout: tasks.Duration(2 * time.Second)}

	run := func(b *testing.B, serve func(rdb *redis.Client, agg *aggregator.Aggregator, done chan<- struct{}) (stop func())) {
		srv := redistest.Start(b)
		rdb := srv.Client()
		agg, err := aggregator.New(aggregator.Config{Client: rdb})
		if err != nil {
			b.Fatal(err)
		}
		enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for b.Loop() {
			b.StopTimer()
			if err := rdb.FlushAll(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			if _, err := enq.Submit(ctx, enqueuer.Batch{Hosts: hosts, Options: opts}); err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			b.StartTimer()
			stop := serve(rdb, agg, done)
			<-done
			b.StopTimer()
			stop()
			b.StartTimer()
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tasks/s")
	}

	b.Run("asynq", func(b *testing.B) {
		run(b, func(rdb *redis.Client, _ *aggregator.Aggregator, done chan<- struct{}) func() {
			var count atomic.Int64
			noop := asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
				if count.Add(1) == n {
					close(done)
				}
				return nil
			})
			fetch := worker.NewFetchClient(rdb, worker.DefaultTaskCheckInterval)
			var srvs []*asynq.Server
			for range servers {
				s := asynq.NewServerFromRedisClient(fetch, asynq.Config{
					Concurrency:       concurrency / servers,
					Queues:            tasks.Queues(tasks.DefaultShards),
					TaskCheckInterval: worker.DefaultTaskCheckInterval,
					LogLevel:          asynq.FatalLevel,
				})
				if err := s.Start(noop); err != nil {
					b.Fatal(err)
				}
				srvs = append(srvs, s)
			}
			return func() {
				for _, s := range srvs {
					s.Shutdown()
				}
				fetch.StopPipe()
			}
		})
	})

	withHandler := func(pinger worker.Pinger) func(*redis.Client, *aggregator.Aggregator, chan<- struct{}) func() {
		return func(rdb *redis.Client, agg *aggregator.Aggregator, done chan<- struct{}) func() {
			rec, err := aggregator.NewBatcher(aggregator.BatcherConfig{Aggregator: agg})
			if err != nil {
				b.Fatal(err)
			}
			rec.Start()
			h, err := worker.NewHandler(worker.HandlerConfig{
				Recorder: rec,
				Pinger:   pinger,
				Finished: func(context.Context, string) error { close(done); return nil },
				Logger:   slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			w, err := worker.New(worker.Config{Redis: rdb, Handler: h, Concurrency: concurrency, Servers: servers, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			ran := make(chan error, 1)
			go func() { ran <- w.Run(ctx) }()
			return func() {
				cancel()
				if err := <-ran; err != nil {
					b.Error(err)
				}
				rec.Close()
			}
		}
	}
	b.Run("handler", func(b *testing.B) { run(b, withHandler(instantPinger{})) })
	b.Run("engine", func(b *testing.B) { run(b, withHandler(newEngine(b))) })
}
