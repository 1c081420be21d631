package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/api"
	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/notify"
	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/pingfleet/pingfleet/worker"
)

// loopbackCallbacks lets callbacks reach the tests' receivers, on
// loopback, which the default policy refuses.
var loopbackCallbacks = notify.CallbackPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(deathsig.Spawner)) }

const token = "t0ken"

type env struct {
	t        *testing.T
	srv      *redistest.Server
	rdb      *redis.Client
	agg      *aggregator.Aggregator
	notifier *notify.Notifier
	http     *httptest.Server
}

func setup(t *testing.T, mod func(*api.Config)) *env {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client()
	st := testkit.NewStore(t, rdb, aggregator.Config{})
	agg, enq := st.Aggregator, st.Enqueuer
	client := asynq.NewClientFromRedisClient(rdb)
	notifier, err := notify.NewNotifier(notify.NotifierConfig{Client: client, Aggregator: agg, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	canceller, err := notify.NewCanceller(notify.CancellerConfig{Aggregator: agg, Notifier: notifier, Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(canceller.Close)
	cfg := api.Config{
		Redis: rdb, Aggregator: agg, Enqueuer: enq, Canceller: canceller, Tokens: []string{token},
		MaxHosts: 6000, Logger: slog.New(slog.DiscardHandler),
		CallbackPolicy: loopbackCallbacks, // the tests' receivers listen there
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return &env{t: t, srv: srv, rdb: rdb, agg: agg, notifier: notifier, http: hs}
}

// do sends a request with the token and returns the status and body.
func (e *env) do(method, path, body string, headers ...string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) create(body string, headers ...string) api.CreateResponse {
	e.t.Helper()
	code, resp := e.do("POST", "/v1/batches", body, headers...)
	if code != http.StatusAccepted {
		e.t.Fatalf("POST /v1/batches: %d %s", code, resp)
	}
	var cr api.CreateResponse
	if err := json.Unmarshal([]byte(resp), &cr); err != nil {
		e.t.Fatal(err)
	}
	return cr
}

func (e *env) queued() int {
	e.t.Helper()
	queues, err := tasks.PingQueues(context.Background(), e.rdb, tasks.DefaultShards)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, q := range queues {
		for _, list := range []string{":pending", ":active"} {
			n += int(e.rdb.LLen(context.Background(), tasks.AsynqKeys(q)+list).Val())
		}
	}
	return n
}

// pingLog is a Pinger that answers at once (after delay) and notes when each ping started.
type pingLog struct {
	mu     sync.Mutex
	starts []time.Time
	delay  time.Duration
}

func (p *pingLog) Ping(ctx context.Context, _ netip.Addr, o tasks.PingOptions) (ping.Stats, error) {
	p.mu.Lock()
	p.starts = append(p.starts, time.Now())
	p.mu.Unlock()
	select {
	case <-ctx.Done():
		return ping.Stats{}, ctx.Err()
	case <-time.After(p.delay):
	}
	return ping.Stats{Sent: o.Count, Received: o.Count, Min: time.Millisecond, Avg: time.Millisecond, Max: time.Millisecond, TTL: 64}, nil
}

// startWorker runs an in-process worker (fake pinger, real asynq and Redis)
// until the test ends.
func (e *env) startWorker(p worker.Pinger, concurrency int, secret string) {
	e.t.Helper()
	logger := slog.New(slog.DiscardHandler)
	cancels, err := worker.NewCancelWatch(e.rdb)
	if err != nil {
		e.t.Fatal(err)
	}
	cancels.Start(context.Background())
	e.t.Cleanup(cancels.Close)
	h, err := worker.NewHandler(worker.HandlerConfig{
		Recorder: e.agg, Pinger: p, Logger: logger,
		Cancelled: cancels.Cancelled, Finished: e.notifier.FinishedBatch,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	sender, err := notify.NewSender(notify.SenderConfig{Aggregator: e.agg, Policy: loopbackCallbacks, Secret: []byte(secret), Logger: logger})
	if err != nil {
		e.t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Redis: e.rdb, Handler: h, Callbacks: sender, Concurrency: concurrency, Servers: 1, Logger: logger})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
		cancels.Close()
	})
}

func (e *env) waitState(id string, timeout time.Duration) aggregator.Summary {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := e.agg.Summary(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if s.Completed() {
			return s
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("batch %s not final after %s: %+v", id, timeout, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *api.Config) { c.MaxBodyBytes = 4096 })
	keys := e.rdb.DBSize(context.Background()).Val()
	tests := []struct {
		desc    string
		body    string
		code    int
		details []string // substrings each expected in the details, in order
	}{
		{"not JSON", `{"hosts": [`, 400, nil},
		{"unknown field", `{"hosts": ["127.0.0.1"], "colour": "red"}`, 400, nil},
		{"no hosts", `{"hosts": []}`, 422, []string{`"field": "hosts"`}},
		{"invalid hosts named by position", `{"hosts": ["127.0.0.1", "bad host!", "10.0.0.1-300"]}`, 422,
			[]string{`"position": 2`, `"position": 3`, "end 300"}},
		{"option out of bounds", `{"hosts": ["127.0.0.1"], "options": {"count": 20000, "interval": "1s"}}`, 422, []string{`"field": "options.count"`}},
		{"bad duration", `{"hosts": ["127.0.0.1"], "options": {"interval": "soon"}}`, 400, nil},
		{"denied target", `{"hosts": ["127.0.0.1", "224.0.0.9", "255.255.255.255"]}`, 422,
			[]string{"224.0.0.9 is in denied range 224.0.0.0/4", "255.255.255.255 is in denied range"}},
		{"callback not http", `{"hosts": ["127.0.0.1"], "callback_url": "ftp://x"}`, 422, []string{"callback_url"}},
		{"callback to a cloud metadata service", `{"hosts": ["127.0.0.1"], "callback_url": "http://169.254.169.254/latest/meta-data/"}`, 422,
			[]string{`"field": "callback_url"`, "169.254.169.254 is link-local"}},
		{"callback to a private address", `{"hosts": ["127.0.0.1"], "callback_url": "http://10.0.0.5:6379/"}`, 422, []string{"10.0.0.5 is private"}},
		{"callback to AWS's IPv6 metadata address", `{"hosts": ["127.0.0.1"], "callback_url": "http://[fd00:ec2::254]/"}`, 422, []string{"fd00:ec2::254 is private"}},
		{"deadline in the past", `{"hosts": ["127.0.0.1"], "deadline": "2001-01-01T00:00:00Z"}`, 422, []string{"deadline"}},
		{"deadline past the retention", `{"hosts": ["127.0.0.1"], "deadline": "100000h"}`, 422, []string{"must be within the batches' retention"}},
		{"unknown priority", `{"hosts": ["127.0.0.1"], "priority": "asap"}`, 422, []string{`"field": "priority"`, `"value": "asap"`, "low, normal, high or urgent"}},
		{"priority of another case", `{"hosts": ["127.0.0.1"], "priority": "Urgent"}`, 422, []string{`"field": "priority"`}},
		{"priority not a string", `{"hosts": ["127.0.0.1"], "priority": 3}`, 400, nil},
		{"too many hosts", `{"hosts": ["127.1.0.0/19"]}`, 413, []string{"limit of 6000 hosts"}},
		{"body too large", `{"hosts": ["` + strings.Repeat("a", 5000) + `"]}`, 413, nil},
		{"label value too long", `{"hosts": ["127.0.0.1"], "labels": {"job": "` + strings.Repeat("x", 300) + `"}}`, 422, []string{"values are at most 256 characters"}},
		{"control character in a label key", `{"hosts": ["127.0.0.1"], "labels": {"jo\u0007b": "x"}}`, 422, []string{"keys hold no control character"}},
		{"label key with =", `{"hosts": ["127.0.0.1"], "labels": {"a=b": "x"}}`, 422, []string{"keys hold no control character, space or '='"}},
		{"too many labels", `{"hosts": ["127.0.0.1"], "labels": {` + manyLabels(21) + `}}`, 422, []string{"21 labels: at most 20"}},

		// Keys that two JSON parsers could read differently.
		{"hosts twice", `{"hosts": ["127.0.0.1"], "hosts": ["127.0.0.2"]}`, 400, []string{`key \"hosts\" appears twice`}},
		{"HOSTS for hosts", `{"HOSTS": ["127.0.0.1"]}`, 400, []string{"lower case"}},
		{"hosts and Hosts", `{"hosts": ["127.0.0.1"], "Hosts": ["10.0.0.1"]}`, 400, []string{"lower case"}},
		{"an option twice", `{"hosts": ["127.0.0.1"], "options": {"count": 1, "count": 50}}`, 400, []string{"options.count"}},
		{"an option in capitals", `{"hosts": ["127.0.0.1"], "options": {"Count": 2}}`, 400, []string{"options.Count"}},
		{"a label twice", `{"hosts": ["127.0.0.1"], "labels": {"job": "a", "job": "b"}}`, 400, []string{"labels.job"}},
		// Zeros the options would silently replace by their default.
		{"count 0", `{"hosts": ["127.0.0.1"], "options": {"count": 0}}`, 422, []string{`"field": "options.count"`}},
		{"interval 0s", `{"hosts": ["127.0.0.1"], "options": {"interval": "0s"}}`, 422, []string{`"field": "options.interval"`, "leave it out"}},
		{"timeout 0ms", `{"hosts": ["127.0.0.1"], "options": {"timeout": "0ms"}}`, 422, []string{`"field": "options.timeout"`}},
		{"ttl 0", `{"hosts": ["127.0.0.1"], "options": {"ttl": 0}}`, 422, []string{`"field": "options.ttl"`}},
		{"size 0", `{"hosts": ["127.0.0.1"], "options": {"size": 0}}`, 422, []string{`"field": "options.size"`}},
		{"backoff 0", `{"hosts": ["127.0.0.1"], "options": {"backoff": 0}}`, 422, []string{`"field": "options.backoff"`}},
		// Options out of their bounds or of the wrong type.
		{"negative count", `{"hosts": ["127.0.0.1"], "options": {"count": -1}}`, 422, []string{"options.count"}},
		{"count as a string", `{"hosts": ["127.0.0.1"], "options": {"count": "3"}}`, 400, nil},
		{"count beyond int64", `{"hosts": ["127.0.0.1"], "options": {"count": 1e30}}`, 400, nil},
		{"negative interval", `{"hosts": ["127.0.0.1"], "options": {"interval": "-1s"}}`, 422, []string{"options.interval"}},
		{"interval in years", `{"hosts": ["127.0.0.1"], "options": {"interval": "1y"}}`, 400, nil},
		{"timeout over a minute", `{"hosts": ["127.0.0.1"], "options": {"timeout": "2m"}}`, 422, []string{"options.timeout"}},
		{"network ip5", `{"hosts": ["127.0.0.1"], "options": {"network": "ip5"}}`, 422, []string{"options.network"}},
		{"source not an address", `{"hosts": ["127.0.0.1"], "options": {"network": "ip4", "source": "me"}}`, 422, []string{"options.source"}},
		{"source without a family", `{"hosts": ["127.0.0.1"], "options": {"source": "127.0.0.1"}}`, 422, []string{"options.source"}},
		{"interface with a slash", `{"hosts": ["127.0.0.1"], "options": {"iface": "../eth0"}}`, 422, []string{"options.iface"}},
		{"tos 256", `{"hosts": ["127.0.0.1"], "options": {"tos": 256}}`, 422, []string{"options.tos"}},
		{"negative batch rate", `{"hosts": ["127.0.0.1"], "options": {"batch_rate": -1}}`, 422, []string{"options.batch_rate"}},
		{"retries with a count", `{"hosts": ["127.0.0.1"], "options": {"count": 3, "retries": 2}}`, 422, []string{"options.retries"}},
		{"too many retries", `{"hosts": ["127.0.0.1"], "options": {"retries": 1000}}`, 422, []string{"options.retries"}},
		{"unknown option", `{"hosts": ["127.0.0.1"], "options": {"colour": "red"}}`, 400, nil},
		// Bodies of the wrong shape.
		{"empty body", ``, 400, nil},
		{"null body", `null`, 422, []string{`"field": "hosts"`}},
		{"array body", `[]`, 400, nil},
		{"two JSON values", `{"hosts": ["127.0.0.1"]} {"hosts": ["127.0.0.2"]}`, 400, []string{"more than one value"}},
		{"trailing garbage", `{"hosts": ["127.0.0.1"]}x`, 400, nil},
		{"hosts a string", `{"hosts": "127.0.0.1"}`, 400, nil},
		{"hosts null", `{"hosts": null}`, 422, []string{`"field": "hosts"`}},
		{"a host a number", `{"hosts": [127]}`, 400, nil},
		{"labels a list", `{"hosts": ["127.0.0.1"], "labels": ["job"]}`, 400, nil},
		{"a label a number", `{"hosts": ["127.0.0.1"], "labels": {"job": 1}}`, 400, nil},
		{"a label an object", `{"hosts": ["127.0.0.1"], "labels": {"job": {"a": {"b": "c"}}}}`, 400, nil},
		{"callback a number", `{"hosts": ["127.0.0.1"], "callback_url": 8080}`, 400, nil},
		// Hosts that are not hosts.
		{"empty host", `{"hosts": [""]}`, 422, []string{`"position": 1`}},
		{"host with a NUL", `{"hosts": ["a\u0000b"]}`, 422, []string{`"position": 1`}},
		{"host with invalid UTF-8", "{\"hosts\": [\"caf\xe9.example\"]}", 422, []string{`"position": 1`}},
		{"reversed range", `{"hosts": ["127.0.0.10-127.0.0.1"]}`, 422, []string{`"position": 1`}},
		{"the whole IPv4 space", `{"hosts": ["0.0.0.0/0"]}`, 422, []string{`"position": 1`}},
		{"an IPv6 zone too long", `{"hosts": ["fe80::1%` + strings.Repeat("z", 20) + `"]}`, 422, []string{`"position": 1`}},
		{"a name label over 63 characters", `{"hosts": ["` + strings.Repeat("a", 64) + `.example"]}`, 422, []string{`"position": 1`}},
		{"a name over 253 characters", `{"hosts": ["` + strings.Repeat("abcdefghi.", 26) + `com"]}`, 422, []string{`"position": 1`}},
		{"a CIDR with a bad mask", `{"hosts": ["127.0.0.0/33"]}`, 422, []string{`"position": 1`}},
		// Deadlines, callbacks and labels out of bounds.
		{"deadline not a time", `{"hosts": ["127.0.0.1"], "deadline": "soon"}`, 422, []string{"deadline"}},
		{"deadline 0s", `{"hosts": ["127.0.0.1"], "deadline": "0s"}`, 422, []string{"deadline"}},
		{"negative deadline", `{"hosts": ["127.0.0.1"], "deadline": "-5m"}`, 422, []string{"deadline"}},
		{"callback without a host", `{"hosts": ["127.0.0.1"], "callback_url": "http://"}`, 422, []string{"has no host"}},
		{"javascript callback", `{"hosts": ["127.0.0.1"], "callback_url": "javascript:alert(1)"}`, 422, []string{"callback_url"}},
		{"empty label key", `{"hosts": ["127.0.0.1"], "labels": {"": "x"}}`, 422, []string{"labels"}},
		{"label key of 65 characters", `{"hosts": ["127.0.0.1"], "labels": {"` + strings.Repeat("k", 65) + `": "x"}}`, 422, []string{"labels"}},
	}
	if len(tests) < 60 {
		t.Errorf("%d hostile bodies; the table should hold at least 60", len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			code, body := e.do("POST", "/v1/batches", tc.body)
			if code >= 500 {
				t.Errorf("a client's mistake answered %d", code)
			}
			if code != tc.code {
				t.Errorf("status %d; want %d\n%s", code, tc.code, body)
			}
			var er api.Error
			if err := json.Unmarshal([]byte(body), &er); err != nil || er.Error == "" {
				t.Errorf("body is not an error document: %v\n%s", err, body)
			}
			rest := body
			for _, d := range tc.details {
				i := strings.Index(rest, d)
				if i < 0 {
					t.Errorf("details lack %q (in order):\n%s", d, body)
					break
				}
				rest = rest[i+len(d):]
			}
		})
	}
	if n := e.rdb.DBSize(context.Background()).Val(); n != keys {
		t.Errorf("rejected requests left %d keys; want %d", n, keys)
	}
}

func TestAuthAndHealth(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	for _, tc := range []struct {
		path, auth string
		code       int
	}{
		{"/v1/batches", "", 401},
		{"/v1/batches", "Bearer nope", 401},
		{"/v1/batches", "t0ken", 401},
		{"/v1/batches", "Bearer " + token, 200},
		{"/healthz", "", 200},
		{"/readyz", "", 200},
		{"/openapi.json", "", 200},
		{"/v1/batches/nope", "Bearer " + token, 404},
	} {
		req, _ := http.NewRequest(http.MethodGet, e.http.URL+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("GET %s with %q: %d; want %d", tc.path, tc.auth, resp.StatusCode, tc.code)
		}
	}
	e.srv.Kill()
	resp, err := http.Get(e.http.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz with Redis down: %d; want 503", resp.StatusCode)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	body := `{"hosts": ["127.0.0.1-40"], "labels": {"job": "ci"}}`
	var wg sync.WaitGroup
	ids := make([]string, 4)
	for i := range ids {
		wg.Go(func() { ids[i] = e.create(body, "Idempotency-Key", "deploy-7").ID })
	}
	wg.Wait()
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Fatalf("same key, same body gave batches %v; want one", ids)
		}
	}
	if n := e.queued(); n != 40 {
		t.Errorf("%d tasks queued; want 40 (one set)", n)
	}
	code, resp := e.do("POST", "/v1/batches", `{"hosts": ["127.0.0.2"]}`, "Idempotency-Key", "deploy-7")
	if code != http.StatusConflict {
		t.Errorf("same key, other body: %d %s; want 409", code, resp)
	}
	other := e.create(body, "Idempotency-Key", "deploy-8")
	if other.ID == ids[0] {
		t.Error("another key gave the same batch")
	}
	// The same request laid out otherwise (another client library, keys
	// in another order) is the same request.
	again := e.create("{\n  \"labels\":{\"job\":\"ci\"},\n  \"hosts\":[ \"127.0.0.1-40\" ]\n}\n", "Idempotency-Key", "deploy-7")
	if again.ID != ids[0] || !again.Existing {
		t.Errorf("same key, same request re-formatted: %+v; want batch %s again", again, ids[0])
	}
}

// Options a client gives explicitly are kept as given: "retries": 0 is one
// request, not the default three retries.
func TestExplicitOptions(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	cr := e.create(`{"hosts": ["127.0.0.1"], "options": {"retries": 0}, "labels": {"Team": "Net"}}`)
	s, err := e.agg.Summary(context.Background(), cr.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Options.Count != 1 || s.Options.Retries != 0 || s.Labels["Team"] != "Net" {
		t.Errorf("options %+v, labels %v; want one request, no retry, and the label's case kept", s.Options, s.Labels)
	}
}

// A batch's priority is recorded with it, shown in its summary, and given
// to its lane, where the workers read it; without one it is normal.
func TestPriority(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	urgent := e.create(`{"hosts": ["127.0.0.1", "127.0.0.2"], "priority": "urgent"}`)
	plain := e.create(`{"hosts": ["127.0.0.3"]}`)
	code, body := e.do("GET", "/v1/batches/"+urgent.ID, "")
	if code != 200 || !strings.Contains(body, `"priority": "urgent"`) {
		t.Errorf("GET the urgent batch: %d %s; want its priority", code, body)
	}
	lanes, bad, err := tasks.ReadLanes(context.Background(), e.rdb)
	if err != nil || len(bad) > 0 {
		t.Fatal(err, bad)
	}
	got := map[string]tasks.Priority{}
	for _, l := range lanes {
		got[l.Batch] = l.Priority
	}
	if got[urgent.ID] != tasks.PriorityUrgent || got[plain.ID] != tasks.PriorityNormal {
		t.Errorf("lanes %v; want %s urgent and %s normal", lanes, urgent.ID, plain.ID)
	}
	if s, err := e.agg.Summary(context.Background(), plain.ID); err != nil || s.Priority != tasks.PriorityNormal {
		t.Errorf("summary of a batch without a priority: %+v, %v; want normal", s, err)
	}
}

// Queries and routes a client can get wrong: each is a 4xx naming the
// problem, never a 5xx.
func TestHostileQueries(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	id := e.create(`{"hosts": ["127.0.0.1"]}`).ID
	for _, tc := range []struct {
		method, path string
		headers      []string
		code         int
	}{
		{"GET", "/v1/batches?limit=0", nil, 400},
		{"GET", "/v1/batches?limit=abc", nil, 400},
		{"GET", "/v1/batches?limit=100000", nil, 400},
		{"GET", "/v1/batches?limit=-1", nil, 400},
		{"GET", "/v1/batches?before=yesterday", nil, 400},
		{"GET", "/v1/batches?label=novalue", nil, 400},
		{"GET", "/v1/batches/" + id + "/results?format=xml", nil, 400},
		{"GET", "/v1/batches/" + id + "/results?status=bogus", nil, 400},
		{"GET", "/v1/batches/" + id + "/events", []string{"Last-Event-ID", "abc"}, 400},
		{"GET", "/v1/batches/" + id + "/events", []string{"Last-Event-ID", "99999999999999999999999"}, 400},
		{"GET", "/v1/batches/nope", nil, 404},
		{"GET", "/v1/batches/nope/results", nil, 404},
		{"GET", "/v1/batches/nope/events", nil, 404},
		{"GET", "/v1/batches/" + strings.Repeat("x", 5000), nil, 404},
		{"GET", "/v1/batches/%7B" + id + "%7D", nil, 404},
		{"DELETE", "/v1/batches/nope", nil, 404},
		{"PUT", "/v1/batches", nil, 405},
		{"PATCH", "/v1/batches/" + id, nil, 405},
		{"GET", "/v1/nothing", nil, 404},
		{"GET", "/v1/batches", []string{"Authorization", "Bearer "}, 401},
		{"GET", "/v1/batches", []string{"Authorization", "Basic dTpw"}, 401},
	} {
		code, body := e.do(tc.method, tc.path, "", tc.headers...)
		if code != tc.code {
			t.Errorf("%s %s %v: %d; want %d\n%s", tc.method, truncate(tc.path, 80), tc.headers, code, tc.code, body)
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func TestResultsListAndFormats(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.startWorker(&pingLog{}, 20, "")
	cr := e.create(`{"hosts": ["127.0.0.1-3", "nope.invalid"], "labels": {"team": "a"}}`)
	e.waitState(cr.ID, 20*time.Second)
	e.create(`{"hosts": ["127.0.0.9"], "labels": {"team": "b"}}`)

	code, body := e.do("GET", "/v1/batches/"+cr.ID+"/results?status=error&format=ndjson", "")
	if code != 200 || strings.Count(body, "\n") != 1 || !strings.Contains(body, `"host":"nope.invalid"`) {
		t.Errorf("results?status=error: %d\n%s", code, body)
	}
	code, body = e.do("GET", "/v1/batches/"+cr.ID+"/results?format=csv", "")
	if code != 200 || strings.Count(body, "\n") != 5 || !strings.HasPrefix(body, "host,ip,status") {
		t.Errorf("results csv: %d\n%s", code, body)
	}
	code, body = e.do("GET", "/v1/batches/"+cr.ID+"/results", "")
	var rs []aggregator.Result
	if err := json.Unmarshal([]byte(body), &rs); code != 200 || err != nil || len(rs) != 4 {
		t.Errorf("results json: %d %v\n%s", code, err, body)
	}
	if code, body := e.do("DELETE", "/v1/batches/"+cr.ID, ""); code != http.StatusConflict {
		t.Errorf("DELETE of a complete batch: %d %s; want 409", code, body)
	}
	for _, path := range []string{"/v1/batches/nope/results", "/v1/batches/nope/events"} {
		if code, _ := e.do("GET", path, ""); code != http.StatusNotFound {
			t.Errorf("GET %s: %d; want 404", path, code)
		}
	}
	if code, _ := e.do("DELETE", "/v1/batches/nope", ""); code != http.StatusNotFound {
		t.Errorf("DELETE of an unknown batch: %d; want 404", code)
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?before=yesterday", "?label=nolabel"} {
		if code, _ := e.do("GET", "/v1/batches"+q, ""); code != http.StatusBadRequest {
			t.Errorf("GET /v1/batches%s: %d; want 400", q, code)
		}
	}
	for _, bad := range []string{"?format=xml", "?status=sideways"} {
		if code, _ := e.do("GET", "/v1/batches/"+cr.ID+"/results"+bad, ""); code != 400 {
			t.Errorf("results%s: %d; want 400", bad, code)
		}
	}
	code, body = e.do("GET", "/v1/batches/"+cr.ID, "")
	var b api.BatchResponse
	if err := json.Unmarshal([]byte(body), &b); code != 200 || err != nil || b.Progress != 1 || b.Up != 3 || b.Error != 1 {
		t.Errorf("GET batch: %d %v %+v", code, err, b)
	}
	code, body = e.do("GET", "/v1/batches?label=team=a", "")
	if code != 200 || !strings.Contains(body, cr.ID) || strings.Count(body, `"id"`) != 1 {
		t.Errorf("list by label: %d\n%s", code, body)
	}
	code, body = e.do("GET", "/v1/batches?limit=1", "")
	var page struct {
		Batches    []api.BatchResponse `json:"batches"`
		NextBefore string              `json:"next_before"`
	}
	if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil || len(page.Batches) != 1 || page.NextBefore == "" {
		t.Fatalf("list page 1: %d %v\n%s", code, err, body)
	}
	code, body = e.do("GET", "/v1/batches?limit=1&before="+page.NextBefore, "")
	if code != 200 || !strings.Contains(body, cr.ID) {
		t.Errorf("list page 2 should hold the older batch: %d\n%s", code, body)
	}
}

// Cancel in the middle of a 5,000-host batch: no ping starts after the
// cancel is acknowledged, except tasks already running, and the counts
// still add up.
func TestCancelMidBatch(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	pl := &pingLog{delay: 20 * time.Millisecond}
	e.startWorker(pl, 50, "")
	cr := e.create(`{"hosts": ["127.1.0.1-127.1.19.136"]}`)
	if cr.Total != 5000 {
		t.Fatalf("total %d; want 5000", cr.Total)
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		s, _ := e.agg.Summary(context.Background(), cr.ID)
		return s.Done >= 500
	}, "500 hosts done")
	code, body := e.do("DELETE", "/v1/batches/"+cr.ID, "")
	acked := time.Now()
	if code != 200 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	// Once nothing is queued or running, no ping can start any more.
	testkit.Eventually(t, 30*time.Second, func() bool { return e.queued() == 0 }, "queues of the cancelled batch empty and idle")
	pl.mu.Lock()
	late := 0
	for _, s := range pl.starts {
		if s.After(acked) {
			late++
		}
	}
	pl.mu.Unlock()
	if late > 0 {
		t.Errorf("%d pings started after the cancel was acknowledged", late)
	}
	s, err := e.agg.Summary(context.Background(), cr.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != aggregator.StateCancelled || s.Cancelled == 0 || s.Up+s.Down+s.Error+s.Cancelled != s.Total || s.Done != s.Total {
		t.Errorf("summary after cancel: %+v", s)
	}
	if code, body := e.do("DELETE", "/v1/batches/"+cr.ID, ""); code != 200 {
		t.Errorf("second DELETE: %d %s; want 200 (idempotent)", code, body)
	}
}

type receiver struct {
	mu        sync.Mutex
	calls     int
	successes map[string]int
	failFirst int
	sigs      []string
	bodies    []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls <= r.failFirst {
		http.Error(w, "not now", http.StatusServiceUnavailable)
		return
	}
	r.successes[req.Header.Get("X-Pingfleet-Batch")]++
	r.sigs = append(r.sigs, req.Header.Get(notify.SignatureHeader))
	r.bodies = append(r.bodies, string(b))
}

func TestCallbackExactlyOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	rcv := &receiver{successes: map[string]int{}, failFirst: 2}
	rs := httptest.NewServer(rcv)
	defer rs.Close()
	e.startWorker(&pingLog{}, 10, "shh")
	cr := e.create(fmt.Sprintf(`{"hosts": ["127.0.0.1-5"], "callback_url": %q}`, rs.URL))
	e.waitState(cr.ID, 20*time.Second)
	// Retries after 2 s and 4 s: success on the third try, then nothing more.
	deadline := time.Now().Add(30 * time.Second)
	for {
		rcv.mu.Lock()
		n := rcv.successes[cr.ID]
		rcv.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no successful callback within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Janitors and repeated notifications must not send it again.
	j, err := notify.NewJanitor(notify.JanitorConfig{Aggregator: e.agg, Notifier: e.notifier, Interval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := j.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := e.notifier.FinishedBatch(context.Background(), cr.ID); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		return testkit.CallbackSettled(context.Background(), e.rdb, e.agg, cr.ID)
	}, "callback of %s settled", cr.ID)
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if rcv.successes[cr.ID] != 1 || rcv.calls != 3 {
		t.Errorf("%d successful deliveries in %d calls; want 1 in 3", rcv.successes[cr.ID], rcv.calls)
	}
	if want := notify.Sign([]byte("shh"), []byte(rcv.bodies[0])); rcv.sigs[0] != want {
		t.Errorf("signature %q; want %q", rcv.sigs[0], want)
	}
	var s aggregator.Summary
	if err := json.Unmarshal([]byte(rcv.bodies[0]), &s); err != nil || s.ID != cr.ID || s.State != aggregator.StateComplete || s.Up != 5 {
		t.Errorf("callback body %s: %v", rcv.bodies[0], err)
	}
}

// No worker at all: the batch expires at its deadline and calls back.
func TestDeadlineExpires(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	rcv := &receiver{successes: map[string]int{}}
	rs := httptest.NewServer(rcv)
	defer rs.Close()
	cr := e.create(fmt.Sprintf(`{"hosts": ["127.0.0.1-4"], "deadline": "1s", "callback_url": %q}`, rs.URL))
	j, err := notify.NewJanitor(notify.JanitorConfig{Aggregator: e.agg, Notifier: e.notifier, Interval: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = j.Run(ctx) }()
	defer func() { cancel(); <-done }()
	s := e.waitState(cr.ID, 10*time.Second)
	if s.State != aggregator.StateExpired || s.Expired != 4 || s.Done != 4 {
		t.Errorf("summary %+v; want expired with 4 expired hosts", s)
	}
	// The callback task is queued for a worker; start one to deliver it.
	e.startWorker(&pingLog{}, 5, "")
	deadline := time.Now().Add(15 * time.Second)
	for {
		rcv.mu.Lock()
		n := rcv.successes[cr.ID]
		rcv.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no callback for the expired batch")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readSSE follows batch id's event stream from last, reconnecting with
// Last-Event-ID after every drop events results, and returns how often it
// saw each host and whether the complete event came.
func (e *env) readSSE(t *testing.T, id, last string, drop int) (map[string]int, bool) {
	t.Helper()
	seen := map[string]int{}
	for attempt := 0; attempt < 1000; attempt++ {
		req, _ := http.NewRequest(http.MethodGet, e.http.URL+"/v1/batches/"+id+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		var ev, event string
		got, complete := 0, false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				ev = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "result":
				var r aggregator.Result
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &r); err != nil {
					t.Fatal(err)
				}
				if r.Status != aggregator.StatusUp || r.Sent == 0 {
					t.Fatalf("event %s: result %+v", ev, r)
				}
				seen[r.Host]++
				last, got = ev, got+1
			case strings.HasPrefix(line, "data: ") && event == "complete":
				complete = true
			}
			if (drop > 0 && got == drop) || complete { // drop the connection now and then
				break
			}
		}
		resp.Body.Close()
		if complete {
			return seen, true
		}
	}
	return seen, false
}

func checkSeenOnce(t *testing.T, seen map[string]int, complete bool, n int) {
	t.Helper()
	if !complete {
		t.Error("no complete event")
	}
	if len(seen) != n {
		t.Errorf("%d distinct hosts seen; want %d", len(seen), n)
	}
	for h, k := range seen {
		if k != 1 {
			t.Errorf("host %s seen %d times", h, k)
		}
	}
}

// A client that drops the event stream and reconnects with Last-Event-ID
// sees every result exactly once, then the complete event.
func TestEventsReconnect(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	cr := e.create(`{"hosts": ["127.0.3.1-60"]}`)
	e.startWorker(&pingLog{delay: 5 * time.Millisecond}, 4, "")
	seen, complete := e.readSSE(t, cr.ID, "", 7)
	checkSeenOnce(t, seen, complete, 60)
}

// Once a batch is final its event stream keeps only its end; a client that
// comes (back) later still gets each result exactly once, from the
// results, however often it reconnects.
func TestEventsAfterFinal(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	cr := e.create(`{"hosts": ["127.0.8.0/22", "127.0.12.1-200"]}`) // 1,222 hosts
	e.startWorker(&pingLog{}, 200, "")
	if s := e.waitState(cr.ID, time.Minute); s.State != aggregator.StateComplete {
		t.Fatalf("batch %+v; want complete", s)
	}
	for _, drop := range []int{0, 300} {
		seen, complete := e.readSSE(t, cr.ID, "", drop)
		checkSeenOnce(t, seen, complete, 1222)
	}
	// From the middle of the live numbering: the hosts counted after it.
	seen, complete := e.readSSE(t, cr.ID, "1000", 100)
	checkSeenOnce(t, seen, complete, 222)
	code, body := e.do("GET", "/v1/batches/"+cr.ID+"/events", "", "Last-Event-ID", "1764612345678-0")
	if code != http.StatusBadRequest || !strings.Contains(body, "Last-Event-ID") {
		t.Errorf("a Last-Event-ID this API never sent: %d %s; want 400 naming it", code, body)
	}
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	want := map[string]bool{}
	for _, r := range api.Routes {
		want[r] = true
	}
	for _, d := range documented {
		if !want[d] {
			t.Errorf("openapi.json documents %s, which is not a route", d)
		}
		delete(want, d)
	}
	for r := range want {
		t.Errorf("route %s is missing from openapi.json", r)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
}

func manyLabels(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("%q: %q", fmt.Sprint("k", i), "v")
	}
	return strings.Join(parts, ", ")
}

// /readyz fails while Redis answers but refuses writes, as a Redis out of
// memory, read-only or short of replicas does.
func TestReadyzRefusedWrites(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	if code, body := e.do("GET", "/readyz", ""); code != http.StatusOK {
		t.Fatalf("readyz: %d %s", code, body)
	}
	if err := e.rdb.ConfigSet(context.Background(), "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	code, body := e.do("GET", "/readyz", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "redis refuses writes") {
		t.Errorf("readyz with writes refused: %d %s; want 503 saying so", code, body)
	}
}

// By default a callback may not target loopback: a client could make the
// fleet POST into Redis or an admin page there.
func TestCallbackToLoopbackRefused(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *api.Config) { c.CallbackPolicy = notify.CallbackPolicy{} })
	keys := e.rdb.DBSize(context.Background()).Val()
	for _, u := range []string{"http://127.0.0.1:6379/", "http://[::1]/", "http://localhost:8080/admin"} {
		code, body := e.do("POST", "/v1/batches", fmt.Sprintf(`{"hosts": ["127.0.0.1"], "callback_url": %q}`, u))
		if code != http.StatusUnprocessableEntity || !strings.Contains(body, "is loopback") {
			t.Errorf("callback_url %s: %d %s; want 422 saying it is loopback", u, code, body)
		}
	}
	if n := e.rdb.DBSize(context.Background()).Val(); n != keys {
		t.Errorf("refused submissions left %d keys", n-keys)
	}
}

// With Redis full (maxmemory, noeviction): /readyz says so, and cancelling
// a big batch frees memory rather than adding any: the final state is a
// few counters, the hosts never pinged are derived from the pending set,
// and the batch's queued tasks go.
func TestCancelWithRedisFull(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *api.Config) { c.MaxHosts = 70000 })
	ctx := context.Background()
	cr := e.create(`{"hosts": ["127.2.0.0/16"]}`) // 65,534 hosts, all queued: no worker
	used := func() int64 {
		info := e.rdb.Info(ctx, "memory").Val()
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("no used_memory")
		return 0
	}
	// Full: writes refused from here on.
	if err := e.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used(), 10)).Err(); err != nil {
		t.Fatal(err)
	}
	if code, body := e.do("GET", "/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("readyz with Redis full: %d %s; want 503", code, body)
	}
	if code, body := e.do("POST", "/v1/batches", `{"hosts": ["127.0.0.1"]}`); code != http.StatusServiceUnavailable {
		t.Errorf("POST with Redis full: %d %s; want 503 (Redis's trouble, not the client's)", code, body)
	}
	before := used()
	code, body := e.do("DELETE", "/v1/batches/"+cr.ID, "")
	after := used()
	t.Logf("cancel with Redis full: %d; used_memory %d -> %d bytes", code, before, after)
	if code != http.StatusOK {
		t.Fatalf("DELETE with Redis full: %d %s; want 200", code, body)
	}
	if after > before+8<<10 {
		t.Errorf("the cancel added %d bytes to a full Redis; want a few KB at most", after-before)
	}
	s, err := e.agg.Summary(ctx, cr.ID)
	if err != nil || s.State != aggregator.StateCancelled || s.Cancelled != cr.Total {
		t.Errorf("after the cancel: %+v, %v; want %d cancelled", s, err, cr.Total)
	}
}
