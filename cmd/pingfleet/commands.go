package main

import (
	"cmp"
	"context"
	"errors"
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
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/exporter"
	"github.com/pingfleet/pingfleet/localredis"
	"github.com/pingfleet/pingfleet/notify"
	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/ratelimit"
	"github.com/pingfleet/pingfleet/report"
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
	callbackSecret  string
	janitor         bool
	fleetRate       int
	fleetBurst      int
	checkInterval   time.Duration
	metricsAddr     string
	targets         policyFlags
}

// register adds the worker flags to cmd; checkInterval is the default of
// --task-check-interval (how fast an idle worker notices new tasks).
func (w *workerFlags) register(cmd *cobra.Command, checkInterval time.Duration) {
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
	fs.StringVar(&w.callbackSecret, "callback-secret", "", "sign callback bodies with HMAC-SHA256 under this secret (env PINGFLEET_CALLBACK_SECRET)")
	fs.IntVar(&w.fleetRate, "fleet-rate", 0, "most pings per second of the whole fleet, shared through Redis (0: no limit; give every worker the same value)")
	fs.IntVar(&w.fleetBurst, "fleet-burst", 0, "pings the fleet may send at once above --fleet-rate (default a tenth of it)")
	fs.BoolVar(&w.janitor, "janitor", true, "also expire batches past their deadline and hand over missed callbacks")
	fs.DurationVar(&w.dnsCacheMaxAge, "dns-cache-max-age", worker.DefaultDNSCacheMaxAge, "how long this worker reuses a name's addresses (0: no cache)")
	w.targets.register(fs)
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
	mode := ping.SocketAuto
	switch {
	case w.privileged:
		mode = ping.SocketPrivileged
	case w.unprivileged:
		mode = ping.SocketUnprivileged
	}
	var pinger worker.Pinger
	var engine *ping.Engine
	switch w.engine {
	case ping.EngineShared:
		if engine, err = ping.NewEngine(ping.EngineConfig{Mode: mode, Logger: a.logger}); err != nil {
			return err
		}
		a.closers = append(a.closers, func() { _ = engine.Close() })
		pinger = engine
	case ping.EngineProBing:
		if pinger, err = ping.NewProBing(ping.ProBingConfig{Mode: mode, Logger: a.logger}); err != nil {
			return err
		}
	default:
		return usageErr("--engine %q: use shared or probing", w.engine)
	}
	var resolver worker.Resolver = net.DefaultResolver
	if w.dnsCacheMaxAge > 0 {
		resolver = worker.NewCachingResolver(net.DefaultResolver, w.dnsCacheMaxAge)
	}
	id := worker.ID()
	rec := aggregator.NewBatcher(agg, 0)
	a.closers = append(a.closers, rec.Close)
	cancels := worker.WatchCancels(context.WithoutCancel(ctx), rdb)
	a.closers = append(a.closers, cancels.Close)
	notifier := notify.NewNotifier(asynq.NewClientFromRedisClient(rdb), agg, a.retention)
	limiter, err := ratelimit.New(ratelimit.Config{Client: rdb, FleetRate: w.fleetRate, Burst: w.fleetBurst})
	if err != nil {
		return usageErr("--fleet-rate: %v", err)
	}
	var metrics *worker.Metrics
	if w.metricsAddr != "" {
		reg := exporter.NewRegistry()
		if metrics, err = worker.NewMetrics(reg); err != nil {
			return systemErr(err)
		}
		if engine != nil {
			if err := worker.RegisterEngine(reg, engine); err != nil {
				return systemErr(err)
			}
		}
		if err := a.serveMetrics(ctx, g, w.metricsAddr, reg, rdb); err != nil {
			return err
		}
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
		s, err := notify.NewSender(notify.SenderConfig{Aggregator: agg, Secret: []byte(cmp.Or(w.callbackSecret, a.getenv("PINGFLEET_CALLBACK_SECRET"))), Logger: a.logger})
		if err != nil {
			return systemErr(err)
		}
		sender = s
	}
	if w.janitor {
		j := notify.NewJanitor(agg, notifier, 0, a.logger)
		g.Go(func() error { return j.Run(ctx) })
	}
	wk, err := worker.New(worker.Config{
		Redis:             rdb,
		Handler:           h,
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
	a.logger.Info("worker started", "worker", id, "concurrency", w.concurrency, "shards", a.shards)
	g.Go(func() error { return wk.Run(ctx) })
	return nil
}

func (a *app) workerCommand() *cobra.Command {
	var wf workerFlags
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: take ping tasks from Redis until stopped (SIGINT/SIGTERM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rdb, agg, err := a.connect(cmd.Context(), "")
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
	wf.register(cmd, worker.DefaultTaskCheckInterval)
	return cmd
}

func (a *app) runCommand() *cobra.Command {
	var bf batchFlags
	var wf workerFlags
	var quiet bool
	var embedded string
	cmd := &cobra.Command{
		Use:   "run [flags] [HOST|CIDR|RANGE|-]...",
		Short: "Ping a batch in this process: private Redis (or --redis), in-process workers, results",
		Long: `Ping a batch in this process and print its results.

Without --redis, run starts a private Redis for the life of the command: a
redis-server child on a unix socket when one is installed (fast), else the
in-process miniredis (slower for large batches). --embedded chooses.`,
		Example: `  pingfleet run 127.0.0.1/28 localhost -f hosts.txt --count 2
  seq 1 50 | sed 's/^/127.0.1./' | pingfleet run - -o csv`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			kind, err := localredis.ParseKind(embedded)
			if err != nil {
				return usageErr("--embedded %v", err)
			}
			b, err := a.batch(&bf, args)
			if err != nil {
				return err
			}
			rdb, agg, err := a.connect(ctx, kind)
			if err != nil {
				return err
			}
			if a.local != nil && a.local.Kind == localredis.Miniredis {
				if !cmd.Flags().Changed("shards") {
					// One queue on miniredis: it runs every script under
					// one lock in a new Lua state, so each idle poll of an
					// empty queue takes CPU from the batch (half of all CPU
					// for 200 hosts at -c 2), and the active list that
					// several queues keep short is cheap here.
					a.shards = 1
				}
				if a.local.Fallback != "" && len(b.Hosts) >= slowFallbackHosts {
					fmt.Fprintln(a.stderr, miniredisHint(a.local.Fallback))
				}
			}
			if err := a.sizeConcurrency(&wf); err != nil {
				return err
			}
			defer a.memoryPolicy(wf.concurrency)()
			wctx, stopWorker := context.WithCancel(ctx)
			var g errgroup.Group
			defer func() {
				stopWorker()
				_ = g.Wait()
			}()
			if err := a.startWorker(wctx, &g, &wf, rdb, agg, false); err != nil {
				return err
			}
			// This process's workers are the batch's: the enqueuer keeps
			// the queues no fuller than they can use (miniredis pays for a
			// push by the list's length), in the background so that the
			// results are followed meanwhile.
			pace := enqueuer.Config{Window: 2 * wf.concurrency, Ahead: aheadOfResults}
			if a.local != nil && a.local.Kind == localredis.Miniredis {
				pace = enqueuer.Config{Window: miniredisWindow}
			}
			sub, err := a.start(ctx, rdb, agg, b, pace)
			if err != nil {
				return err
			}
			return a.waitAndReport(ctx, agg, sub.ID, quiet, sub)
		},
	}
	bf.register(cmd.Flags())
	// One short-lived process: polling its private Redis often costs
	// little and starts and stops the batch sooner.
	wf.register(cmd, 10*time.Millisecond)
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the summary, not each host")
	cmd.Flags().StringVar(&embedded, "embedded", string(localredis.Auto), "private Redis without --redis: auto (redis-server if installed, else miniredis), redis-server or miniredis")
	return cmd
}

// slowFallbackHosts is the batch size from which run on miniredis, for want
// of a redis-server, says how much faster redis-server would be.
const slowFallbackHosts = 1000

// miniredisHint tells a user of run on miniredis what redis-server would
// gain, as measured in bench/README.md (scenarios 2 and 9).
func miniredisHint(why string) string {
	return "pingfleet: " + why + ", so this batch runs on the in-process miniredis: " +
		"with redis-server installed (apt-get install redis-server, brew install redis) it runs about " +
		miniredisSlowdown + " faster (" + miniredisFigure + ")"
}

// Measured side by side in bench/README.md, scenarios 2 and 9.
const (
	miniredisSlowdown = "3 to 4 times"
	miniredisFigure   = "10,000 hosts at -c 2: 6.5 s on miniredis, 1.8 s on redis-server"
)

func (a *app) enqueueCommand() *cobra.Command {
	var bf batchFlags
	var wait, quiet bool
	cmd := &cobra.Command{
		Use:   "enqueue [flags] [HOST|CIDR|RANGE|-]...",
		Short: "Submit a batch to the workers and print its ID",
		Example: `  pingfleet enqueue --redis redis://10.0.0.5:6379 -f hosts.txt --count 3
  pingfleet enqueue --batch-id nightly-42 -f hosts.txt --wait`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			b, err := a.batch(&bf, args)
			if err != nil {
				return err
			}
			rdb, agg, err := a.connect(ctx, "")
			if err != nil {
				return err
			}
			if !wait {
				id, err := a.submit(ctx, rdb, agg, b)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, id)
				return nil
			}
			// Waiting anyway, the enqueue keeps about ten seconds of the
			// fleet's work queued, not all of it: a million hosts' tasks
			// would hold 500 MB of Redis at once. Stopped, it queues the
			// rest at once (context.WithoutCancel): the batch goes on.
			sub, err := a.start(context.WithoutCancel(ctx), rdb, agg, b, enqueuer.Config{Window: waitWindow, Ahead: aheadOfResults})
			if err != nil {
				return err
			}
			return a.waitAndReport(ctx, agg, sub.ID, quiet, sub)
		},
	}
	bf.register(cmd.Flags())
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the batch to complete, then print its results")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "with --wait, print only the summary")
	return cmd
}

