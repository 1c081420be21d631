package main

// A fleet across machines: Redis and each process in a network namespace
// of its own (package lab's Star), so every connection crosses a veth
// link, and one worker's link cut mid-batch.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/lab"
	"github.com/pingfleet/pingfleet/lab/labtest"
)

// starClient is a client of a Redis in a star's hub whose connections are
// dialled from inside namespace ns.
func starClient(t *testing.T, ns, addr, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := lab.DoIn(ns, func() (err error) {
			var d net.Dialer
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Redis in the hub, two workers and the enqueuer each in a spoke. Two
// batches complete with every host counted once and one callback each,
// though worker 0's link is cut mid-batch (its connections hang, as with a
// pulled cable):
//
//   - for 10 s, then restored: the batch completes within 45 s of the link
//     coming back, and worker 0 takes part again;
//   - until the batch has completed without it: its leases run out and
//     worker 1 takes over the tasks it held (their results, when the link
//     comes back, are not counted twice).
func TestE2EFleetAcrossNamespaces(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	star := labtest.StartStar(t, 3)
	w0, w1, client := star.Spokes[0], star.Spokes[1], star.Spokes[2]
	redisAddr := net.JoinHostPort(lab.HubAddr.String(), "6379")
	// Reached from other hosts, Redis wants a password (or it refuses
	// them: protected mode).
	pass := "star-pass"
	url := "redis://:" + pass + "@" + redisAddr + "/0"
	startExec(t, "ip", nil, "netns", "exec", star.Hub, "redis-server", "--port", "6379", "--bind", lab.HubAddr.String(),
		"--requirepass", pass, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	rdb := starClient(t, client.Namespace, redisAddr, pass)
	testkit.Eventually(t, 10*time.Second, func() bool { return rdb.Ping(context.Background()).Err() == nil }, "redis-server in the hub answers")

	// The callback receiver listens in the hub too.
	secret := "star-secret"
	rcv := &callbackCounter{ok: map[string]int{}, secret: []byte(secret)}
	var ln net.Listener
	if err := lab.DoIn(star.Hub, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(lab.HubAddr.String(), "8080"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: rcv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	allow := "10.254.0.0/16" // private: callbacks need it allowed
	var names [2]string      // the workers' names in results: host:pid
	for i, sp := range []lab.Spoke{w0, w1} {
		p := startExec(t, "ip", nil, "netns", "exec", sp.Namespace, bin, "worker", "--redis", url, "--log-level", "info",
			"--concurrency", "50", "--callback-secret", secret, "--callback-allow", allow)
		names[i] = fmt.Sprintf(":%d", p.cmd.Process.Pid) // ip netns exec becomes the worker
	}
	agg, err := aggregator.New(aggregator.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// batch runs hosts -c 3 -p 500ms (each host takes a second, so a batch
	// lasts long enough to cut a link in the middle; -t 3s as in
	// TestE2ETwoWorkers) from the client's spoke, and cuts worker 0's link
	// once 200 hosts are done; restore(at cut) says when to restore it.
	// It returns the batch's results and when the link came back and the
	// batch completed.
	batch := func(id string, n, base int, restore func(cut time.Time) bool) (results []aggregator.Result, restored, end time.Time) {
		t.Helper()
		hosts := loopbackHosts(n, base)
		var res cliResult
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			cmd := lab.Command(context.Background(), client.Namespace, bin, "enqueue", "--redis", url, "--batch-id", id, "-",
				"-c", "3", "-p", "500ms", "-t", "3s", "--callback-url", "http://"+net.JoinHostPort(lab.HubAddr.String(), "8080")+"/hook",
				"--callback-allow", allow, "--wait", "-o", "ndjson")
			cmd.Stdin = strings.NewReader(hosts)
			out, errOut := &testkit.SyncBuffer{}, &testkit.SyncBuffer{}
			cmd.Stdout, cmd.Stderr = out, errOut
			err := cmd.Run()
			end = time.Now()
			res = cliResult{cmd.ProcessState.ExitCode(), out.String(), errOut.String()}
			if res.code < 0 {
				res.stderr += fmt.Sprint(err)
			}
		}()
		done := func() int {
			st, err := agg.Progress(ctx, id)
			if err != nil {
				return 0
			}
			return st.Done
		}
		testkit.Eventually(t, time.Minute, func() bool { return done() >= 200 }, "200 hosts of %s done before the cut", id)
		if err := star.Cut(ctx, 0); err != nil {
			t.Fatal(err)
		}
		cut, atCut := time.Now(), done()
		for !restore(cut) {
			time.Sleep(100 * time.Millisecond)
		}
		if err := star.Restore(ctx, 0); err != nil {
			t.Fatal(err)
		}
		restored = time.Now()
		t.Logf("%s: %d hosts done at the cut, %d when the link came back %v later", id, atCut, done(), restored.Sub(cut).Round(100*time.Millisecond))
		<-finished
		if res.code != ExitOK {
			t.Fatalf("%s: enqueue --wait: exit %d\nstderr:\n%s", id, res.code, res.stderr)
		}
		results, sum := ndjsonReport(t, res.stdout)
		checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
		if sum.Sent != 3*n || sum.Received != 3*n {
			t.Errorf("%s: summary: %d requests sent, %d replies; want %d each (no host counted twice)", id, sum.Sent, sum.Received, 3*n)
		}
		if h, err := rdb.HLen(ctx, "pingfleet:{"+id+"}:results").Result(); err != nil || h != int64(n) {
			t.Errorf("%s: results hash: %d entries, %v; want %d", id, h, err, n)
		}
		testkit.Eventually(t, time.Minute, func() bool { return testkit.CallbackSettled(ctx, rdb, agg, id) }, "callback of %s settled", id)
		if ok, _, badSig := rcv.count(id); ok != 1 || badSig != 0 {
			t.Errorf("%s: %d callbacks delivered (%d badly signed); want 1, signed", id, ok, badSig)
		}
		return results, restored, end
	}
	// by counts results by worker, and those worker 0 started after t0.
	by := func(results []aggregator.Result, t0 time.Time) (n [2]int, w0After int) {
		for _, r := range results {
			for i, name := range names {
				if strings.HasSuffix(r.Worker, name) {
					n[i]++
					if i == 0 && r.Started.After(t0) {
						w0After++
					}
				}
			}
		}
		return n, w0After
	}

	// A 10 s cut.
	results, restored, end := batch("star-1", 1500, 120, func(cut time.Time) bool { return time.Since(cut) >= 10*time.Second })
	if after := end.Sub(restored); after > 45*time.Second {
		t.Errorf("star-1 completed %v after the link came back; want within 45s", after.Round(time.Second))
	}
	n, w0After := by(results, restored)
	if n[0]+n[1] != 1500 || n[1] == 0 || w0After == 0 {
		t.Errorf("star-1: results by worker %v, %d of worker 0's started after the link came back; want both workers, and worker 0 after the cut too", n, w0After)
	}
	t.Logf("star-1: complete %v after the link came back; results by worker %v, %d of worker 0's after it", end.Sub(restored).Round(100*time.Millisecond), n, w0After)

	// A cut until the batch is complete without worker 0: 600 hosts take
	// worker 1 about 12 s, the leases of worker 0's tasks run out in
	// about 30 s.
	complete := func(id string) func(time.Time) bool {
		return func(cut time.Time) bool {
			st, err := agg.Progress(ctx, id)
			if time.Since(cut) > 2*time.Minute {
				t.Fatalf("%s not complete 2 minutes after worker 0's link was cut: %+v, %v", id, st, err)
			}
			return err == nil && st.State == aggregator.StateComplete
		}
	}
	results, restored, _ = batch("star-2", 600, 130, complete("star-2"))
	n, _ = by(results, restored)
	t.Logf("star-2: results by worker %v", n)
	if n[0]+n[1] != 600 || n[1] <= n[0] {
		t.Errorf("star-2: results by worker %v; want most from worker 1", n)
	}
}
