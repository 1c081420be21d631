//go:build linux

package lab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/pingfleet/pingfleet/lab"
	"github.com/pingfleet/pingfleet/lab/labtest"
)

// fpingResult is what fping -C reports for one host: the RTT of each
// probe, -1 for a lost one.
type fpingResult []float64

func (r fpingResult) loss() float64 {
	lost := 0
	for _, rtt := range r {
		if rtt < 0 {
			lost++
		}
	}
	return float64(lost) / float64(len(r))
}

// runFping runs fping -C count inside l against hosts and returns its
// exit code and the results by host.
func runFping(t *testing.T, l *lab.Lab, count int, hosts ...string) (int, map[string]fpingResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	args := append([]string{"-C", strconv.Itoa(count), "-p", "20", "-i", "1", "-t", "500", "-q"}, hosts...)
	cmd := l.Exec(ctx, "fping", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("fping: %v", err)
	}
	results := map[string]fpingResult{}
	for line := range strings.Lines(out.String()) {
		host, rtts, ok := strings.Cut(line, " : ")
		if !ok {
			continue
		}
		var r fpingResult
		for f := range strings.FieldsSeq(rtts) {
			rtt := -1.0
			if f != "-" {
				if rtt, err = strconv.ParseFloat(f, 64); err != nil {
					t.Fatalf("fping output %q: %v", line, err)
				}
			}
			r = append(r, rtt)
		}
		results[strings.TrimSpace(host)] = r
	}
	if len(results) != len(hosts) {
		t.Fatalf("fping exit %d, results for %d of %d hosts; output:\n%s", code, len(results), len(hosts), out.String())
	}
	return code, results
}

func hostsIn(prefix string, n int) []string {
	a := netip.MustParsePrefix(prefix).Addr().Next()
	var hosts []string
	for range n {
		hosts = append(hosts, a.String())
		a = a.Next()
	}
	return hosts
}