// batch builds the batch the flags and arguments describe, validating all
// of it before anything touches Redis.
func (a *app) batch(bf *batchFlags, args []string) (enqueuer.Batch, error) {
	opts, err := bf.options()
	if err != nil {
		return enqueuer.Batch{}, err
	}
	labels, err := bf.labelMap()
	if err != nil {
		return enqueuer.Batch{}, err
	}
	hosts, err := a.hosts(bf, args)
	if err != nil {
		return enqueuer.Batch{}, err
	}
	return enqueuer.Batch{ID: bf.batchID, Hosts: hosts, Options: opts, Labels: labels}, nil
}

// submit writes batch b and enqueues its tasks.
func (a *app) submit(ctx context.Context, rdb redis.UniversalClient, agg *aggregator.Aggregator, b enqueuer.Batch) (string, error) {
	sub, err := a.start(ctx, rdb, agg, b, enqueuer.Config{})
	if err != nil {
		return "", err
	}
	if err := a.enqueued(<-sub.Done()); err != nil {
		return "", err
	}
	return sub.ID, nil
}

// start writes batch b and enqueues its tasks in the background, paced as
// pace's Window and Ahead say; the submission's Done channel gives how that
// went (see enqueued).
func (a *app) start(ctx context.Context, rdb redis.UniversalClient, agg *aggregator.Aggregator, b enqueuer.Batch, pace enqueuer.Config) (*enqueuer.Submission, error) {
	enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg, Shards: a.shards, Window: pace.Window, Ahead: pace.Ahead})
	if err != nil {
		return nil, systemErr(err)
	}
	sub, err := enq.Start(ctx, b)
	switch {
	case errors.Is(err, enqueuer.ErrInvalidBatchID), errors.Is(err, aggregator.ErrConflict):
		return nil, usageErr("%v", err)
	case err != nil:
		return nil, systemErr(err)
	}
	return sub, nil
}

