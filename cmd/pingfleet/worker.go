package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/exporter"
	"github.com/pingfleet/pingfleet/notify"
	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/ratelimit"
	"github.com/pingfleet/pingfleet/worker"
)

// workerFlags are the flags of commands that run workers in-process.
type workerFlags struct {
	engine          string
	concurrency     int
	servers         int
	privileged      bool
	unprivileged    bool
	shutdownTimeout time.Duration
	dnsTimeout      time.Duration
	dnsCacheMaxAge  time.Duration
	callbacks       callbackFlags
	janitor         bool
	fleetRate       int
	fleetBurst      int
	checkInterval   time.Duration
	metricsAddr     string
	targets         policyFlags
}

// register adds the worker flags to cmd; checkInterval is the default of
// --task-check-interval (how fast an idle worker notices new tasks). The
// flags of a fleet's worker (callbacks, the janitor) come only with fleet.
func (w *workerFlags) register(cmd *cobra.Command, checkInterval time.Duration, fleet bool) {
	fs := cmd.Flags()
	fs.DurationVar(&w.checkInterval, "task-check-interval", checkInterval, "how long an idle worker waits before looking for tasks again")
	fs.StringVar(&w.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. :9110)")
	fs.StringVar(&w.engine, "engine", ping.DefaultEngine, `ping engine: "shared" (a few shared ICMP sockets, scales to 10,000s of pings; Linux, macOS, FreeBSD) or "probing" (pro-bing, one socket per ping)`)
	fs.IntVar(&w.concurrency, "concurrency", 0, fmt.Sprintf("hosts pinged at once by this process (default: as many as its memory holds at %d KiB each, at most %d)", worker.PingMemory>>10, worker.MaxAutoConcurrency))
	fs.IntVar(&w.servers, "servers", worker.DefaultServers, "asynq servers (task fetchers) sharing --concurrency")
	fs.BoolVar(&w.privileged, "privileged", false, "use raw ICMP sockets only (needs root or CAP_NET_RAW)")
	fs.BoolVar(&w.unprivileged, "unprivileged", false, "use unprivileged ICMP (\"ping\") sockets only, never fall back to raw ones")
	fs.DurationVar(&w.shutdownTimeout, "shutdown-timeout", worker.DefaultShutdownTimeout, "on stop, how long in-flight pings may finish before their tasks go back to the queue")
	fs.DurationVar(&w.dnsTimeout, "dns-timeout", worker.DefaultDNSTimeout, "bound on resolving one host name")
	fs.IntVar(&w.fleetRate, "fleet-rate", 0, "most pings per second of the whole fleet, shared through Redis (0: no limit; give every worker the same value)")
	fs.IntVar(&w.fleetBurst, "fleet-burst", 0, "pings the fleet may send at once above --fleet-rate (default a tenth of it)")
	fs.DurationVar(&w.dnsCacheMaxAge, "dns-cache-max-age", worker.DefaultDNSCacheMaxAge, "how long this worker reuses a name's addresses (0: no cache)")
	w.targets.register(fs)
	if fleet {
		w.callbacks.register(fs, "serve and every worker")
		fs.BoolVar(&w.janitor, "janitor", true, "also expire batches past their deadline and hand over missed callbacks")
	}
}

// sizeConcurrency sets the in-flight limit, unless --concurrency gave one,
// from what the process may hold (worker.Capacity), and logs it: as a
// warning when memory holds fewer pings than the default most.
func (a *app) sizeConcurrency(w *workerFlags) error {
	if w.concurrency != 0 {
		if w.concurrency < 1 {
			return usageErr("--concurrency %d: must be at least 1", w.concurrency)
		}
		return nil
	}
	var why string
	w.concurrency, why = worker.AutoConcurrency(w.engine == "probing")
	level := slog.LevelInfo
	if w.concurrency < worker.MaxAutoConcurrency {
		level = slog.LevelWarn
		why += "; raise the memory limit or set --concurrency for more"
	}
	a.logger.Log(context.Background(), level, "in-flight limit sized", "concurrency", w.concurrency, "by", why)
	return nil
}

// memoryPolicy sets the process's memory budget to what concurrency pings
// in flight need (worker.MemoryLimit), and has garbage collected when it
// nears that budget rather than each time the heap doubles (which, from a
// small heap, means many collections while a large batch starts: a tenth
// of run's time for 10,000 hosts). GOMEMLIMIT or GOGC leave it to the
// user. The function it returns restores the former settings.
func (a *app) memoryPolicy(concurrency int) (restore func()) {
	oldLimit, oldPercent := debug.SetMemoryLimit(-1), debug.SetGCPercent(-1)
	debug.SetGCPercent(oldPercent)
	setBy := "GOMEMLIMIT"
	if a.getenv("GOMEMLIMIT") == "" {
		setBy = "--concurrency"
		debug.SetMemoryLimit(worker.MemoryLimit(concurrency))
		if a.getenv("GOGC") == "" {
			debug.SetGCPercent(-1)
		}
	}
	gcPercent := debug.SetGCPercent(-1)
	debug.SetGCPercent(gcPercent)
	a.logger.Info("memory limit", "bytes", debug.SetMemoryLimit(-1), "set_by", setBy, "gc_percent", gcPercent)
	return func() {
		debug.SetMemoryLimit(oldLimit)
		debug.SetGCPercent(oldPercent)
	}
}

