package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/pingfleet/pingfleet/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(deathsig.Spawner)) }

// fakePinger answers from a table of addresses; it records what it was asked.
type fakePinger struct {
	mu    sync.Mutex
	stats map[netip.Addr]ping.Stats
	err   error
	block bool // wait for ctx instead of answering
	asked []netip.Addr
}

func (f *fakePinger) Ping(ctx context.Context, ip netip.Addr, _ tasks.PingOptions) (ping.Stats, error) {
	f.mu.Lock()
	f.asked = append(f.asked, ip)
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return ping.Stats{}, ctx.Err()
	}
	if f.err != nil {
		return ping.Stats{}, f.err
	}
	return f.stats[ip], nil
}

// fakeResolver knows a few names.
type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	addrs, ok := f[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	var out []netip.Addr
	for _, a := range addrs {
		if network == "ip" || (network == "ip4") == a.Is4() {
			out = append(out, a)
		}
	}
	return out, nil
}

// LookupAddr answers from reverseNames.
func (fakeResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	names, ok := reverseNames[addr]
	if !ok {
		return nil, errors.New("no such host")
	}
	return names, nil
}

// reverseNames are the fake resolver's reverse (PTR) answers.
var reverseNames = map[string][]string{
	"127.0.0.10": {"up.test.", "other.test."},
	"127.0.0.11": {"bad,name.test."}, // not a DNS name: dropped
}

var (
	ipUp   = netip.MustParseAddr("127.0.0.10")
	ipDown = netip.MustParseAddr("127.0.0.11")
	ipV6   = netip.MustParseAddr("::1")
	// ipFirewalled's requests were all refused by a local firewall rule.
	ipFirewalled = netip.MustParseAddr("127.0.0.12")
)

type handlerEnv struct {
	reg    *prometheus.Registry
	agg    *aggregator.Aggregator
	srv    *redistest.Server
	pinger *fakePinger
	h      *worker.Handler
}

