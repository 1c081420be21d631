package main

// End-to-end tests of the HTTP API with the built binary: several `serve`
// and `worker` processes on one real Redis.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/notify"
)

// startServe starts `pingfleet serve` on a free port and returns its URL.
func startServe(t *testing.T, redisURL string, args ...string) string {
	t.Helper()
	port, err := testkit.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	startProc(t, append([]string{"serve", "--redis", redisURL, "--addr", addr}, args...)...)
	url := "http://" + addr
	testkit.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return url
}

func postBatch(t *testing.T, url, body string) string {
	t.Helper()
	resp, err := http.Post(url+"/v1/batches", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: %d %s", resp.StatusCode, b)
	}
	var cr struct{ ID string }
	if err := json.Unmarshal(b, &cr); err != nil {
		t.Fatal(err)
	}
	return cr.ID
}

func getSummary(t *testing.T, url, id string) aggregator.Summary {
	t.Helper()
	resp, err := http.Get(url + "/v1/batches/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s aggregator.Summary
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

type callbackCounter struct {
	mu       sync.Mutex
	calls    int
	failures int // answer 500 to this many first calls
	ok       map[string]int
	badSig   int
	secret   []byte
}

func (c *callbackCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.calls <= c.failures {
		http.Error(w, "try later", http.StatusInternalServerError)
		return
	}
	if r.Header.Get(notify.SignatureHeader) != notify.Sign(c.secret, body) {
		c.badSig++
	}
	c.ok[r.Header.Get("X-Pingfleet-Batch")]++
}

func (c *callbackCounter) count(id string) (ok, calls, badSig int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok[id], c.calls, c.badSig
}

// Two API servers and two workers, each running a janitor: the batch's
// callback is delivered exactly once (after two failed tries).
func TestE2ECallbackOncePerFleet(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	secret := "fleet-secret"
	rcv := &callbackCounter{ok: map[string]int{}, failures: 2, secret: []byte(secret)}
	hs := httptest.NewServer(rcv)
	defer hs.Close()
	// The receiver is on loopback, which callbacks may reach only when
	// allowed.
	a := startServe(t, srv.URL(), "--callback-secret", secret, "--callback-allow", "127.0.0.0/8")
	b := startServe(t, srv.URL(), "--callback-secret", secret, "--callback-allow", "127.0.0.0/8")
	startWorker(t, srv.URL(), "--callback-secret", secret, "--callback-allow", "127.0.0.0/8")
	startWorker(t, srv.URL(), "--callback-secret", secret, "--callback-allow", "127.0.0.0/8")

	id := postBatch(t, a, fmt.Sprintf(`{"hosts": ["127.0.6.0/24"], "options": {"count": 1}, "callback_url": %q}`, hs.URL))
	testkit.Eventually(t, time.Minute, func() bool { return getSummary(t, b, id).State == aggregator.StateComplete })
	testkit.Eventually(t, time.Minute, func() bool { ok, _, _ := rcv.count(id); return ok > 0 })
	agg, err := aggregator.New(aggregator.Config{Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, time.Minute, func() bool {
		return testkit.CallbackSettled(context.Background(), srv.Client(), agg, id)
	}, "callback of %s settled", id)
	ok, calls, badSig := rcv.count(id)
	if ok != 1 || calls != 3 || badSig != 0 {
		t.Errorf("%d successful deliveries in %d calls (%d badly signed); want 1 in 3, all signed", ok, calls, badSig)
	}
}

// Every worker stops mid-batch: the batch expires at its deadline, the
// counts add up, and the callback goes out (from the API server).
func TestE2EDeadlineWithoutWorkers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rcv := &callbackCounter{ok: map[string]int{}}
	hs := httptest.NewServer(rcv)
	defer hs.Close()
	api := startServe(t, srv.URL(), "--callback-allow", "127.0.0.0/8") // the receiver is on loopback
	w := startWorker(t, srv.URL(), "--concurrency", "10", "--shutdown-timeout", "5s", "--callback-allow", "127.0.0.0/8")

	id := postBatch(t, api, fmt.Sprintf(`{"hosts": ["127.0.7.1-127.0.7.200"], "options": {"count": 3, "interval": "1s"}, "deadline": "8s", "callback_url": %q}`, hs.URL))
	testkit.Eventually(t, 30*time.Second, func() bool { return getSummary(t, api, id).Done >= 10 })
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	<-w.done

	testkit.Eventually(t, 30*time.Second, func() bool { return getSummary(t, api, id).State == aggregator.StateExpired })
	s := getSummary(t, api, id)
	if s.Expired == 0 || s.Up+s.Down+s.Error+s.Expired != s.Total || s.Pending != 0 {
		t.Errorf("expired summary does not add up: %+v", s)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { ok, _, _ := rcv.count(id); return ok == 1 })
}

// Two workers with a fleet-wide limit of 200 pings/s stay within 10 % of it.
func TestE2EFleetRateLimit(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	for range 2 {
		startWorker(t, srv.URL(), "--fleet-rate", "200", "--fleet-burst", "10")
	}
	hosts := loopbackHosts(600, 150)
	r := runBinary(t, hosts, "enqueue", "--redis", srv.URL(), "-", "-c", "1", "--wait", "-o", "ndjson")
	if r.code != ExitOK {
		t.Fatalf("enqueue --wait: exit %d\n%s", r.code, r.stderr)
	}
	results, _ := ndjsonReport(t, r.stdout)
	var starts []time.Time
	workers := map[string]bool{}
	for _, res := range results {
		starts = append(starts, res.Started)
		workers[res.Worker] = true
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	window := starts[len(starts)-1].Sub(starts[0]).Seconds()
	rate := float64(len(starts)-10) / window // the burst goes at once
	if rate < 180 || rate > 220 {
		t.Errorf("%d pings in %.2fs: %.0f/s; want 200/s ± 10%%", len(starts), window, rate)
	}
	if len(workers) != 2 {
		t.Logf("only %d worker(s) took part", len(workers))
	}
}

// scrape returns the text exposition of a /metrics endpoint.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	var body string
	testkit.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	return body
}

// metricValue finds the sample line that starts with series.
func metricValue(body, series string) string {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return rest
		}
	}
	return ""
}