// enqueued reports how the enqueue of a batch ended, and turns its error
// into the command's.
func (a *app) enqueued(o enqueuer.Outcome) error {
	if o.Err != nil {
		return systemErr(o.Err)
	}
	res := o.Submitted
	a.logger.Info("batch submitted", "batch", res.ID, "hosts", res.Total, "enqueued", res.Enqueued, "existing", res.Existing, "resumed", res.Resumed)
	if res.Resumed {
		fmt.Fprintf(a.stderr, "pingfleet: batch %s existed: %d tasks added, %d already queued or done\n", res.ID, res.Enqueued, res.Existing)
	}
	return nil
}

// How far a command that waits for its batch keeps the batch's tasks ahead
// of its results: at least waitWindow tasks (enqueue --wait) or twice the
// in-flight limit (run), and as many as the fleet completes in
// aheadOfResults at its latest pace.
const (
	waitWindow     = 50000
	aheadOfResults = 10 * time.Second
)

// miniredisWindow is how many tasks run keeps queued ahead of the results
// on miniredis, whose lists are Go slices: a push costs as much as the
// list is long.
const miniredisWindow = 2000

func (a *app) waitCommand() *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "wait BATCH-ID",
		Short: "Wait for a batch to complete (progress bar on a terminal), then print its results",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			return a.waitAndReport(cmd.Context(), agg, args[0], quiet, nil)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the summary")
	return cmd
}

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status BATCH-ID",
		Short: "Print a batch's state and summary; exit code as for a finished batch",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			s, err := agg.Summary(cmd.Context(), args[0])
			if err != nil {
				return lookupErr(err)
			}
			if err := writeSummary(a.stdout, a.output, s); err != nil {
				return systemErr(err)
			}
			return exitWith(resultCode(s))
		},
	}
}

