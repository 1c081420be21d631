package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
)

// Without a terminal, progress prints a line each interval: counts always,
// the rate and time left only from the first result, both from the
// batch's pace since its first ping.
func TestProgressLines(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	p := newProgress(&b, false, 1000, time.Second)
	p.now, p.lastLine = func() time.Time { return now }, now
	step := func(s aggregator.Summary) string {
		t.Helper()
		now = now.Add(time.Second)
		b.Reset()
		p.update(s)
		return b.String()
	}
	if got, want := step(aggregator.Summary{ID: "b", Total: 1000}), "pingfleet: batch b: 0 of 1000 done (0 up, 0 down, 0 error)\n"; got != want {
		t.Errorf("before any result: %q; want %q", got, want)
	}
	// 200 results, the first ping 10 s ago: 20 hosts/s, 40 s left, however
	// fast the last second went.
	s := aggregator.Summary{ID: "b", Total: 1000, Done: 200, Up: 190, Down: 10, Started: now.Add(-9 * time.Second)}
	if got, want := step(s), "pingfleet: batch b: 200 of 1000 done (190 up, 10 down, 0 error, 20 hosts/s, 40s left)\n"; got != want {
		t.Errorf("mid-batch: %q; want %q", got, want)
	}
	s = aggregator.Summary{ID: "b", Total: 1000, Done: 5, Up: 5, Started: now.Add(-9 * time.Second)}
	if got, want := step(s), "pingfleet: batch b: 5 of 1000 done (5 up, 0 down, 0 error, 0.5 hosts/s, 33m10s left)\n"; got != want {
		t.Errorf("slow batch: %q; want %q", got, want)
	}
	s = aggregator.Summary{ID: "b", Total: 1000, Done: 1000, Up: 900, Expired: 100, Started: now.Add(-9 * time.Second)}
	if got := step(s); !strings.Contains(got, "100 not pinged, 100 hosts/s)") {
		t.Errorf("final: %q; want the hosts not pinged and no time left", got)
	}
}