// A worker and an API server expose metrics; after a real batch they say
// what happened.
func TestE2EMetrics(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	wPort, _ := testkit.FreePort()
	sPort, _ := testkit.FreePort()
	wAddr, sAddr := fmt.Sprintf("127.0.0.1:%d", wPort), fmt.Sprintf("127.0.0.1:%d", sPort)
	startWorker(t, srv.URL(), "--metrics-addr", wAddr, "--pprof")
	api := startServe(t, srv.URL(), "--metrics-addr", sAddr)

	id := postBatch(t, api, `{"hosts": ["127.0.8.1-20", "gone.invalid"], "options": {"count": 2, "interval": "20ms"}}`)
	testkit.Eventually(t, 30*time.Second, func() bool { return getSummary(t, api, id).State == aggregator.StateComplete })
	if resp, err := http.Get(api + "/v1/batches/no-such-batch"); err == nil {
		resp.Body.Close()
	}

	for _, probe := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + wAddr + probe)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("worker %s: %v %v", probe, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	wm := scrape(t, wAddr)
	for series, want := range map[string]string{
		`pingfleet_tasks_total{outcome="up"}`:    "20",
		`pingfleet_tasks_total{outcome="error"}`: "1",
		`pingfleet_pings_sent_total`:             "40",
		`pingfleet_pings_received_total`:         "40",
		`pingfleet_dns_failures_total`:           "1",
		`pingfleet_rtt_seconds_count`:            "20",
		`pingfleet_task_duration_seconds_count`:  "21",
		`pingfleet_pings_in_flight`:              "0",
		`pingfleet_receive_errors_total`:         "0",
	} {
		if got := metricValue(wm, series); got != want {
			t.Errorf("worker %s = %q; want %s", series, got, want)
		}
	}
	sm := scrape(t, sAddr)
	for series, want := range map[string]string{
		`pingfleet_api_requests_total{code="202",route="POST /v1/batches"}`:     "1",
		`pingfleet_api_requests_total{code="404",route="GET /v1/batches/{id}"}`: "1",
		`pingfleet_hosts_pending`:   "0",
		`pingfleet_exporter_errors`: "0",
	} {
		if got := metricValue(sm, series); got != want {
			t.Errorf("serve %s = %q; want %s", series, got, want)
		}
	}
	for _, series := range []string{`pingfleet_lane_tasks{priority="normal",state="pending"}`, `pingfleet_lane_tasks{priority="urgent",state="active"}`,
		`pingfleet_lane_latency_seconds{priority="high"}`, `pingfleet_lanes{priority="low"}`} {
		if metricValue(sm, series) == "" {
			t.Errorf("serve metrics lack %s:\n%s", series, sm)
		}
	}
	if strings.Contains(sm+wm, id) || strings.Contains(sm+wm, "127.0.8.1") {
		t.Error("a batch ID or host appears in metrics: label sets must stay bounded")
	}

	// Profiles only where --pprof asks for them.
	for addr, want := range map[string]int{wAddr: http.StatusOK, sAddr: http.StatusNotFound} {
		resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == http.StatusOK && !bytes.Contains(body, []byte("heap profile"))) {
			t.Errorf("GET %s/debug/pprof/heap: %s, want %d\n%.200s", addr, resp.Status, want, body)
		}
	}
}

