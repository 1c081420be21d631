// Package worker runs ping tasks: asynq servers that take TypePingHost tasks
// from Redis, ping each host through a Pinger (package ping's shared
// engine by default) and record the result through the aggregator. Run any
// number of workers on any number of machines against one Redis; each one
// adds capacity.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/notify"
	"github.com/pingfleet/pingfleet/tasks"
)

// Defaults of Config.
const (
	DefaultServers           = 64
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultTaskCheckInterval = 50 * time.Millisecond
)

// maintainers is how many of a worker's asynq servers run asynq's
// maintenance (forwarding due retries, the janitor) at its default pace.
const maintainers = 4

// Config configures a Worker.
type Config struct {
	// Redis is the connection asynq uses. Required. The Worker does not
	// close it.
	Redis redis.UniversalClient
	// Handler runs the ping tasks. Required.
	Handler *Handler
	// Callbacks, if set, delivers batch callbacks (TypeBatchCallback
	// tasks); this worker then serves the callback queue too.
	Callbacks asynq.Handler
	// Concurrency is the number of tasks (hosts) pinged at once. If zero,
	// as many as the process's memory holds (AutoConcurrency).
	Concurrency int
	// Servers is the number of asynq servers this worker runs, sharing
	// Concurrency. One asynq server fetches one task per Redis round trip,
	// which caps it at a few thousand tasks/s whatever its concurrency;
	// many fetch in parallel, and their calls share round trips (see
	// fetchClient). If zero, DefaultServers.
	Servers int
	// Shards is the number of queues the tasks are spread over; it must
	// match the enqueuers'. If zero, tasks.DefaultShards.
	Shards int
	// ShutdownTimeout is how long in-flight pings may finish after a stop
	// before their tasks are handed back to the queue. If zero,
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// TaskCheckInterval is how long an idle worker waits before looking
	// for tasks again. If zero, DefaultTaskCheckInterval (asynq's 1 s
	// default would add up to a second to every small batch).
	TaskCheckInterval time.Duration
	// RecoverInterval is how often the worker puts back in their queues
	// the tasks of leases that ran out (a worker died or froze, Redis
	// restarted); if zero, DefaultRecoverInterval. See Recoverer.
	RecoverInterval time.Duration
	// Rates, if set, grants the pings of the tasks of batches' lanes
	// before they are fetched, from the buckets of the batch's rate
	// (PingOptions.BatchRate), its tenant's (tasks.Lane.TenantRate) and
	// the fleet's (Rates.FleetRate), so that a throttled task holds no
	// slot while others have work; the Handler then does not wait for
	// them. Give it the Handler's Limiter. Without it, the Limiter makes
	// such tasks wait in their slot, and tenants' rates are not applied.
	Rates Granter
	// Logger receives the worker's and asynq's logs. If nil, slog.Default().
	Logger *slog.Logger
}

// Worker is a running set of asynq servers.
type Worker struct {
	srvs   []*asynq.Server
	rdb    redis.UniversalClient
	fetch  *fetchClient
	mux    *asynq.ServeMux
	logger *slog.Logger
	// recoverer hands tasks of expired leases to the fleet again: one per
	// process, whatever the number of asynq servers.
	recoverer *Recoverer
	lanes     *laneReader // keeps the fetch client's lanes up to date
}

