package main

// The fleet on the Redis deployments the --redis URL can name.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/redisconn"
	"github.com/pingfleet/pingfleet/tasks"
)

// A 3-master Redis Cluster: a batch's state is spread over the masters
// (a shard each), its queues (3 for 3,000 hosts, with salts) go one to
// each master, every host is counted once, and results and events read
// back as on one Redis.
func TestE2ERedisCluster(t *testing.T) {
	t.Parallel()
	url := redistest.StartCluster(t, 3)
	startWorker(t, url)
	startWorker(t, url)
	hosts := loopbackHosts(3000, 170)
	r := runBinary(t, hosts, "enqueue", "--redis", url, "-", "-c", "1", "--wait", "-o", "ndjson", "--log-level", "warn")
	if r.code != ExitOK {
		t.Fatalf("enqueue --wait on a cluster: exit %d\n%s", r.code, r.stderr)
	}
	results, sum := ndjsonReport(t, r.stdout)
	checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
	if strings.Contains(r.stderr, "fewer Redis Cluster masters") {
		t.Errorf("enqueue warned of queues not spread:\n%s", r.stderr)
	}
	st := runBinary(t, "", "batches", "--redis", url, "-o", "json")
	if st.code != ExitOK {
		t.Errorf("batches on a cluster: exit %d\n%s", st.code, st.stderr)
	}
	rdb, err := redisconn.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx := context.Background()
	slots, err := tasks.ReadSlotMap(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}

	// The batch's state is on every master; its results read back in
	// submission order, and through serve's event stream, whole and
	// resumed halfway.
	keys, err := agg.KeysOf(ctx, sum.ID)
	if err != nil {
		t.Fatal(err)
	}
	masters := map[string]bool{}
	for _, k := range keys {
		if strings.HasSuffix(k, ":results") && rdb.Exists(ctx, k).Val() == 1 {
			masters[slots.Master(tasks.Slot(k))] = true
		}
	}
	if len(masters) != 3 {
		t.Errorf("the batch's results are on %d masters (%v); want 3", len(masters), keys)
	}
	res := runBinary(t, "", "results", "--redis", url, sum.ID, "-o", "ndjson")
	got, _ := ndjsonReport(t, res.stdout)
	want := strings.Fields(hosts)
	if res.code != ExitOK || len(got) != len(want) {
		t.Fatalf("results: exit %d, %d hosts; want %d\n%s", res.code, len(got), len(want), res.stderr)
	}
	for i, r := range got {
		if r.Host != want[i] {
			t.Fatalf("results: host %d is %s; want %s, the submission order", i, r.Host, want[i])
		}
	}
	api := startServe(t, url)
	events := func(last string) []string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, api+"/v1/batches/"+sum.ID+"/events", nil)
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body) // the stream ends after the final event
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("events: %d, %v", resp.StatusCode, err)
		}
		var ids []string // "<id> <event>"
		for block := range strings.SplitSeq(string(body), "\n\n") {
			var id, ev string
			for line := range strings.SplitSeq(block, "\n") {
				if v, ok := strings.CutPrefix(line, "id: "); ok {
					id = v
				}
				if v, ok := strings.CutPrefix(line, "event: "); ok {
					ev = v
				}
			}
			if ev != "" {
				ids = append(ids, id+" "+ev)
			}
		}
		return ids
	}
	all := events("")
	if len(all) != 3001 || !strings.HasSuffix(all[3000], " complete") {
		t.Fatalf("events: %d, last %q; want 3000 results and the complete event", len(all), all[len(all)-1])
	}
	half, _, _ := strings.Cut(all[1499], " ")
	if rest := events(half); len(rest) != 1501 || !strings.HasSuffix(rest[1500], " complete") {
		t.Errorf("events after %s: %d; want 1500 results and the complete event", half, len(rest))
	}

	// An open batch whose lane's queues were named without salts, as an
	// older enqueuer did, and happen to miss a master: a worker starting
	// says so. (The batch is real: the janitor drops lanes of batches that
	// are not.)
	var old string
	for i := 0; old == ""; i++ {
		id := fmt.Sprintf("old-%d", i)
		if on, best := slots.Spread(tasks.Lane{Batch: id, Shards: 3}.Queues()); on < best {
			old = id
		}
	}
	if _, err := agg.Create(ctx, aggregator.Batch{ID: old, Hosts: []string{"127.0.0.1"}, Options: tasks.PingOptions{Count: 1}.Normalize()}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, tasks.LanesKey, old, "normal 3").Err(); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, url)
	testkit.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(w.stderr.String(), "fall on fewer Redis Cluster masters than they could")
	}, "a worker's warning of a lane not spread over the masters")
}

