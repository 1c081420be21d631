package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenResults are results as workers record them: times to the
// millisecond, RTTs from durations, and the texts that need quoting.
func goldenResults() []aggregator.Result {
	start := time.Date(2026, 12, 1, 17, 24, 11, 454_000_000, time.UTC)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return []aggregator.Result{
		{Host: "127.0.0.1", IP: "127.0.0.1", Status: aggregator.StatusUp, Sent: 3, Received: 3,
			RTTMin: ms(4123), RTTAvg: ms(24_017), RTTMax: ms(44_002), RTTStdev: ms(16_350), ReplyTTL: 64, Attempts: 1,
			Worker: "vm-1:4242", Started: start, Finished: start.Add(2003 * time.Millisecond)},
		{Host: "db1.example.com", IP: "2001:db8::1", Status: aggregator.StatusUp, Sent: 3, Received: 2, LossPct: float64(1) / 3 * 100,
			RTTMin: ms(51_230_117), RTTAvg: ms(52_001_999), RTTMax: ms(52_773_881), RTTStdev: ms(771_882), ReplyTTL: 57, Attempts: 2,
			RTTs:   []float64{ms(51_230_117), -1, ms(52_773_881)}, // kept as with -C
			Worker: "vm-2:7", Started: start.Add(time.Millisecond), Finished: start.Add(2501 * time.Millisecond)},
		{Host: "10.0.0.9", IP: "10.0.0.9", Name: "gw.example.net", Status: aggregator.StatusDown, Sent: 3, LossPct: 100, Attempts: 1, // as with -n
			Error:  `3 of 3 requests not sent: sendto: operation not permitted, "firewall"`,
			Worker: "vm-1:4242", Started: start, Finished: start.Add(2500 * time.Millisecond)},
		{Host: "nope.invalid", Status: aggregator.StatusError, Attempts: 1,
			Error:  "resolve nope.invalid: no such host (.invalid is reserved, RFC 6761)",
			Worker: "vm-2:7", Started: start, Finished: start},
	}
}

// TestGoldenResults prints a batch's results in every format, with a host
// still pending, and a cancelled and an expired batch's results and
// summaries, and compares them with testdata/*; go test -run
// TestGoldenResults -update rewrites them.
func TestGoldenResults(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	clock := time.Date(2026, 12, 1, 17, 24, 11, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { // every read a millisecond later
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(time.Millisecond)
		return clock
	}
	agg, err := aggregator.New(aggregator.Config{Client: srv.Client(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rs := goldenResults()
	hosts := []string{"127.0.0.1", "db1.example.com", "10.0.0.9", "nope.invalid", "127.0.0.2"}
	ids := []string{"golden", "golden-cancelled", "golden-expired"}
	for _, id := range ids {
		if _, err := agg.Create(ctx, aggregator.Batch{ID: id, Hosts: hosts, Options: tasks.PingOptions{Count: 3}}); err != nil {
			t.Fatal(err)
		}
	}
	// The results are counted once their pings ended, after the batches
	// were created: created, started (first ping), finished in that order.
	mu.Lock()
	clock = rs[1].Finished
	mu.Unlock()
	for _, id := range ids {
		for _, r := range rs {
			if _, err := agg.Record(ctx, id, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := agg.Finalize(ctx, "golden-cancelled", aggregator.StateCancelled); err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Finalize(ctx, "golden-expired", aggregator.StateExpired); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[1:] { // as their canceller and janitor do once the queued tasks are gone
		if err := agg.CleanedUp(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	type output struct {
		args []string
		file string
		code int
	}
	var outputs []output
	for _, id := range ids {
		for _, format := range []string{"table", "csv", "json", "ndjson"} {
			// Each batch has a host that could not be resolved: exit 2,
			// as fping's, for results as for status.
			outputs = append(outputs, output{[]string{"results", id, "-o", format}, id + "." + format, ExitUnresolved})
			if id != "golden" { // a batch still running has no fixed duration
				// A host never pinged makes the exit code 2, as fping's.
				outputs = append(outputs, output{[]string{"status", id, "-o", format}, id + ".summary." + format, ExitUnresolved})
			}
		}
	}
	// fping -D's timestamps, in two of their formats.
	outputs = append(outputs,
		output{[]string{"results", "golden", "-o", "table", "-D"}, "golden.timestamps-unix.table", ExitUnresolved},
		output{[]string{"results", "golden", "-o", "table", "-D", "--timestamp-format", "rfc3339"}, "golden.timestamps-rfc3339.table", ExitUnresolved})
	for _, o := range outputs {
		r := cli(t, "", append(o.args, "--redis", srv.URL())...)
		if r.code != o.code {
			t.Fatalf("%s: exit %d, want %d\n%s", strings.Join(o.args, " "), r.code, o.code, r.stderr)
		}
		file := filepath.Join("testdata", o.file)
		format, id := o.args[3], o.args[1]
		if *update {
			if err := os.WriteFile(file, []byte(r.stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), r.stdout); diff != "" {
			t.Errorf("%s %s -o %s (-%s +got):\n%s", o.args[0], id, format, file, diff)
		}
	}
}