// New returns a Worker for cfg. Call Run to start it.
func New(cfg Config) (*Worker, error) {
	if cfg.Redis == nil || cfg.Handler == nil {
		return nil, errors.New("worker: Config.Redis and Config.Handler are required")
	}
	if cfg.Concurrency < 0 || cfg.Shards < 0 || cfg.Servers < 0 {
		return nil, fmt.Errorf("worker: concurrency %d, servers %d and shards %d must not be negative", cfg.Concurrency, cfg.Servers, cfg.Shards)
	}
	logger := cmp.Or(cfg.Logger, slog.Default())
	concurrency := cfg.Concurrency
	if concurrency == 0 {
		var why string
		concurrency, why = AutoConcurrency(false)
		logger.Info("in-flight limit sized", "concurrency", concurrency, "by", why)
	}
	servers := min(cmp.Or(cfg.Servers, DefaultServers), concurrency)
	w := &Worker{mux: asynq.NewServeMux(), rdb: cfg.Redis, logger: logger}
	w.mux.Handle(tasks.TypePingHost, cfg.Handler)
	if cfg.Callbacks != nil {
		w.mux.Handle(tasks.TypeBatchCallback, cfg.Callbacks)
	}
	shards := cmp.Or(cfg.Shards, tasks.DefaultShards)
	interval := cmp.Or(cfg.TaskCheckInterval, DefaultTaskCheckInterval)
	w.fetch = newFetchClient(cfg.Redis, interval)
	w.mux.Use(w.fetch.counting)
	w.lanes = newLaneReader(cfg.Redis, cfg.Rates, w.fetch.lanes, logger)
	w.lanes.added = w.fetch.release
	if cfg.Rates != nil {
		cfg.Handler.ratedAtFetch = true
	}
	rec, err := NewRecoverer(RecovererConfig{Redis: cfg.Redis, Shards: shards, Lanes: w.fetch.lanes.queues, Interval: cfg.RecoverInterval, Logger: logger})
	if err != nil {
		return nil, err
	}
	w.recoverer = rec
	for i := range servers {
		// Spread the concurrency; the first servers take the remainder.
		n := concurrency / servers
		if i < concurrency%servers {
			n++
		}
		// Every asynq server also moves due retries into the queues and
		// cleans up, one script per queue each time. A few servers doing it
		// at asynq's pace is enough; the others do it once a minute.
		var delayed, janitor time.Duration
		if i >= maintainers {
			delayed, janitor = time.Minute, time.Minute
		}
		w.srvs = append(w.srvs, asynq.NewServerFromRedisClient(w.fetch, asynq.Config{
			Concurrency:              n,
			Queues:                   serverQueues(i, shards, cfg.Callbacks != nil),
			StrictPriority:           true,
			TaskCheckInterval:        interval,
			DelayedTaskCheckInterval: delayed,
			JanitorInterval:          janitor,
			ShutdownTimeout:          cmp.Or(cfg.ShutdownTimeout, DefaultShutdownTimeout),
			RetryDelayFunc:           RetryDelay,
			Logger:                   NewAsynqLogger(logger),
			LogLevel:                 asynq.WarnLevel,
		}))
	}
	return w, nil
}

// serverQueues is the queue order of a worker's server i: each server
// looks at the ping queues in an order of its own, starting at queue i, so
// that together they drain all queues at once; the callback queue, if
// served, comes first (its tasks are few, and a finished batch's callback
// should not wait for a sweep). A fixed order per server (asynq's strict
// priority) also spares a shuffle of the queue list on every dequeue,
// which took a sixth of a worker's CPU while a batch's tasks were fetched.
func serverQueues(i, shards int, callbacks bool) map[string]int {
	q := make(map[string]int, shards+1)
	for j := range shards {
		// Priority shards for queue i, shards-1 for the next, and so on.
		q[tasks.QueuePrefix+strconv.Itoa(j)] = shards - (j-i%shards+shards)%shards
	}
	if callbacks {
		q[tasks.CallbackQueue] = shards + 1
	}
	return q
}

// MemoryLimit is a soft memory limit, in bytes, for a worker process that
// pings concurrency hosts at once: 16 KiB per ping in flight plus 16 MiB,
// and at least 64 MiB. A ping in flight holds two goroutines and their
// state, about 13 KB at 10,000 in flight (bench/README.md, "Memory"). Left
// to GOGC alone, garbage can grow as large again before a collection,
// because goroutine stacks count toward the heap goal too.
func MemoryLimit(concurrency int) int64 {
	return max(64<<20, 16<<20+16<<10*int64(concurrency))
}

// RetryDelay is the wait before the n-th retry of a failed task. A ping
// task waits 1 s, 2 s, 4 s... at most 10 s: its failures are Redis outages,
// not slow hosts, and a batch waits for its retries, so asynq's default (up
// to hours) is wrong. A callback waits 2 s, 4 s... at most 5 min: the
// receiver may be down for a while.
func RetryDelay(n int, _ error, t *asynq.Task) time.Duration {
	if t != nil && t.Type() == tasks.TypeBatchCallback {
		return notify.RetryDelay(n)
	}
	return min(time.Second<<min(max(n-1, 0), 4), 10*time.Second)
}