// A Sentinel-managed master fails over in the middle of a batch: workers
// follow the new master, and the batch completes with every host counted
// once (tasks whose acknowledgement was lost with the old master are
// recovered by asynq after their lease, and their results are not counted
// twice).
func TestE2ESentinelFailover(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	startWorker(t, s.URL, "--concurrency", "50")
	startWorker(t, s.URL, "--concurrency", "50")
	hosts := loopbackHosts(400, 180)
	r := runBinary(t, hosts, "enqueue", "--redis", s.URL, "-", "-c", "3", "-p", "300ms", "--batch-id", "failover")
	if r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	// Fail over once the replica holds the batch and some results: Redis
	// replication is asynchronous, and a batch record younger than the
	// replication lag would be lost with the old master, by design of Redis.
	replica := s.Replica.Client()
	testkit.Eventually(t, time.Minute, func() bool {
		done, err := replica.HGet(context.Background(), aggregator.Keys("failover")[0], "done").Int()
		return err == nil && done >= 20
	})
	s.Failover(t)
	w := runBinary(t, "", "wait", "failover", "--redis", s.URL, "-o", "ndjson")
	if w.code != ExitOK {
		t.Fatalf("wait after failover: exit %d\n%s", w.code, w.stderr)
	}
	results, sum := ndjsonReport(t, w.stdout)
	checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
}

// A rolling restart of every worker in the middle of a batch: each gets
// SIGTERM, finishes its pings in flight, exits, and a new one takes its
// place. No host is lost or counted twice.
func TestE2ERollingRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := startWorker(t, srv.URL(), "--concurrency", "40", "--shutdown-timeout", "10s")
	b := startWorker(t, srv.URL(), "--concurrency", "40", "--shutdown-timeout", "10s")
	hosts := loopbackHosts(400, 190)
	r := runBinary(t, hosts, "enqueue", "--redis", srv.URL(), "-", "-c", "3", "-p", "300ms", "--batch-id", "rolling")
	if r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	done := func() int {
		n, _ := srv.Client().HGet(context.Background(), aggregator.Keys("rolling")[0], "done").Int()
		return n
	}
	for i, old := range []*proc{a, b} {
		testkit.Eventually(t, time.Minute, func() bool { return done() >= 50*(i+1) })
		_ = old.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-old.done:
		case <-time.After(20 * time.Second):
			t.Fatal("worker did not stop within 20s of SIGTERM")
		}
		if code := old.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("worker exited %d after SIGTERM; want 0\n%s", code, old.stderr)
		}
		startWorker(t, srv.URL(), "--concurrency", "40")
	}
	w := runBinary(t, "", "wait", "rolling", "--redis", srv.URL(), "-o", "ndjson")
	if w.code != ExitOK {
		t.Fatalf("wait: exit %d\n%s", w.code, w.stderr)
	}
	results, sum := ndjsonReport(t, w.stdout)
	checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
}

// TLS (rediss://) for every connection: enqueue, worker, wait.
func TestE2ERedisTLS(t *testing.T) {
	t.Parallel()
	srv := redistest.StartTLS(t)
	startWorker(t, srv.URL())
	hosts := loopbackHosts(50, 200)
	r := runBinary(t, hosts, "enqueue", "--redis", srv.URL(), "-", "--wait", "-o", "ndjson")
	if r.code != ExitOK {
		t.Fatalf("enqueue --wait over TLS: exit %d\n%s", r.code, r.stderr)
	}
	results, sum := ndjsonReport(t, r.stdout)
	checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
	plain := runBinary(t, "", "status", "x", "--redis", "redis://"+srv.Addr+"/0")
	if plain.code != ExitSystem {
		t.Errorf("plain connection to a TLS-only server: exit %d; want 4", plain.code)
	}
}

// An ACL user with a password, named in the URL, for every connection.
func TestE2ERedisACLUser(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, "--user", "pinger", "on", ">pinger-pw", "~*", "&*", "+@all", "--user", "default", "off")
	url := "redis://pinger:pinger-pw@" + srv.Addr + "/0"
	startWorker(t, url)
	r := runBinary(t, "", "enqueue", "--redis", url, "127.0.0.1-5", "--wait", "-o", "ndjson")
	if r.code != ExitOK {
		t.Fatalf("enqueue --wait as an ACL user: exit %d\n%s", r.code, r.stderr)
	}
	if bad := runBinary(t, "", "batches", "--redis", "redis://"+srv.Addr+"/0"); bad.code != ExitSystem {
		t.Errorf("the disabled default user got in: exit %d", bad.code)
	}
}
