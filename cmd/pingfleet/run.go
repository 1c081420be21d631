package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/localredis"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

func (a *app) runCommand() *cobra.Command {
	var bf batchFlags
	var wf workerFlags
	var rf reportFlags
	var lf loopFlags
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
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if _, err := rf.statuses(); err != nil {
				return err
			}
			if a.output, err = lf.check(cmd, &bf, a.output); err != nil {
				return err
			}
			if lf.loop && !cmd.Flags().Changed("retention") {
				a.retention = loopRetention
			}
			if lf.summary > 0 && !lf.loop { // fping -Q without -l: -q, and a line now and then
				rf.quiet, rf.lines, rf.progressEvery = true, true, lf.summary
			}
			if rf.stream && lf.loop {
				return usageErr("--stream: --loop prints each round's results as it ends already")
			}
			a.events = rf.stream
			ctx := cmd.Context()
			kind, err := localredis.ParseKind(embedded)
			if err != nil {
				return usageErr("--embedded %v", err)
			}
			b, err := a.batch(&bf, args)
			if err != nil {
				return err
			}
			rdb, agg, err := a.connectFleet(cmd, kind)
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
				if !cmd.Flags().Changed("servers") {
					// Each asynq server's start and stop are script
					// calls, and miniredis runs them one at a time:
					// 64 servers cost a batch of 200 hosts 45 ms
					// (1.11-1.16 s against 1.07-1.09 s with 16), and
					// 16 fetch a batch of 10,000 as fast (bench/README.md).
					wf.servers = miniredisServers
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
			a.runsWorker = true
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
			if lf.loop {
				return a.loop(ctx, rdb, agg, b, pace, &rf, &lf)
			}
			sub, err := a.start(ctx, rdb, agg, b, pace)
			if err != nil {
				return err
			}
			return a.waitAndReport(ctx, agg, sub.ID, &rf, sub)
		},
	}
	bf.register(cmd.Flags())
	// One short-lived process: polling its private Redis often costs
	// little and starts and stops the batch sooner.
	wf.register(cmd, 10*time.Millisecond, false)
	a.outputFlag(cmd)
	a.retentionFlag(cmd)
	a.shardsFlag(cmd)
	rf.register(cmd, "")
	lf.register(cmd)
	cmd.Flags().StringVar(&embedded, "embedded", string(localredis.Auto), "private Redis without --redis: auto (redis-server if installed, else miniredis), redis-server or miniredis")
	// The in-process worker's and fleet's tuning: they still apply (with
	// --redis, run's worker is one of a fleet), but a user of run, as of
	// fping, never needs them; worker --help lists them.
	for _, f := range []string{"servers", "task-check-interval", "shutdown-timeout", "shards"} {
		_ = cmd.Flags().MarkHidden(f)
	}
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

// miniredisServers is how many asynq servers run's worker has on
// miniredis (worker.DefaultServers elsewhere).
const miniredisServers = 16

// miniredisWindow is how many tasks run keeps queued ahead of the results
// on miniredis, whose lists are Go slices: a push costs as much as the
// list is long.
const miniredisWindow = 2000
