package main

// The built binary against the lab: fake hosts with real delay, loss and
// dead ranges inside a network namespace (see package lab). pingfleet runs
// there on its embedded Redis, so nothing crosses namespaces.

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/lab"
	"github.com/pingfleet/pingfleet/lab/labtest"
)

func runInLab(t *testing.T, l *lab.Lab, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, errOut := &testkit.SyncBuffer{}, &testkit.SyncBuffer{}
	cmd := l.Exec(ctx, binary(t), args...)
	cmd.Stdout, cmd.Stderr = out, errOut
	err := cmd.Run()
	code := cmd.ProcessState.ExitCode()
	if code < 0 {
		t.Fatalf("run %v: %v", args, err)
	}
	return cliResult{code, out.String(), errOut.String()}
}

// anyDown expects exit code 1 when some host is down, else 0.
const anyDown = -1

// loss500 checks a batch of 500 requests for a loss within [lo, hi] %.
// Around p = 0.2 the standard deviation is 1.8 %, around 0.5 it is 2.2 %:
// bounds of ±6 of them keep the test from ever failing by chance (1 in
// 10^9).
func loss500(lo, hi float64) func(*testing.T, []aggregator.Result, aggregator.Summary) {
	return func(t *testing.T, _ []aggregator.Result, s aggregator.Summary) {
		if s.Sent != 500 || s.LossPct < lo || s.LossPct > hi {
			t.Errorf("loss %.1f%% of %d sent; want 500 sent, %g-%g%% lost", s.LossPct, s.Sent, lo, hi)
		}
	}
}

func TestLabAccuracy(t *testing.T) {
	t.Parallel()
	_, noNft := exec.LookPath("nft")
	ranges := lab.DefaultRanges()
	if noNft == nil {
		ranges = append(ranges, lab.KernelLossRanges()...)
	}
	l := labtest.Start(t, lab.Config{Seed: 7, Ranges: ranges})

	tests := []struct {
		desc   string
		hosts  string
		count  string
		code   int
		kernel bool // needs lab.KernelLossRanges (the nft command)
		check  func(t *testing.T, rs []aggregator.Result, s aggregator.Summary)
	}{
		{
			desc:  "50 ms ± 5 ms delay",
			hosts: "198.18.1.1-20",
			count: "5",
			code:  ExitOK,
			check: func(t *testing.T, rs []aggregator.Result, s aggregator.Summary) {
				// Jitter is uniform in ±5 ms, so every RTT lies in
				// [45, 55] ms plus the machine's own delay, bounded
				// generously: this runs beside other tests under the race
				// detector, which starve both the lab's responder (in
				// this process) and the pinging binary (CI saw an average
				// of 60.7 ms once).
				for _, r := range rs {
					if r.Received != 5 || r.RTTMin < 45 || r.RTTAvg < 46 || r.RTTAvg > 66 || r.RTTMax > 90 {
						t.Errorf("%s: %d received, RTT min/avg/max %.1f/%.1f/%.1f ms; want 5 within 46-66 ms on average",
							r.Host, r.Received, r.RTTMin, r.RTTAvg, r.RTTMax)
					}
				}
				if s.RTTP50 < 46 || s.RTTP50 > 66 {
					t.Errorf("p50 %.1f ms; want 46-66", s.RTTP50)
				}
			},
		},
		{
			desc:  "20 % loss",
			hosts: "198.18.2.1-50",
			count: "10",
			code:  anyDown,
			check: loss500(9.3, 30.7),
		},
		{
			desc:  "50 % loss",
			hosts: "198.18.3.1-50",
			count: "10",
			code:  anyDown,
			check: loss500(36.6, 63.4),
		},
		{
			// fping's default: without -c, each host gets up to 4 tries and
			// is up at its first reply; the lost tries count as lost.
			desc:  "50 % loss, no count: retries until the first reply",
			hosts: "198.18.3.101-200",
			code:  anyDown,
			check: func(t *testing.T, rs []aggregator.Result, s aggregator.Summary) {
				// Up unless all 4 tries are lost (p = 1/16): 93.75 expected,
				// at least 80 but once in 10^6 runs; 1.875 tries per host.
				if s.Up < 80 || s.Up+s.Down != 100 || s.Sent < 150 || s.Sent > 230 || s.Received != s.Up {
					t.Errorf("summary %+v; want about 94 up after about 188 requests, one reply each", s)
				}
				for _, r := range rs {
					if r.Sent > 4 || r.Received > 1 || (r.Status == aggregator.StatusUp) != (r.Received == 1) || r.LossPct != aggregator.LossPct(r.Sent, r.Received) {
						t.Errorf("%s: %+v", r.Host, r)
					}
				}
			},
		},
		{
			desc:   "20 % loss in the kernel (nftables)",
			hosts:  "198.18.5.1-50",
			count:  "10",
			code:   anyDown,
			kernel: true,
			check:  loss500(9.3, 30.7),
		},
		{
			desc:   "50 % loss in the kernel (nftables)",
			hosts:  "198.18.6.1-50",
			count:  "10",
			code:   anyDown,
			kernel: true,
			check:  loss500(36.6, 63.4),
		},
		{
			desc:  "dead range: every host down, exit code 1",
			hosts: "198.18.4.0/28",
			count: "2",
			code:  ExitDown,
			check: func(t *testing.T, rs []aggregator.Result, s aggregator.Summary) {
				if s.Down != 14 || s.Up != 0 || s.Error != 0 || s.LossPct != 100 || len(rs) != 14 {
					t.Errorf("summary %+v; want 14 down, 100%% loss", s)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if tc.kernel && noNft != nil {
				t.Skipf("kernel loss needs nft (apt-get install nftables): %v", noNft)
			}
			args := []string{"run", tc.hosts, "-c", tc.count, "-p", "50ms", "-t", "1s", "-o", "ndjson"}
			if tc.count == "" {
				args = []string{"run", tc.hosts, "-t", "250ms", "-o", "ndjson"}
			}
			r := runInLab(t, l, args...)
			results, sum := ndjsonReport(t, r.stdout)
			want := tc.code
			if want == anyDown {
				// A host may lose all its requests by chance.
				want = map[bool]int{true: ExitDown, false: ExitOK}[sum.Down > 0]
			}
			if r.code != want {
				t.Errorf("exit %d; want %d\nstderr: %s", r.code, want, r.stderr)
			}
			if sum.State != aggregator.StateComplete {
				t.Fatalf("batch not complete: %+v\nstderr: %s", sum, r.stderr)
			}
			tc.check(t, results, sum)
		})
	}
}