// Secrets (the Redis password, API tokens, the callback secret) never
// reach the logs, even at debug level, while batch, host and task IDs do.
func TestE2ESecretsNotLogged(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, "--requirepass", "redis-pw-123")
	url := "redis://:redis-pw-123@" + srv.Addr + "/0"
	rcv := &callbackCounter{ok: map[string]int{}, secret: []byte("cb-secret-456")}
	hs := httptest.NewServer(rcv)
	defer hs.Close()
	w := startWorker(t, url, "--log-level", "debug", "--log-format", "json", "--callback-secret", "cb-secret-456")
	// The serve process only shows that a token on the command line is not
	// logged; the batch goes through the CLI, which shares the config.
	api := startProc(t, "serve", "--redis", url, "--addr", "127.0.0.1:0", "--log-level", "debug", "--token", "api-token-789")
	r := runBinary(t, "", "enqueue", "--redis", url, "127.0.0.1", "--wait", "--log-level", "debug", "-o", "ndjson")
	if r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	bad := runBinary(t, "", "status", "x", "--redis", "redis://:wrong-pw-000@"+srv.Addr+"/0")
	if bad.code != ExitSystem {
		t.Errorf("wrong password: exit %d; want 4", bad.code)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return strings.Contains(w.stderr.String(), `"msg":"host pinged"`) })
	logs := w.stderr.String() + api.stderr.String() + r.stderr + bad.stderr
	for _, secret := range []string{"redis-pw-123", "api-token-789", "cb-secret-456", "wrong-pw-000"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs show the secret %q:\n%s", secret, logs)
		}
	}
	for _, attr := range []string{`"batch":"`, `"host":"127.0.0.1"`, `"task":"`} {
		if !strings.Contains(w.stderr.String(), attr) {
			t.Errorf("worker debug log lacks %s:\n%s", attr, w.stderr)
		}
	}
}

// A client that sends its body slowly, or keeps a connection idle, is cut
// off at the server's timeouts instead of holding the connection forever.
func TestE2EServeTimeouts(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	url := startServe(t, srv.URL(), "--read-timeout", "1s", "--idle-timeout", "1s")
	addr := strings.TrimPrefix(url, "http://")
	closedWithin := func(conn net.Conn, limit time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(limit))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				var ne net.Error
				return !(errors.As(err, &ne) && ne.Timeout()) // closed by the server, not our deadline
			}
		}
	}
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"hosts\"")
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if !closedWithin(slow, 10*time.Second) {
		t.Error("a slow request body held its connection past the read timeout")
	}
	if !closedWithin(idle, 10*time.Second) {
		t.Error("an idle keep-alive connection stayed open past the idle timeout")
	}
	resp, err := http.Get(url + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz after: %v %v", resp, err)
	}
	resp.Body.Close()
}