func (a *app) resultsCommand() *cobra.Command {
	var only []string
	cmd := &cobra.Command{
		Use:   "results BATCH-ID",
		Short: "Print each host's result, in submission order",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var statuses []aggregator.Status
			for _, s := range only {
				switch st := aggregator.Status(s); st {
				case aggregator.StatusUp, aggregator.StatusDown, aggregator.StatusError, aggregator.StatusPending:
					statuses = append(statuses, st)
				default:
					return usageErr("--status %q: use up, down, error or pending", s)
				}
			}
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			rw := report.NewResultWriter(a.stdout, a.output)
			err = agg.Results(cmd.Context(), args[0], rw.Write, statuses...)
			if err != nil {
				return lookupErr(err)
			}
			return rw.Close()
		},
	}
	cmd.Flags().StringSliceVar(&only, "status", nil, "only hosts with this status: up, down, error or pending (repeatable, comma-separated)")
	return cmd
}

func (a *app) batchesCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "batches",
		Short: "List recent batches, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, agg, err := a.connect(cmd.Context(), "")
			if err != nil {
				return err
			}
			list, err := agg.Recent(cmd.Context(), limit)
			if err != nil {
				return systemErr(err)
			}
			if err := writeBatches(a.stdout, a.output, list); err != nil {
				return systemErr(err)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "most batches to list")
	return cmd
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErr("%s takes %d argument(s), got %d; see 'pingfleet %s --help'", cmd.Name(), n, len(args), cmd.Name())
		}
		return nil
	}
}

func lookupErr(err error) error {
	if errors.Is(err, aggregator.ErrNotFound) {
		return usageErr("%v", err)
	}
	return systemErr(err)
}