func setupHandler(t *testing.T, hosts ...string) handlerEnv {
	t.Helper()
	srv := redistest.Start(t)
	agg, err := aggregator.New(aggregator.Config{Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Create(context.Background(), aggregator.Batch{ID: "b", Hosts: hosts}); err != nil {
		t.Fatal(err)
	}
	p := &fakePinger{stats: map[netip.Addr]ping.Stats{
		ipUp:         {Sent: 3, Received: 2, Min: time.Millisecond, Avg: 2 * time.Millisecond, Max: 3 * time.Millisecond, Stdev: time.Millisecond, TTL: 64},
		ipDown:       {Sent: 3},
		ipV6:         {Sent: 3, Received: 3, Avg: time.Millisecond, Min: time.Millisecond, Max: time.Millisecond, TTL: 64},
		ipFirewalled: {Sent: 3, Refused: 3, RefusedErr: fmt.Errorf("sendmsg: %w", syscall.EPERM)},
	}}
	reg := prometheus.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	h, err := worker.NewHandler(worker.HandlerConfig{
		Recorder: agg,
		Pinger:   p,
		Metrics:  metrics,
		Resolver: fakeResolver{
			"db.test":    {ipV6, ipUp}, // IPv4 preferred for network "ip"
			"only6.test": {ipV6},
			"mdns.test":  {netip.MustParseAddr("224.0.0.251")},
		},
		WorkerID: "w1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return handlerEnv{reg: reg, agg: agg, srv: srv, pinger: p, h: h}
}

func task(t *testing.T, host string, opts tasks.PingOptions) *asynq.Task {
	t.Helper()
	tk, err := tasks.NewPingTask(tasks.PingPayload{BatchID: "b", Host: host, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func (e handlerEnv) result(t *testing.T, host string) aggregator.Result {
	t.Helper()
	var got aggregator.Result
	err := e.agg.Results(context.Background(), "b", func(r aggregator.Result) error {
		if r.Host == host {
			got = r
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestHandlerResults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		host string
		opts tasks.PingOptions
		want aggregator.Result
	}{
		{
			desc: "up",
			host: "127.0.0.10",
			want: aggregator.Result{Host: "127.0.0.10", IP: "127.0.0.10", Status: aggregator.StatusUp, Sent: 3, Received: 2,
				LossPct: 33.333, RTTMin: 1, RTTAvg: 2, RTTMax: 3, RTTStdev: 1, ReplyTTL: 64},
		},
		{
			desc: "down is a result, not an error",
			host: "127.0.0.11",
			want: aggregator.Result{Host: "127.0.0.11", IP: "127.0.0.11", Status: aggregator.StatusDown, Sent: 3, LossPct: 100},
		},
		{
			desc: "requests refused by a firewall: down, and why",
			host: "127.0.0.12",
			want: aggregator.Result{Host: "127.0.0.12", IP: "127.0.0.12", Status: aggregator.StatusDown, Sent: 3, LossPct: 100,
				Error: "3 of 3 requests not sent: sendmsg: operation not permitted"},
		},
		{
			desc: "name resolved, IPv4 preferred",
			host: "db.test",
			want: aggregator.Result{Host: "db.test", IP: "127.0.0.10", Status: aggregator.StatusUp, Sent: 3, Received: 2,
				LossPct: 33.333, RTTMin: 1, RTTAvg: 2, RTTMax: 3, RTTStdev: 1, ReplyTTL: 64},
		},
		{
			desc: "IPv6 only name",
			host: "only6.test",
			want: aggregator.Result{Host: "only6.test", IP: "::1", Status: aggregator.StatusUp, Sent: 3, Received: 3,
				RTTMin: 1, RTTAvg: 1, RTTMax: 1, ReplyTTL: 64},
		},
		{
			desc: "name not resolved is an error result",
			host: "nothere.test",
			want: aggregator.Result{Host: "nothere.test", Status: aggregator.StatusError, Error: "resolve nothere.test: no such host"},
		},
		{
			desc: "RFC 6761 .invalid fails without a lookup",
			host: "x.invalid",
			want: aggregator.Result{Host: "x.invalid", Status: aggregator.StatusError, Error: "resolve x.invalid: no such host (.invalid is reserved, RFC 6761)"},
		},
		{
			desc: "name resolved into a denied range: error result, no ping",
			host: "mdns.test",
			want: aggregator.Result{Host: "mdns.test", IP: "224.0.0.251", Status: aggregator.StatusError,
				Error: "denied by target policy: 224.0.0.251 is in denied range 224.0.0.0/4"},
		},
		{
			desc: "reverse name asked for (fping -n): the first, without its dot",
			host: "127.0.0.10",
			opts: tasks.PingOptions{Names: true},
			want: aggregator.Result{Host: "127.0.0.10", IP: "127.0.0.10", Name: "up.test", Status: aggregator.StatusUp, Sent: 3, Received: 2,
				LossPct: 33.333, RTTMin: 1, RTTAvg: 2, RTTMax: 3, RTTStdev: 1, ReplyTTL: 64},
		},
		{
			desc: "reverse name of a resolved name's address",
			host: "db.test",
			opts: tasks.PingOptions{Names: true},
			want: aggregator.Result{Host: "db.test", IP: "127.0.0.10", Name: "up.test", Status: aggregator.StatusUp, Sent: 3, Received: 2,
				LossPct: 33.333, RTTMin: 1, RTTAvg: 2, RTTMax: 3, RTTStdev: 1, ReplyTTL: 64},
		},
		{
			desc: "a reverse name that is not a DNS name is dropped",
			host: "127.0.0.11",
			opts: tasks.PingOptions{Names: true},
			want: aggregator.Result{Host: "127.0.0.11", IP: "127.0.0.11", Status: aggregator.StatusDown, Sent: 3, LossPct: 100},
		},
		{
			desc: "no reverse name: the address stands for itself",
			host: "::1",
			opts: tasks.PingOptions{Names: true},
			want: aggregator.Result{Host: "::1", IP: "::1", Status: aggregator.StatusUp, Sent: 3, Received: 3,
				RTTMin: 1, RTTAvg: 1, RTTMax: 1, ReplyTTL: 64},
		},
		{
			desc: "literal of the wrong family",
			host: "127.0.0.10",
			opts: tasks.PingOptions{Network: tasks.NetworkIP6},
			want: aggregator.Result{Host: "127.0.0.10", Status: aggregator.StatusError, Error: "resolve 127.0.0.10: not an ip6 address"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			env := setupHandler(t, tc.host)
			if err := env.h.ProcessTask(context.Background(), task(t, tc.host, tc.opts)); err != nil {
				t.Fatalf("ProcessTask: %v", err)
			}
			got := env.result(t, tc.host)
			if got.Started.IsZero() || got.Finished.Before(got.Started) {
				t.Errorf("times: started %v, finished %v", got.Started, got.Finished)
			}
			tc.want.Attempts, tc.want.Worker = 1, "w1"
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(aggregator.Result{}, "Started", "Finished"), cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			s, err := env.agg.Summary(context.Background(), "b")
			if err != nil {
				t.Fatal(err)
			}
			if s.State != aggregator.StateComplete || s.Done != 1 {
				t.Errorf("summary: state %s, done %d; want complete, 1", s.State, s.Done)
			}
		})
	}
}

// counter returns the value of the worker counter name.
func (e handlerEnv) counter(t *testing.T, name string) float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

func TestHandlerCounters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc    string
		host    string
		counter string
		want    float64
		sent    float64
	}{
		// Refused requests count as sent (and lost), like in fping.
		{"requests refused by a firewall", "127.0.0.12", "pingfleet_requests_refused_total", 3, 3},
		{"target denied after resolution: no ping", "mdns.test", "pingfleet_targets_denied_total", 1, 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			env := setupHandler(t, tc.host)
			if err := env.h.ProcessTask(context.Background(), task(t, tc.host, tasks.PingOptions{})); err != nil {
				t.Fatalf("ProcessTask: %v", err)
			}
			if got := env.counter(t, tc.counter); got != tc.want {
				t.Errorf("%s = %g; want %g", tc.counter, got, tc.want)
			}
			if got := env.counter(t, "pingfleet_pings_sent_total"); got != tc.sent {
				t.Errorf("pingfleet_pings_sent_total = %g; want %g", got, tc.sent)
			}
		})
	}
}

func TestHandlerPingErrorIsResult(t *testing.T) {
	t.Parallel()
	env := setupHandler(t, "127.0.0.10")
	env.pinger.err = errors.New("socket: permission denied")
	if err := env.h.ProcessTask(context.Background(), task(t, "127.0.0.10", tasks.PingOptions{})); err != nil {
		t.Fatalf("ProcessTask: %v", err)
	}
	if got := env.result(t, "127.0.0.10"); got.Status != aggregator.StatusError || got.Error != "socket: permission denied" {
		t.Errorf("result = %+v; want error status with the pinger's error", got)
	}
}

func TestHandlerBadPayloadSkipsRetry(t *testing.T) {
	t.Parallel()
	env := setupHandler(t, "127.0.0.10")
	for _, payload := range []string{
		`not json`,
		`{"v":1,"batch":"b","host":"127.0.0.10","opts":{"count":-1}}`,
		`{"v":99,"batch":"b","host":"127.0.0.10"}`,
	} {
		err := env.h.ProcessTask(context.Background(), asynq.NewTask(tasks.TypePingHost, []byte(payload)))
		if !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, tasks.ErrInvalidPayload) {
			t.Errorf("payload %s: error %v; want SkipRetry and ErrInvalidPayload", payload, err)
		}
	}
	if len(env.pinger.asked) != 0 {
		t.Errorf("pinged %v for bad payloads", env.pinger.asked)
	}
}

func TestHandlerUnknownBatchSkipsRetry(t *testing.T) {
	t.Parallel()
	env := setupHandler(t, "127.0.0.10")
	tk, err := tasks.NewPingTask(tasks.PingPayload{BatchID: "expired", Host: "127.0.0.10"})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.h.ProcessTask(context.Background(), tk); !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("error = %v; want SkipRetry", err)
	}
}

func TestHandlerRedisFailureRetries(t *testing.T) {
	t.Parallel()
	env := setupHandler(t, "127.0.0.10")
	env.srv.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := env.h.ProcessTask(ctx, task(t, "127.0.0.10", tasks.PingOptions{}))
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("error = %v; want a retryable error", err)
	}
}

func TestHandlerInterruptedRetries(t *testing.T) {
	t.Parallel()
	env := setupHandler(t, "127.0.0.10")
	env.pinger.block = true
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := env.h.ProcessTask(ctx, task(t, "127.0.0.10", tasks.PingOptions{}))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("error = %v; want a retryable deadline error", err)
	}
	if got := env.result(t, "127.0.0.10"); got.Status != aggregator.StatusPending {
		t.Errorf("interrupted ping recorded %+v; want nothing recorded", got)
	}
}

// newEngine returns the real engine, closed when the test ends.
func newEngine(t testing.TB) *ping.Engine {
	t.Helper()
	e, err := ping.NewEngine(ping.EngineConfig{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}