// Run processes tasks until ctx is done, then stops fetching, lets
// in-flight pings finish within the shutdown timeout and hands the rest
// back to the queue. Call it once.
func (w *Worker) Run(ctx context.Context) error {
	w.fetch.StartPipe()
	w.checkCluster(ctx)
	w.lanes.Start()
	defer w.lanes.Close()
	w.recoverer.Start()
	defer w.recoverer.Close()
	// Wake-up messages from enqueuers, until the servers have stopped.
	wakes := w.rdb.Subscribe(context.WithoutCancel(ctx), tasks.WakeChannel)
	heard := make(chan struct{})
	go func() {
		defer close(heard)
		for m := range wakes.Channel() {
			w.fetch.wake(m.Payload) // the batch whose tasks came, or "" (older enqueuers): all
			w.lanes.Kick()          // a new batch's lane, perhaps
		}
	}()
	defer func() {
		_ = wakes.Close()
		<-heard
	}()

	started := w.srvs[:0:0]
	var err error
	for _, srv := range w.srvs {
		if err = srv.Start(w.mux); err != nil {
			err = fmt.Errorf("start worker: %w", err)
			break
		}
		started = append(started, srv)
	}
	if err == nil {
		<-ctx.Done()
	}
	// Stop all at once: each waits up to ShutdownTimeout for its tasks,
	// and for its dequeue, which must not wait for tasks any more.
	w.fetch.StopWaiting()
	var wg sync.WaitGroup
	for _, srv := range started {
		wg.Go(srv.Shutdown)
	}
	wg.Wait()
	w.fetch.StopPipe()
	return err
}

// checkCluster says, on a Redis Cluster, how many masters the worker
// serves queues on, and warns when open batches' queues fall on fewer of
// them than they could (queues named without salts, by enqueuers older
// than SpreadSalts, or a cluster resharded since): their tasks then load
// some masters more than others.
func (w *Worker) checkCluster(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	slots, err := tasks.ReadSlotMap(ctx, w.rdb)
	if err != nil {
		w.logger.Warn("could not check how the ping queues spread over the cluster", "error", err)
		return
	}
	if slots == nil {
		return
	}
	w.logger.Info("Redis Cluster", "masters", len(slots.Masters))
	lanes, _, err := tasks.ReadLanes(ctx, w.rdb)
	if err != nil {
		w.logger.Warn("could not check how the ping queues spread over the cluster", "error", err)
		return
	}
	uneven := 0
	for _, l := range lanes {
		if on, best := slots.Spread(l.Queues()); on < best {
			uneven++
		}
	}
	if uneven > 0 {
		w.logger.Warn("open batches' queues fall on fewer Redis Cluster masters than they could: those masters carry more of their load",
			"batches", uneven, "of", len(lanes), "masters", len(slots.Masters))
	}
}

// ID returns a name for this process among the fleet: host name and PID.
func ID() string {
	h, err := os.Hostname()
	if err != nil {
		h = "unknown"
	}
	return h + ":" + strconv.Itoa(os.Getpid())
}

// asynqLogger sends asynq's logs to slog. Its warnings and errors repeat
// per task during an incident (a Redis outage: "Failed to extend lease
// for tasks [...]" every 5 s from each server), so each kind is logged at
// most once a minute, with the count of those held back.
type asynqLogger struct {
	l       *slog.Logger
	limited *rateLimitedLog
}

// NewAsynqLogger returns an asynq.Logger that writes to l. Fatal logs at
// error level and exits, as asynq expects.
func NewAsynqLogger(l *slog.Logger) asynq.Logger {
	l = l.With("component", "asynq")
	return asynqLogger{l, newRateLimitedLog(l, time.Minute)}
}

// logKind is what makes two of asynq's messages the same kind: the text
// before any list of task IDs or addresses, at most 60 bytes of it.
func logKind(msg string) string {
	if i := strings.IndexAny(msg, "[{"); i >= 0 {
		msg = msg[:i]
	}
	return msg[:min(len(msg), 60)]
}

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any) {
	msg := fmt.Sprint(args...)
	a.limited.log(slog.LevelWarn, logKind(msg), msg)
}
func (a asynqLogger) Error(args ...any) {
	msg := fmt.Sprint(args...)
	a.limited.log(slog.LevelError, logKind(msg), msg)
}
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...))
	os.Exit(1)
}
