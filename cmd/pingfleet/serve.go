package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/api"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/exporter"
	"github.com/pingfleet/pingfleet/notify"
	"github.com/pingfleet/pingfleet/redisconn"
	"github.com/pingfleet/pingfleet/worker"
)

func (a *app) serveCommand() *cobra.Command {
	var (
		addr      string
		tokens    []string
		tokenFile string
		tenantsAt string
		maxBody   int64
		maxHosts  int
		targets   policyFlags
		janitor   bool
		callbacks callbackFlags
		metrics   string
		limits    serverLimits
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API (batches, results, events, cancel, callbacks) until stopped",
		Example: `  pingfleet serve --redis redis://10.0.0.5:6379 --addr :8080 --token-file /run/secrets/pingfleet-tokens
  curl -X POST localhost:8080/v1/batches -H "Authorization: Bearer $TOKEN" -d '{"hosts":["10.0.0.0/28"]}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if limits.read <= 0 || limits.write <= 0 || limits.idle <= 0 || limits.streamWrite <= 0 || limits.conns < 1 || limits.streams < 1 || limits.streamsPerToken < 1 {
				return usageErr("--read-timeout, --write-timeout, --idle-timeout and --stream-write-timeout must be positive, --max-connections, --max-streams and --max-streams-per-token at least 1")
			}
			if v := a.getenv("PINGFLEET_TOKENS"); v != "" {
				tokens = append(tokens, strings.Split(v, ",")...)
			}
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return usageErr("--token-file: %v", err)
				}
				tokens = append(tokens, strings.Fields(string(b))...)
			}
			var tenants []api.Tenant
			if tenantsAt != "" {
				f, err := os.Open(tenantsAt)
				if err != nil {
					return usageErr("--tenants: %v", err)
				}
				tenants, err = api.ParseTenants(f)
				f.Close()
				if err != nil {
					return usageErr("--tenants %s: %v", tenantsAt, err)
				}
			}
			policy, err := targets.policy()
			if err != nil {
				return err
			}
			callbackPolicy, err := callbacks.policy()
			if err != nil {
				return err
			}
			rdb, agg, err := a.connectFleet(cmd, "")
			if err != nil {
				return err
			}
			enq, err := enqueuer.New(enqueuer.Config{Redis: rdb, Aggregator: agg, Shards: a.shards, Logger: a.logger})
			if err != nil {
				return systemErr(err)
			}
			notifier, canceller, err := a.lifecycle(rdb, agg)
			if err != nil {
				return err
			}
			defer canceller.Close() // after the server: the clean-ups of DELETEs
			// Event streams wait in blocking reads, a connection each: on
			// a client of their own, they never take the other routes'.
			streamRDB, err := redisconn.OpenPool(a.redisURL, limits.streams+8)
			if err != nil {
				return usageErr("--redis: %v", err)
			}
			defer streamRDB.Close()
			streamAgg, err := aggregator.New(aggregator.Config{Client: streamRDB, Retention: a.retention})
			if err != nil {
				return systemErr(err)
			}
			srv, err := api.New(api.Config{
				Redis: rdb, Aggregator: agg, Enqueuer: enq, Canceller: canceller,
				StreamAggregator: streamAgg, MaxStreams: limits.streams, MaxStreamsPerToken: limits.streamsPerToken,
				StreamWriteTimeout: limits.streamWrite,
				Tokens:             tokens, Tenants: tenants, MaxBodyBytes: maxBody, MaxHosts: maxHosts,
				Policy: policy, CallbackPolicy: callbackPolicy, Retention: a.retention, Logger: a.logger,
			})
			if err != nil {
				return usageErr("%v", err)
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return systemErr(fmt.Errorf("listen on %s: %w", addr, err))
			}
			sender, err := a.sender(&callbacks, agg)
			if err != nil {
				return err
			}
			cbSrv, cbMux := notify.NewServer(rdb, sender, worker.NewAsynqLogger(a.logger))
			if err := cbSrv.Start(cbMux); err != nil {
				return systemErr(fmt.Errorf("start callback delivery: %w", err))
			}
			defer cbSrv.Shutdown()
			var handler http.Handler = srv
			g, gctx := errgroup.WithContext(ctx)
			if metrics != "" {
				reg := exporter.NewRegistry()
				reg.MustRegister(exporter.NewCollector(rdb, agg, a.shards, a.logger))
				hm, err := exporter.NewHTTPMetrics(reg)
				if err != nil {
					return systemErr(err)
				}
				handler = hm.Wrap(srv)
				if err := a.serveMetrics(gctx, g, metrics, reg, rdb); err != nil {
					return err
				}
			}
			hs := &http.Server{
				Handler:           handler,
				ReadHeaderTimeout: 10 * time.Second,
				ReadTimeout:       limits.read,  // the whole request, body included
				WriteTimeout:      limits.write, // event streams set their own, per write
				IdleTimeout:       limits.idle,
			}
			l = netutil.LimitListener(l, limits.conns)
			fmt.Fprintf(a.stderr, "pingfleet: serving the API on http://%s\n", l.Addr())
			if len(tokens) == 0 && len(tenants) == 0 {
				a.logger.Warn("no API tokens: every client may submit batches (use --token, --token-file or PINGFLEET_TOKENS)")
			}
			// Requests (event streams above all) end when the server stops.
			hs.BaseContext = func(net.Listener) context.Context { return gctx }
			if janitor {
				j, err := notify.NewJanitor(notify.JanitorConfig{Aggregator: agg, Notifier: notifier, Client: rdb, Shards: a.shards, Logger: a.logger})
				if err != nil {
					return systemErr(err)
				}
				g.Go(func() error { return j.Run(gctx) })
			}
			g.Go(func() error {
				if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
					return err
				}
				return nil
			})
			g.Go(func() error {
				<-gctx.Done()
				sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				err := hs.Shutdown(sctx)
				if errors.Is(err, context.DeadlineExceeded) {
					return hs.Close()
				}
				return err
			})
			if err := g.Wait(); err != nil {
				return systemErr(err)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringArrayVar(&tokens, "token", nil, "accepted bearer token (repeatable; env PINGFLEET_TOKENS, comma-separated)")
	fs.StringVar(&tokenFile, "token-file", "", "read accepted bearer tokens from `FILE` (whitespace-separated)")
	fs.StringVar(&tenantsAt, "tenants", "", "read the API's tenants from `FILE`: one a line, \"NAME TOKEN[,TOKEN...] [batches=N] [hosts=N] [rate=N]\"; a tenant's tokens see its own batches only, tenants share the fleet equally, and its quota bounds its open batches, their hosts not done (429 past either) and their pings per second")
	fs.Int64Var(&maxBody, "max-body", api.DefaultMaxBodyBytes, "largest request body in bytes")
	fs.IntVar(&maxHosts, "max-hosts", api.DefaultMaxHosts, "most hosts in one batch (after expansion)")
	targets.register(fs)
	fs.BoolVar(&janitor, "janitor", true, "expire batches past their deadline and hand over missed callbacks")
	fs.StringVar(&metrics, "metrics-addr", "", "serve Prometheus metrics (queues, batches, API requests) at http://ADDR/metrics")
	callbacks.register(fs, "every worker")
	fs.DurationVar(&limits.read, "read-timeout", 30*time.Second, "most time to read a request, body included (a slow client is cut off)")
	fs.DurationVar(&limits.write, "write-timeout", time.Minute, "most time to write an answer (an event stream's writes get --stream-write-timeout each instead)")
	fs.DurationVar(&limits.streamWrite, "stream-write-timeout", api.DefaultStreamWriteTimeout, "most time for each write of an event stream: a client that reads nothing for that long is dropped")
	fs.IntVar(&limits.streams, "max-streams", api.DefaultMaxStreams, "most event streams open at once (429 past it); each holds a Redis connection")
	fs.IntVar(&limits.streamsPerToken, "max-streams-per-token", api.DefaultMaxStreamsPerToken, "most event streams one bearer token holds open at once (429 past it)")
	fs.DurationVar(&limits.idle, "idle-timeout", 2*time.Minute, "how long an idle keep-alive connection stays open")
	fs.IntVar(&limits.conns, "max-connections", defaultMaxConnections(worker.OpenFileLimit()), "most connections served at once; more wait to be accepted (default: the open-file limit less "+strconv.Itoa(reservedFiles)+" for Redis and the rest, from 1000 to 100000)")
	a.retentionFlag(cmd)
	a.shardsFlag(cmd)
	a.pprofFlag(cmd)
	return cmd
}

// serverLimits bound what clients can hold of the API server.
// reservedFiles are the open files serve keeps for other uses than client
// connections: Redis connections (the event streams hold one each, up to
// --max-streams), logs, the metrics listener.
const reservedFiles = 1100

// defaultMaxConnections is the most connections serve accepts at once by
// default: what the open-file limit leaves (so that a flood of idle or
// slow clients makes accept wait rather than fail with "too many open
// files"), at least 1000 and at most 100,000; 1000 if the limit is
// unknown.
func defaultMaxConnections(openFiles uint64) int {
	if openFiles == 0 {
		return 1000
	}
	return max(1000, min(100000, int(min(openFiles, 1<<20))-reservedFiles))
}

type serverLimits struct {
	read, write, idle        time.Duration
	streamWrite              time.Duration
	conns                    int
	streams, streamsPerToken int
}
