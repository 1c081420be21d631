package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/localredis"
	"github.com/pingfleet/pingfleet/redisconn"
	"github.com/pingfleet/pingfleet/tasks"
)

// Exit codes, as fping's.
const (
	ExitOK         = 0 // every host answered
	ExitDown       = 1 // some host did not answer
	ExitUnresolved = 2 // some host was not pinged: unresolved, cancelled or expired
	ExitUsage      = 3 // bad usage or invalid input
	ExitSystem     = 4 // system error: Redis unreachable...

	// ExitInterrupted is a run, enqueue --wait or wait stopped by SIGINT
	// or SIGTERM, as a shell reports a command killed by SIGINT.
	ExitInterrupted = 130
)

// exitError carries the exit code an error should end the process with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{ExitUsage, fmt.Errorf(format, a...)}
}

func systemErr(err error) error { return &exitError{ExitSystem, err} }

// exitCode maps err to the process exit code.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	default:
		return ExitSystem
	}
}

// resultCode is the exit code of a finished batch, as fping's: a host that
// was never pinged (its name did not resolve, or the batch was cancelled or
// expired first) is worse than one that did not answer.
func resultCode(s aggregator.Summary) int {
	switch {
	case s.Error > 0 || s.Cancelled > 0 || s.Expired > 0:
		return ExitUnresolved
	case s.Down > 0 || s.Pending > 0:
		return ExitDown
	default:
		return ExitOK
	}
}

// app holds what every command shares: I/O, global flags, and the
// connections opened for this invocation.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	redisURL  string
	rideOut   bool // wait for a Redis that does not answer yet (see ping)
	events    bool // this command reads batches' event streams (--stream)
	output    string
	logLevel  string
	logFormat string
	retention time.Duration
	shards    int
	// runsWorker: this command runs a worker in-process (run).
	runsWorker bool
	cpuProf    string
	pprof      bool

	logger  *slog.Logger
	closers []func()
	// local is the private Redis of `run` without --redis, if any.
	local *localredis.Server
}

// Main runs the pingfleet command line with args (without the program
// name) and returns the exit code. Tests call it directly.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	quietRedis.Do(func() { redis.SetLogger(discard{}) })
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv,
		retention: aggregator.DefaultRetention, shards: tasks.DefaultShards}
	defer a.close()
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	if ctx.Err() != nil && code == ExitSystem {
		// A signal cut the command short (while it created the batch, say):
		// 130, as a shell reports SIGINT, and say what is left.
		code = ExitInterrupted
		if a.local != nil {
			err = fmt.Errorf("interrupted (%w): the batch ended with this command (its private Redis is gone)", err)
		} else {
			err = fmt.Errorf("interrupted: %w", err)
		}
	}
	var ee *exitError
	if !errors.As(err, &ee) || !errors.Is(ee.err, errSilent) {
		if !strings.Contains(err.Error(), "\n") && code == ExitUsage && isFlagError(err) {
			fmt.Fprintf(stderr, "pingfleet: %v\nRun 'pingfleet --help' for usage.\n", err)
		} else {
			fmt.Fprintf(stderr, "pingfleet: %v\n", err)
		}
	}
	return code
}

// quietRedis silences go-redis's own logger (process-wide): its dial
// failures reach the user as errors of the commands.
var quietRedis sync.Once

type discard struct{}

func (discard) Printf(context.Context, string, ...any) {}

// errSilent ends the process with a code and no message: the output
// already told the user what happened (hosts down, say).
var errSilent = errors.New("")

func exitWith(code int) error {
	if code == ExitOK {
		return nil
	}
	return &exitError{code, errSilent}
}

type flagError struct{ error }

func isFlagError(err error) bool {
	var fe flagError
	return errors.As(err, &fe)
}

// Flags that only some commands take.

func (a *app) outputFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&a.output, "output", "o", "", "output format: table, json, ndjson or csv (default table on a terminal, json otherwise)")
}

func (a *app) retentionFlag(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&a.retention, "retention", aggregator.DefaultRetention, "how long a batch's results are kept in Redis")
}

