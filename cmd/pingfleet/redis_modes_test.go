package main

// The fleet on the Redis deployments the --redis URL can name.

import (
	"strings"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
)

// A 3-master Redis Cluster: a batch's keys share one slot ({batchID}),
// queues spread over the nodes, and every host is counted once.
func TestE2ERedisCluster(t *testing.T) {
	t.Parallel()
	url := redistest.StartCluster(t, 3)
	startWorker(t, url)
	startWorker(t, url)
	hosts := loopbackHosts(300, 170)
	r := runBinary(t, hosts, "enqueue", "--redis", url, "-", "-c", "1", "--wait", "-o", "ndjson")
	if r.code != ExitOK {
		t.Fatalf("enqueue --wait on a cluster: exit %d\n%s", r.code, r.stderr)
	}
	results, sum := ndjsonReport(t, r.stdout)
	checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
	st := runBinary(t, "", "batches", "--redis", url, "-o", "json")
	if st.code != ExitOK {
		t.Errorf("batches on a cluster: exit %d\n%s", st.code, st.stderr)
	}
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
	eventually(t, time.Minute, func() bool {
		st := runBinary(t, "", "status", "failover", "--redis", s.URL, "-o", "json")
		return strings.Contains(st.stdout, `"done"`) && !strings.Contains(st.stdout, `"done": 0,`)
	})
	s.Failover(t)
	w := runBinary(t, "", "wait", "failover", "--redis", s.URL, "-o", "ndjson")
	if w.code != ExitOK {
		t.Fatalf("wait after failover: exit %d\n%s", w.code, w.stderr)
	}
	results, sum := ndjsonReport(t, w.stdout)
	checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
}