// startWorker runs a worker on rdb until ctx is done; wait for the errgroup
// to know it stopped. With callbacks, it delivers batch callbacks too (the
// `worker` command; `run` submits no batch with a callback).
func (a *app) startWorker(ctx context.Context, g *errgroup.Group, w *workerFlags, rdb redis.UniversalClient, agg *aggregator.Aggregator, callbacks bool) error {
	if w.privileged && w.unprivileged {
		return usageErr("--privileged and --unprivileged exclude each other")
	}
	if err := a.sizeConcurrency(w); err != nil {
		return err
	}
	policy, err := w.targets.policy()
	if err != nil {
		return err
	}
	pinger, engine, err := a.pinger(w)
	if err != nil {
		return err
	}
	var resolver worker.Resolver = net.DefaultResolver
	if w.dnsCacheMaxAge > 0 {
		resolver = worker.NewCachingResolver(net.DefaultResolver, w.dnsCacheMaxAge)
	}
	id := worker.ID()
	rec, err := aggregator.NewBatcher(aggregator.BatcherConfig{Aggregator: agg})
	if err != nil {
		return systemErr(err)
	}
	rec.Start()
	a.closers = append(a.closers, rec.Close)
	cancels, err := worker.NewCancelWatch(rdb)
	if err != nil {
		return systemErr(err)
	}
	cancels.Start(ctx)
	a.closers = append(a.closers, cancels.Close)
	notifier, _, err := a.lifecycle(rdb, agg)
	if err != nil {
		return err
	}
	limiter, err := ratelimit.New(ratelimit.Config{Client: rdb, FleetRate: w.fleetRate, Burst: w.fleetBurst})
	if err != nil {
		return usageErr("--fleet-rate: %v", err)
	}
	metrics, err := a.workerMetrics(ctx, g, w, rdb, engine)
	if err != nil {
		return err
	}
	h, err := worker.NewHandler(worker.HandlerConfig{
		Metrics:    metrics,
		Limiter:    limiter,
		Recorder:   rec,
		Pinger:     pinger,
		Resolver:   resolver,
		DNSTimeout: w.dnsTimeout,
		WorkerID:   id,
		Logger:     a.logger,
		Cancelled:  cancels.Cancelled,
		Finished:   notifier.FinishedBatch,
		Policy:     policy,
	})
	if err != nil {
		return systemErr(err)
	}
	var sender asynq.Handler
	if callbacks {
		s, err := a.sender(&w.callbacks, agg)
		if err != nil {
			return err
		}
		sender = s
	}
	if w.janitor {
		j, err := notify.NewJanitor(notify.JanitorConfig{Aggregator: agg, Notifier: notifier, Client: rdb, Shards: a.shards, Logger: a.logger})
		if err != nil {
			return systemErr(err)
		}
		g.Go(func() error { return j.Run(ctx) })
	}
	wk, err := worker.New(worker.Config{
		Redis:             rdb,
		Handler:           h,
		Rates:             limiter,
		Callbacks:         sender,
		Concurrency:       w.concurrency,
		Servers:           w.servers,
		Shards:            a.shards,
		ShutdownTimeout:   w.shutdownTimeout,
		TaskCheckInterval: w.checkInterval,
		Logger:            a.logger,
	})
	if err != nil {
		return systemErr(err)
	}
	a.logger.Info("worker started", "worker", id, "concurrency", w.concurrency, "shards", a.shards, "servers", cmp.Or(w.servers, worker.DefaultServers))
	g.Go(func() error { return wk.Run(ctx) })
	return nil
}

// pinger returns the ping engine w asks for, and the shared engine (for
// its metrics) when it is that one.
func (a *app) pinger(w *workerFlags) (worker.Pinger, *ping.Engine, error) {
	mode := ping.SocketAuto
	switch {
	case w.privileged:
		mode = ping.SocketPrivileged
	case w.unprivileged:
		mode = ping.SocketUnprivileged
	}
	switch w.engine {
	case ping.EngineShared:
		engine, err := ping.NewEngine(ping.EngineConfig{Mode: mode, Logger: a.logger})
		if err != nil {
			return nil, nil, systemErr(err)
		}
		a.closers = append(a.closers, func() { _ = engine.Close() })
		return engine, engine, nil
	case ping.EngineProBing:
		p, err := ping.NewProBing(ping.ProBingConfig{Mode: mode, Logger: a.logger})
		if err != nil {
			return nil, nil, systemErr(err)
		}
		return p, nil, nil
	}
	return nil, nil, usageErr("--engine %q: use %s or %s", w.engine, ping.EngineShared, ping.EngineProBing)
}

// workerMetrics serves the worker's metrics on --metrics-addr, if given.
func (a *app) workerMetrics(ctx context.Context, g *errgroup.Group, w *workerFlags, rdb redis.UniversalClient, engine *ping.Engine) (*worker.Metrics, error) {
	if w.metricsAddr == "" {
		return nil, nil
	}
	reg := exporter.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		return nil, systemErr(err)
	}
	if engine != nil {
		if err := worker.RegisterEngine(reg, engine); err != nil {
			return nil, systemErr(err)
		}
	}
	if err := a.serveMetrics(ctx, g, w.metricsAddr, reg, rdb); err != nil {
		return nil, err
	}
	return metrics, nil
}

func (a *app) workerCommand() *cobra.Command {
	var wf workerFlags
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: take ping tasks from Redis until stopped (SIGINT/SIGTERM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rdb, agg, err := a.connectFleet(cmd, "")
			if err != nil {
				return err
			}
			if err := a.sizeConcurrency(&wf); err != nil {
				return err
			}
			defer a.memoryPolicy(wf.concurrency)()
			var g errgroup.Group
			if err := a.startWorker(cmd.Context(), &g, &wf, rdb, agg, true); err != nil {
				return err
			}
			if err := g.Wait(); err != nil {
				return systemErr(err)
			}
			return nil
		},
	}
	wf.register(cmd, worker.DefaultTaskCheckInterval, true)
	a.retentionFlag(cmd)
	a.shardsFlag(cmd)
	a.pprofFlag(cmd)
	return cmd
}