func (a *app) shardsFlag(cmd *cobra.Command) {
	cmd.Flags().IntVar(&a.shards, "shards", tasks.DefaultShards, "number of queues tasks are spread over, for a fleet whose Redis records none yet (the first enqueuer or worker records it, the others take it; run on miniredis uses 1)")
}

func (a *app) pprofFlag(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&a.pprof, "pprof", false, "with --metrics-addr, also serve Go's runtime profiles (heap, goroutines, CPU) at http://ADDR/debug/pprof/")
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "pingfleet",
		Short: "Ping many hosts at once, across a fleet of workers sharing one Redis",
		Long: `pingfleet checks the reachability and latency of many hosts at once.

A batch of hosts (names, IPs, CIDRs, ranges, files, stdin) becomes one task
per host in Redis; any number of workers ping them; the results are
aggregated per batch. 'pingfleet run' does all of it in one process, with an
embedded Redis unless --redis is given.

Exit codes (as fping): 0 all hosts up, 1 some down, 2 some not pinged
(unresolved, cancelled, expired), 3 invalid usage or input, 4 system error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version(),
		// Without a command, help; an unknown one is a usage error (3).
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErr("unknown command %q; see 'pingfleet --help'", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setup()
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{ExitUsage, flagError{err}}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.redisURL, "redis", "", "Redis URL: redis://[user:password@]host:port/db, rediss:// for TLS, redis-cluster://host:port?addr=host2:port2, redis-sentinel://host:26379/db?master_name=NAME (env PINGFLEET_REDIS)")
	pf.StringVar(&a.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	pf.StringVar(&a.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&a.cpuProf, "cpuprofile", "", "write a CPU profile of this command to `FILE` (for go tool pprof)")

	root.AddCommand(a.runCommand(), a.enqueueCommand(), a.workerCommand(), a.waitCommand(),
		a.statusCommand(), a.resultsCommand(), a.batchesCommand(), a.cancelCommand(), a.serveCommand(), a.versionCommand(), a.manCommand())
	completeEnums(root) // its persistent flags: --log-level, --log-format
	for _, c := range root.Commands() {
		completeEnums(c)
		switch c.Name() {
		case "status", "results", "wait", "cancel":
			c.ValidArgsFunction = a.batchIDs
		}
	}
	return root
}

// setup checks the global flags and builds the logger.
func (a *app) setup() error {
	if a.redisURL == "" {
		a.redisURL = a.getenv("PINGFLEET_REDIS")
	}
	switch a.output {
	case "":
		a.output = "json"
		if isTerminal(a.stdout) {
			a.output = "table"
		}
	case "table", "json", "ndjson", "csv":
	default:
		return usageErr("--output %q: use table, json, ndjson or csv", a.output)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(a.logLevel)); err != nil {
		return usageErr("--log-level %q: use debug, info, warn or error", a.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch a.logFormat {
	case "text":
		a.logger = slog.New(slog.NewTextHandler(a.stderr, opts))
	case "json":
		a.logger = slog.New(slog.NewJSONHandler(a.stderr, opts))
	default:
		return usageErr("--log-format %q: use text or json", a.logFormat)
	}
	if a.shards < 1 || a.shards > tasks.MaxShards {
		return usageErr("--shards %d: must be between 1 and %d", a.shards, tasks.MaxShards)
	}
	if a.retention < time.Minute {
		return usageErr("--retention %s: must be at least 1m", a.retention)
	}
	if a.cpuProf != "" {
		f, err := os.Create(a.cpuProf)
		if err != nil {
			return usageErr("--cpuprofile: %v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return systemErr(err)
		}
		a.closers = append(a.closers, func() { pprof.StopCPUProfile(); f.Close() })
	}
	return nil
}

func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// redis connects to --redis or, when it is not given and embedded names a
// kind of private Redis (run's --embedded), to a private Redis that lives
// as long as the command.
func (a *app) redis(ctx context.Context, embedded localredis.Kind) (redis.UniversalClient, error) {
	if a.redisURL == "" && embedded != "" {
		s, err := localredis.Start(ctx, localredis.Config{Kind: embedded, Logger: a.logger})
		if err != nil {
			return nil, systemErr(fmt.Errorf("start embedded redis: %w", err))
		}
		a.closers = append(a.closers, func() { _ = s.Close() })
		a.local = s
		opts := s.Options()
		opts.PoolSize = redisconn.MinPoolSize
		c := redis.NewClient(opts)
		a.closers = append(a.closers, func() { _ = c.Close() })
		return c, nil
	}
	if a.redisURL == "" {
		return nil, usageErr("no Redis given: use --redis redis://host:6379 or set PINGFLEET_REDIS")
	}
	c, err := redisconn.Open(a.redisURL)
	if err != nil {
		return nil, usageErr("--redis: %v", err)
	}
	a.closers = append(a.closers, func() { _ = c.Close() })
	if err := a.ping(ctx, c); err != nil {
		return nil, systemErr(fmt.Errorf("connect to redis %s: %w", redisconn.Redact(a.redisURL), err))
	}
	return c, nil
}

// ping checks that Redis answers. A command that follows a batch
// (a.rideOut) waits for it as it does mid-batch, up to redisOutage.
func (a *app) ping(ctx context.Context, c redis.UniversalClient) error {
	var since time.Time
	for retry := redisRetry; ; retry = nextRetry(retry) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.Ping(pctx).Err()
		cancel()
		if err == nil || !a.rideOut || ctx.Err() != nil {
			return err
		}
		if since.IsZero() {
			since = time.Now()
			fmt.Fprintf(a.stderr, "pingfleet: Redis does not answer (%v); trying again for up to %s\n", err, redisOutage)
		}
		if time.Since(since) > redisOutage {
			return fmt.Errorf("unreachable for %s: %w", redisOutage, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retry):
		}
	}
}

// connect opens the Redis connection (see redis) and the aggregator on it.
func (a *app) connect(ctx context.Context, embedded localredis.Kind) (redis.UniversalClient, *aggregator.Aggregator, error) {
	rdb, err := a.redis(ctx, embedded)
	if err != nil {
		return nil, nil, err
	}
	// No one else reads a private Redis: its batches need no event stream
	// unless this command follows it (--stream).
	agg, err := aggregator.New(aggregator.Config{Client: rdb, Retention: a.retention, NoEvents: a.local != nil && !a.events})
	if err != nil {
		return nil, nil, systemErr(err)
	}
	return rdb, agg, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErr("%s takes %d argument(s), got %d; see 'pingfleet %s --help'", cmd.Name(), n, len(args), cmd.Name())
		}
		return nil
	}
}

// connectFleet connects as connect does, for a command that queues or
// serves tasks: it also takes the fleet's number of queues (fleetShards).
func (a *app) connectFleet(cmd *cobra.Command, embedded localredis.Kind) (redis.UniversalClient, *aggregator.Aggregator, error) {
	rdb, agg, err := a.connect(cmd.Context(), embedded)
	if err != nil {
		return nil, nil, err
	}
	if err := a.fleetShards(cmd, rdb); err != nil {
		return nil, nil, err
	}
	return rdb, agg, nil
}

// fleetShards makes this process use the fleet's number of ping queues
// (tasks.FleetShards): an enqueuer and workers started with different
// --shards would leave hosts on queues nobody serves. A private Redis has
// no fleet.
func (a *app) fleetShards(cmd *cobra.Command, rdb redis.UniversalClient) error {
	if a.local != nil {
		return nil
	}
	n, err := tasks.FleetShards(cmd.Context(), rdb, a.shards)
	if err != nil {
		return systemErr(err)
	}
	if n != a.shards && cmd.Flags().Changed("shards") {
		fmt.Fprintf(a.stderr, "pingfleet: --shards %d ignored: the fleet on this Redis uses %d queues (%s); to change that, stop the fleet, let its queues drain and delete the key\n", a.shards, n, tasks.ShardsKey)
	}
	a.shards = n
	return nil
}
