package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
)

// redisProxy starts, in this process, a toxiproxy in front of srv and
// returns it with the URL workers reach Redis by through it.
func redisProxy(t *testing.T, srv *redistest.Server) (*toxiproxy.Proxy, string) {
	t.Helper()
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	api.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	p := toxiproxy.NewProxy(api, "redis", "127.0.0.1:0", srv.Addr)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p, "redis://" + p.Listen + "/0"
}

// toxic adds a toxic to p (JSON as toxiproxy's API takes it) for d, then
// removes it.
func toxic(t *testing.T, p *toxiproxy.Proxy, d time.Duration, spec string) {
	t.Helper()
	w, err := p.Toxics.AddToxicJson(strings.NewReader(spec))
	if err != nil {
		t.Fatalf("toxic %s: %v", spec, err)
	}
	time.Sleep(d)
	if err := p.Toxics.RemoveToxic(context.Background(), w.Name); err != nil {
		t.Fatal(err)
	}
}

// Workers reach Redis through a proxy that, mid-batch, slows every reply
// by 300 ms, then resets every connection, then lets nothing through and
// closes connections after 2 s: the batch still completes, every host
// counted once, within 45 s of the last fault.
func TestE2ERedisFaultsThroughProxy(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	proxy, viaProxy := redisProxy(t, srv)
	startWorker(t, viaProxy, "--concurrency", "50")
	startWorker(t, viaProxy, "--concurrency", "50")
	hosts := loopbackHosts(600, 160)
	if r := runBinary(t, hosts, "enqueue", "--redis", srv.URL(), "-", "-c", "2", "-p", "500ms", "--batch-id", "proxied"); r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	rdb := srv.Client()
	done := func() int {
		n, _ := rdb.HGet(context.Background(), aggregator.Keys("proxied")[0], "done").Int()
		return n
	}
	testkit.Eventually(t, time.Minute, func() bool { return done() >= 60 }, "a tenth of the batch done")
	toxic(t, proxy, 3*time.Second, `{"name": "slow", "type": "latency", "stream": "downstream", "attributes": {"latency": 300}}`)
	t.Logf("after the latency: %d done", done())
	toxic(t, proxy, 2*time.Second, `{"name": "reset", "type": "reset_peer", "stream": "upstream", "attributes": {"timeout": 0}}`)
	t.Logf("after the resets: %d done", done())
	toxic(t, proxy, 4*time.Second, `{"name": "blackhole", "type": "timeout", "stream": "upstream", "attributes": {"timeout": 2000}}`)
	waitRecovered(t, srv, hosts, "proxied", time.Now(), "the last fault")
}

// waitRecovered waits for batch id of hosts, checks every host is up and
// counted once, and that it completed within 45 s of since, the end of a
// fault (the bound).
func waitRecovered(t *testing.T, srv *redistest.Server, hosts, id string, since time.Time, fault string) {
	t.Helper()
	w := runBinary(t, "", "wait", id, "--redis", srv.URL(), "-o", "ndjson")
	took := time.Since(since).Round(100 * time.Millisecond)
	if w.code != ExitOK {
		t.Fatalf("wait: exit %d\n%s", w.code, w.stderr)
	}
	results, sum := ndjsonReport(t, w.stdout)
	checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
	t.Logf("the batch completed %s after %s", took, fault)
	if took > 45*time.Second {
		t.Errorf("the batch completed %s after %s; want within 45 s", took, fault)
	}
}
