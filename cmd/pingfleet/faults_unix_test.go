//go:build unix

package main

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/tasks"
)

// A worker killed (SIGKILL) or frozen (SIGSTOP) mid-batch: its tasks in
// flight go to another worker once their leases run out (30 s after its
// last heartbeat, found within seconds by the workers' recoverers), each
// host is counted once, and the batch completes within 45 s of the fault
// plus a ping's time (the bound). A frozen worker that comes back
// later records nothing twice.
func TestE2EWorkerKilled(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			// Alone at first, so that every task in flight when it stops is its.
			victim := startWorker(t, srv.URL(), "--concurrency", "40")
			hosts := loopbackHosts(300, 100)
			id := map[syscall.Signal]string{syscall.SIGKILL: "killed", syscall.SIGSTOP: "frozen"}[sig]
			r := runBinary(t, hosts, "enqueue", "--redis", srv.URL(), "-", "--count", "3", "-p", "1s", "--batch-id", id)
			if r.code != ExitOK {
				t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
			}
			rdb := srv.Client()
			// Its 40 slots finish together (they started together), so
			// the fault waits for them to be taken again.
			active := tasks.AsynqKeys(tasks.Lane{Batch: id, Shards: 1}.Queues()[0]) + ":active"
			testkit.Eventually(t, time.Minute, func() bool {
				done, _ := rdb.HGet(context.Background(), aggregator.Keys(id)[0], "done").Int()
				return done >= 60 && rdb.LLen(context.Background(), active).Val() >= 20
			})
			survivor := startWorker(t, srv.URL(), "--concurrency", "40")
			if err := victim.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			faulted := time.Now()
			if sig == syscall.SIGSTOP {
				defer func() { _ = victim.cmd.Process.Signal(syscall.SIGCONT) }()
			}
			w := runBinary(t, "", "wait", id, "--redis", srv.URL(), "-o", "ndjson")
			took := time.Since(faulted)
			if w.code != ExitOK {
				t.Fatalf("wait: exit %d\n%s", w.code, w.stderr)
			}
			results, sum := ndjsonReport(t, w.stdout)
			checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
			retried := 0
			for _, res := range results {
				if res.Attempts > 1 {
					retried++
				}
			}
			if retried == 0 {
				t.Errorf("no result came from a recovered task; the fault hit no task in flight")
			}
			t.Logf("%s: %d hosts recovered from the stopped worker; the batch completed %s after the fault", sig, retried, took.Round(100*time.Millisecond))
			// One recoverer per process did it: asynq's, one per asynq
			// server, found nothing left, and logged nothing.
			log := survivor.stderr.String()
			if !strings.Contains(log, "tasks of expired leases put back in their queues") || strings.Contains(log, "recoverer:") {
				t.Errorf("the surviving worker's log should tell the recovery once and hold no asynq recoverer warning:\n%s", log)
			}
			if bound := 45*time.Second + 3*time.Second; took > bound {
				t.Errorf("the batch completed %s after the fault; want within %s (45 s and a host's -c 3 -p 1s)", took.Round(100*time.Millisecond), bound)
			}
			if sig == syscall.SIGSTOP {
				// Back, the frozen worker finishes its pings: they are
				// duplicates now, and change nothing.
				_ = victim.cmd.Process.Signal(syscall.SIGCONT)
				time.Sleep(4 * time.Second)
				again := runBinary(t, "", "status", id, "--redis", srv.URL(), "-o", "json")
				var s aggregator.Summary
				if err := json.Unmarshal([]byte(again.stdout), &s); err != nil || s.Done != 300 || s.Up != 300 {
					t.Errorf("after SIGCONT: %+v (%v); want 300 done, 300 up, as before", s, err)
				}
			}
		})
	}
}