// TestLabFping pings every kind of range of the default lab with the
// system's fping, from inside the lab.
func TestLabFping(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("fping"); err != nil {
		t.Skip("fping not found; install it (apt-get install fping) to run this test")
	}
	l := labtest.Start(t, lab.Config{Seed: 1})

	const (
		fast = 5.0 // ms: the mean RTT of hosts without delay
		// A busy machine (the race detector, parallel tests) delays a
		// few replies by some ms: bound single RTTs loosely.
		noisy = 20.0
	)
	for _, tc := range []struct {
		desc             string
		hosts            []string
		count            int
		wantExit         int
		minLoss, maxLoss float64
		minRTT, maxRTT   float64 // of every probe answered, ms
		minMean, maxMean float64 // mean RTT over the answered probes, ms
	}{
		{"fast", hostsIn("198.18.0.0/24", 3), 20, 0, 0, 0, 0, noisy, 0, fast},
		{"delay 50 ms ± 5 ms", hostsIn("198.18.1.0/24", 3), 20, 0, 0, 0, 44, 55 + noisy, 45, 60},
		{"latency range", []string{"198.18.16.1", "198.18.31.254"}, 10, 0, 0, 0, 49, 50 + noisy, 45, 60},
		{"scale range", []string{"198.19.0.1", "198.19.255.254"}, 10, 0, 0, 0, 0, noisy, 0, fast},
		{"unconfigured address", []string{"198.18.200.1"}, 10, 0, 0, 0, 0, noisy, 0, fast},
		{"the namespace itself", []string{lab.LocalAddr}, 10, 0, 0, 0, 0, noisy, 0, fast},
		// 200 probes: binomial 99.9 % intervals are about ±0.092 and ±0.116.
		{"20 % loss", hostsIn("198.18.2.0/24", 10), 20, 0, 0.10, 0.30, 0, noisy, 0, fast},
		{"50 % loss", hostsIn("198.18.3.0/24", 10), 20, 0, 0.38, 0.62, 0, noisy, 0, fast},
		{"dead", hostsIn("198.18.4.0/24", 2), 5, 1, 1, 1, 0, 0, 0, 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			code, results := runFping(t, l, tc.count, tc.hosts...)
			if code != tc.wantExit {
				t.Errorf("fping exit code %d, want %d", code, tc.wantExit)
			}
			var all fpingResult
			for host, r := range results {
				if len(r) != tc.count {
					t.Errorf("%s: %d probes reported, want %d", host, len(r), tc.count)
				}
				all = append(all, r...)
			}
			if loss := all.loss(); loss < tc.minLoss || loss > tc.maxLoss {
				t.Errorf("loss %.3f over %d probes, want [%.2f, %.2f]", loss, len(all), tc.minLoss, tc.maxLoss)
			}
			var sum float64
			answered := 0
			for _, rtt := range all {
				if rtt < 0 {
					continue
				}
				if rtt < tc.minRTT || rtt > tc.maxRTT {
					t.Errorf("RTT %.3f ms, want [%g, %g]", rtt, tc.minRTT, tc.maxRTT)
				}
				sum += rtt
				answered++
			}
			var mean float64
			if answered > 0 {
				if mean = sum / float64(answered); mean < tc.minMean || mean > tc.maxMean {
					t.Errorf("mean RTT %.3f ms, want [%g, %g]", mean, tc.minMean, tc.maxMean)
				}
			}
			t.Logf("%d probes: loss %.3f, mean RTT %.3f ms", len(all), all.loss(), mean)
		})
	}
	t.Cleanup(func() {
		// Runs before the lab closes: every request gets its answer or none
		// (the counter of a reply may lag behind fping getting it).
		deadline := time.Now().Add(5 * time.Second)
		for {
			s := l.Stats()
			if s.Requests > 0 && s.Requests == s.Replies+s.Dropped+s.Dead && s.WriteErrors == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("stats don't add up: %+v", s)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestLabKernelLoss checks the nftables ranges with fping: the kernel
// drops the requests, so the responder never sees them, and the counters
// account for every probe.
func TestLabKernelLoss(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"fping", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found; install it (apt-get install fping nftables) to run this test", tool)
		}
	}
	l := labtest.Start(t, lab.Config{Seed: 1, Ranges: lab.KernelLossRanges()})

	// 200 probes each: binomial 99.9 % intervals as in TestLabFping.
	_, kloss20 := runFping(t, l, 20, hostsIn("198.18.5.0/24", 10)...)
	_, kloss50 := runFping(t, l, 20, hostsIn("198.18.6.0/24", 10)...)
	var lost int
	for _, tc := range []struct {
		desc     string
		results  map[string]fpingResult
		min, max float64
	}{
		{"20 % kernel loss", kloss20, 0.10, 0.30},
		{"50 % kernel loss", kloss50, 0.38, 0.62},
	} {
		var all fpingResult
		for _, r := range tc.results {
			all = append(all, r...)
		}
		if loss := all.loss(); loss < tc.min || loss > tc.max {
			t.Errorf("%s: loss %.3f over %d probes, want [%.2f, %.2f]", tc.desc, loss, len(all), tc.min, tc.max)
		}
		lost += int(all.loss()*float64(len(all)) + 0.5)
	}

	dropped, err := l.KernelDropped(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Every probe was either dropped by nftables or reached the responder
	// (and, with no Range.Loss here, got its reply). fping itself may miss
	// a reply now and then, so lost >= dropped rather than equal.
	s := l.Stats()
	if dropped+s.Requests != 400 || s.Dropped != 0 || uint64(lost) < dropped {
		t.Errorf("%d probes lost, nftables dropped %d, responder stats %+v; want drops + requests = 400", lost, dropped, s)
	}
}

// TestLabDo pings from this process through an unprivileged ICMP socket
// opened inside the lab, as a Go ping library would.
func TestLabDo(t *testing.T) {
	t.Parallel()
	l := labtest.Start(t, lab.Config{Seed: 1})
	var conn *icmp.PacketConn
	if err := l.Do(func() (err error) {
		conn, err = icmp.ListenPacket("udp4", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatalf("open ICMP socket in the lab: %v", err)
	}
	defer conn.Close()

	ping := func(dst string, seq int) (time.Duration, error) {
		msg, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{Seq: seq, Data: []byte("pingfleet")}}).Marshal(nil)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if _, err := conn.WriteTo(msg, &net.UDPAddr{IP: net.ParseIP(dst)}); err != nil {
			return 0, err
		}
		if err := conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
			return 0, err
		}
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return 0, err
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil {
				return 0, err
			}
			if e, ok := m.Body.(*icmp.Echo); ok && m.Type == ipv4.ICMPTypeEchoReply && e.Seq == seq {
				if got := from.(*net.UDPAddr).IP.String(); got != dst {
					return 0, fmt.Errorf("reply from %s", got)
				}
				return time.Since(start), nil
			}
		}
	}

	rtt, err := ping("198.18.1.9", 1)
	if err != nil || rtt < 45*time.Millisecond {
		t.Errorf("ping 198.18.1.9 = %v, %v; want a reply after 45 ms or more", rtt, err)
	}
	if _, err := ping("198.18.4.9", 2); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Errorf("ping dead 198.18.4.9: %v, want a timeout", err)
	}
	if diff := cmp.Diff(lab.Stats{Requests: 2, Replies: 1, Dead: 1}, l.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func namespaces(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

func hasNamespace(t *testing.T, name string) bool {
	t.Helper()
	for line := range strings.Lines(namespaces(t)) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// TestStartClose checks that a lab leaves nothing behind, and that Start
// fails cleanly.
func TestStartClose(t *testing.T) {
	t.Parallel()
	labtest.Require(t)
	ctx := t.Context()

	l, err := lab.Start(ctx, lab.Config{Ranges: []lab.Range{}})
	if err != nil {
		t.Fatal(err)
	}
	ns := l.Namespace()
	if !hasNamespace(t, ns) {
		t.Errorf("namespace %s not in ip netns list:\n%s", ns, namespaces(t))
	}
	if out, err := l.Exec(ctx, "ip", "route", "show").CombinedOutput(); err != nil || string(out) != "198.18.0.0/15 dev tun0 scope link src 198.18.255.254 \n" {
		t.Errorf("routes in the lab: %v\n%s", err, out)
	}

	// A second lab under the same name must fail and leave the first alone.
	if _, err := lab.Start(ctx, lab.Config{Namespace: ns}); err == nil || !strings.Contains(err.Error(), "create network namespace "+ns) {
		t.Errorf("Start with a taken name: %v", err)
	}
	if !hasNamespace(t, ns) {
		t.Errorf("failed Start removed the namespace of another lab")
	}

	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if hasNamespace(t, ns) {
		t.Errorf("namespace %s still there after Close", ns)
	}

	// A setup failure after the namespace exists removes it.
	name := fmt.Sprintf("pflab-test-bad-%d", time.Now().UnixNano()%1e6)
	if _, err := lab.Start(ctx, lab.Config{Namespace: name, Device: "lo"}); err == nil {
		t.Errorf("Start with device lo succeeded")
	}
	if hasNamespace(t, name) {
		t.Errorf("failed Start left namespace %s", name)
		_ = exec.Command("ip", "netns", "del", name).Run()
	}

	// An invalid config creates nothing.
	if _, err := lab.Start(ctx, lab.Config{Namespace: name, Ranges: []lab.Range{{}}}); err == nil {
		t.Errorf("Start with an invalid range succeeded")
	}
	if hasNamespace(t, name) {
		t.Errorf("invalid config created namespace %s", name)
	}
}

// BenchmarkLabEcho measures the lab's echo throughput from an ICMP socket
// inside it to hosts of the scale range, in bursts of 1,000 requests: an op
// is one request; lost/op counts requests without a reply within 1 s.
func BenchmarkLabEcho(b *testing.B) {
	l := labtest.Start(b, lab.Config{})
	var conn net.PacketConn
	if err := l.Do(func() (err error) {
		conn, err = pingSocket(8 << 20)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	const burst = 1000
	data := make([]byte, 56)
	buf := make([]byte, 1500)
	lost := 0
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(burst, b.N-sent)
		for i := range n {
			host := netip.AddrFrom4([4]byte{198, 19, byte((sent + i) >> 8), byte(sent + i)})
			m, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{Seq: (sent + i) & 0xffff, Data: data}}).Marshal(nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := conn.WriteTo(m, &net.UDPAddr{IP: host.AsSlice()}); err != nil {
				b.Fatal(err)
			}
		}
		sent += n
		if err := conn.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < n; got++ {
			if _, _, err := conn.ReadFrom(buf); err != nil {
				if isTimeout(err) {
					lost += n - got
					break
				}
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
}
