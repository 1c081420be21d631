package lab

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"go.uber.org/goleak"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// request is an IPv4 ICMP echo request as a ping tool sends it.
type request struct {
	src, dst string
	id, seq  int
	data     string
	options  []byte // IP options
}

func (r request) packet(t testing.TB) []byte {
	t.Helper()
	body, err := (&icmp.Message{
		Type: ipv4.ICMPTypeEcho,
		Body: &icmp.Echo{ID: r.id, Seq: r.seq, Data: []byte(r.data)},
	}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	return ipPacket(t, r.src, r.dst, 1, r.options, body)
}

// ipPacket builds an IPv4 packet with a correct header checksum.
func ipPacket(t testing.TB, src, dst string, proto int, options, payload []byte) []byte {
	t.Helper()
	h := &ipv4.Header{
		Version:  4,
		Len:      ipv4.HeaderLen + len(options),
		TotalLen: ipv4.HeaderLen + len(options) + len(payload),
		ID:       4242,
		TTL:      63,
		Protocol: proto,
		Src:      net.ParseIP(src),
		Dst:      net.ParseIP(dst),
		Options:  options,
	}
	hb, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint16(hb[10:12], ^foldSum(hb))
	return append(hb, payload...)
}

// foldSum is the one's complement sum of b, written differently from
// checksum so that each checks the other.
func foldSum(b []byte) uint16 {
	var sum uint64
	for i := 0; i < len(b); i += 2 {
		w := uint64(b[i]) << 8
		if i+1 < len(b) {
			w |= uint64(b[i+1])
		}
		sum += w
	}
	return uint16(sum % 0xffff)
}

// reply is what a test checks of an echo reply.
type reply struct {
	Src, Dst      string
	TTL, IHL      int
	ID, Seq       int
	Data          string
	HeaderSumOK   bool
	ICMPSumOK     bool
	Type          ipv4.ICMPType
	TotalLenMatch bool
}

func parseReply(t *testing.T, pkt []byte) reply {
	t.Helper()
	h, err := ipv4.ParseHeader(pkt)
	if err != nil {
		t.Fatalf("parse IP header: %v", err)
	}
	body := pkt[h.Len:]
	m, err := icmp.ParseMessage(1, body)
	if err != nil {
		t.Fatalf("parse ICMP: %v", err)
	}
	echo, ok := m.Body.(*icmp.Echo)
	if !ok {
		t.Fatalf("ICMP body is %T, not an echo", m.Body)
	}
	// Marshal computes the checksum afresh: the bytes match only if the
	// reply's checksum is right.
	again, err := m.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	return reply{
		Src: h.Src.String(), Dst: h.Dst.String(), TTL: h.TTL, IHL: h.Len,
		ID: echo.ID, Seq: echo.Seq, Data: string(echo.Data),
		HeaderSumOK:   foldSum(pkt[:h.Len]) == 0,
		ICMPSumOK:     string(again) == string(body),
		Type:          m.Type.(ipv4.ICMPType),
		TotalLenMatch: h.TotalLen == len(pkt),
	}
}

func newTestResponder(t *testing.T, ranges []Range, seed uint64) *Responder {
	t.Helper()
	r, err := NewResponder(Config{Ranges: ranges, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestHandleBuildsReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		req  request
	}{
		{"plain", request{src: LocalAddr, dst: "198.18.0.7", id: 0x1234, seq: 7, data: "abcdefgh0123456789"}},
		{"odd data length", request{src: LocalAddr, dst: "198.19.200.1", id: 1, seq: 65535, data: "xyz"}},
		{"no data", request{src: "198.18.255.254", dst: "198.18.9.9", id: 65535, seq: 0}},
		{"IP options are not echoed", request{src: LocalAddr, dst: "198.18.0.1", id: 9, seq: 1, data: "opt",
			options: []byte{1, 1, 1, 0}}}, // NOP NOP NOP EOL
		{"large", request{src: LocalAddr, dst: "198.18.0.2", id: 2, seq: 2, data: strings.Repeat("p", 1472)}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			r := newTestResponder(t, DefaultRanges(), 1)
			pkt := tc.req.packet(t)
			orig := string(pkt)
			got, delay, ok := r.handle(pkt)
			if !ok || delay != 0 {
				t.Fatalf("handle = ok %v, delay %v; want an immediate reply", ok, delay)
			}
			if string(pkt) != orig {
				t.Errorf("handle changed the request")
			}
			want := reply{
				Src: tc.req.dst, Dst: tc.req.src, TTL: 64, IHL: 20,
				ID: tc.req.id, Seq: tc.req.seq, Data: tc.req.data,
				HeaderSumOK: true, ICMPSumOK: true, Type: ipv4.ICMPTypeEchoReply, TotalLenMatch: true,
			}
			if diff := cmp.Diff(want, parseReply(t, got)); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(Stats{Requests: 1}, r.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandleIgnores(t *testing.T) {
	t.Parallel()
	echo := func(dst string) []byte {
		return request{src: LocalAddr, dst: dst, id: 1, seq: 1, data: "x"}.packet(t)
	}
	good := echo("198.18.0.1")
	badSum := append([]byte(nil), good...)
	badSum[len(badSum)-1] ^= 0xff
	fragment := ipPacket(t, LocalAddr, "198.18.0.1", 1, nil, good[20:])
	fragment[6] |= 0x20 // more fragments
	fragment[10], fragment[11] = 0, 0
	binary.BigEndian.PutUint16(fragment[10:12], ^foldSum(fragment[:20]))
	echoReply, err := (&icmp.Message{Type: ipv4.ICMPTypeEchoReply, Body: &icmp.Echo{ID: 1, Seq: 1}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	unreachable, err := (&icmp.Message{Type: ipv4.ICMPTypeDestinationUnreachable, Code: 1, Body: &icmp.DstUnreach{Data: good[:28]}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	ipv6 := make([]byte, 48)
	ipv6[0] = 0x60

	for _, tc := range []struct {
		desc string
		pkt  []byte
	}{
		{"empty", nil},
		{"IPv6", ipv6},
		{"truncated", good[:len(good)-1]},
		{"header only", good[:20]},
		{"UDP", ipPacket(t, LocalAddr, "198.18.0.1", 17, nil, []byte("01234567"))},
		{"echo reply", ipPacket(t, LocalAddr, "198.18.0.1", 1, nil, echoReply)},
		{"destination unreachable", ipPacket(t, LocalAddr, "198.18.0.1", 1, nil, unreachable)},
		{"bad ICMP checksum", badSum},
		{"fragment", fragment},
		{"outside the lab", echo("192.0.2.1")},
		{"just outside the lab", echo("198.20.0.1")},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			r := newTestResponder(t, DefaultRanges(), 1)
			if _, _, ok := r.handle(tc.pkt); ok {
				t.Errorf("handle answered")
			}
			if diff := cmp.Diff(Stats{Ignored: 1}, r.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLongestPrefix(t *testing.T) {
	t.Parallel()
	p := netip.MustParsePrefix
	ranges := []Range{
		{Name: "slash16", Prefix: p("198.18.0.0/16"), Delay: 10 * time.Millisecond},
		{Name: "slash24", Prefix: p("198.18.5.0/24"), Delay: 20 * time.Millisecond},
		{Name: "slash25", Prefix: p("198.18.5.128/25"), Dead: true},
		{Name: "slash32", Prefix: p("198.18.5.200/32"), Delay: 30 * time.Millisecond},
		{Name: "other24", Prefix: p("198.18.6.0/24"), Delay: 40 * time.Millisecond},
	}
	r := newTestResponder(t, ranges, 1)
	for _, tc := range []struct {
		addr      string
		wantRange string // "" for none
		wantDelay time.Duration
		wantOK    bool
	}{
		{"198.18.0.1", "slash16", 10 * time.Millisecond, true},
		{"198.18.5.1", "slash24", 20 * time.Millisecond, true},
		{"198.18.5.127", "slash24", 20 * time.Millisecond, true},
		{"198.18.5.128", "slash25", 0, false},
		{"198.18.5.199", "slash25", 0, false},
		{"198.18.5.200", "slash32", 30 * time.Millisecond, true},
		{"198.18.5.201", "slash25", 0, false},
		{"198.18.6.255", "other24", 40 * time.Millisecond, true},
		{"198.18.255.1", "slash16", 10 * time.Millisecond, true},
		{"198.19.0.1", "", 0, true},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			var got string
			if rg := r.match(netip.MustParseAddr(tc.addr)); rg != nil {
				got = rg.Name
			}
			if got != tc.wantRange {
				t.Errorf("match = %q, want %q", got, tc.wantRange)
			}
			_, delay, ok := r.handle(request{src: LocalAddr, dst: tc.addr, id: 1, seq: 1}.packet(t))
			if delay != tc.wantDelay || ok != tc.wantOK {
				t.Errorf("handle = delay %v, ok %v; want %v, %v", delay, ok, tc.wantDelay, tc.wantOK)
			}
		})
	}
}

func TestDefaultRanges(t *testing.T) {
	t.Parallel()
	r := newTestResponder(t, nil, 1)
	for _, tc := range []struct{ addr, want string }{
		{"198.18.0.9", "fast"},
		{"198.18.1.9", "delay50"},
		{"198.18.2.9", "loss20"},
		{"198.18.3.9", "loss50"},
		{"198.18.4.9", "dead"},
		{"198.18.16.0", "latency"},
		{"198.18.31.255", "latency"},
		{"198.18.32.0", ""},
		{"198.19.255.255", "scale"},
		{LocalAddr, ""},
	} {
		var got string
		if rg := r.match(netip.MustParseAddr(tc.addr)); rg != nil {
			got = rg.Name
		}
		if got != tc.want {
			t.Errorf("%s: range %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// outcomes sends n requests to dst through r and returns, per request, its
// delay, or -1 when it got no reply.
func outcomes(t *testing.T, r *Responder, dst string, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, n)
	for i := range out {
		_, delay, ok := r.handle(request{src: LocalAddr, dst: dst, id: 7, seq: i}.packet(t))
		out[i] = -1
		if ok {
			out[i] = delay
		}
	}
	return out
}

func TestLossAndDead(t *testing.T) {
	t.Parallel()
	p := netip.MustParsePrefix
	ranges := []Range{
		{Prefix: p("198.18.2.0/24"), Loss: 0.2},
		{Prefix: p("198.18.3.0/24"), Loss: 0.5},
		{Prefix: p("198.18.4.0/24"), Dead: true},
		{Prefix: p("198.18.5.0/24"), Loss: 1},
		{Prefix: p("198.18.6.0/24"), Loss: 0},
	}
	const n = 10000
	for _, tc := range []struct {
		dst       string
		wantStats func(lost int) Stats
		min, max  int // lost requests
	}{
		// Binomial, n = 10,000: ±5 standard deviations.
		{"198.18.2.1", func(lost int) Stats { return Stats{Requests: n, Dropped: uint64(lost)} }, 1800, 2200},
		{"198.18.3.1", func(lost int) Stats { return Stats{Requests: n, Dropped: uint64(lost)} }, 4750, 5250},
		{"198.18.4.1", func(int) Stats { return Stats{Requests: n, Dead: n} }, n, n},
		{"198.18.5.1", func(int) Stats { return Stats{Requests: n, Dropped: n} }, n, n},
		{"198.18.6.1", func(int) Stats { return Stats{Requests: n} }, 0, 0},
	} {
		t.Run(tc.dst, func(t *testing.T) {
			t.Parallel()
			r := newTestResponder(t, ranges, 42)
			got := outcomes(t, r, tc.dst, n)
			lost := 0
			for _, d := range got {
				if d < 0 {
					lost++
				}
			}
			if lost < tc.min || lost > tc.max {
				t.Errorf("%d of %d requests lost, want %d to %d", lost, n, tc.min, tc.max)
			}
			if diff := cmp.Diff(tc.wantStats(lost), r.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
			// The same seed decides the same way.
			if diff := cmp.Diff(got, outcomes(t, newTestResponder(t, ranges, 42), tc.dst, n)); diff != "" {
				t.Errorf("same seed, other outcomes (-first +second):\n%s", diff)
			}
		})
	}
	a := outcomes(t, newTestResponder(t, ranges, 1), "198.18.3.1", 100)
	b := outcomes(t, newTestResponder(t, ranges, 2), "198.18.3.1", 100)
	if cmp.Equal(a, b) {
		t.Errorf("seeds 1 and 2 lost the same requests")
	}
}

func TestJitter(t *testing.T) {
	t.Parallel()
	p := netip.MustParsePrefix
	ranges := []Range{
		{Prefix: p("198.18.1.0/24"), Delay: 50 * time.Millisecond, Jitter: 5 * time.Millisecond},
		{Prefix: p("198.18.2.0/24"), Delay: time.Millisecond, Jitter: 4 * time.Millisecond},
		{Prefix: p("198.18.3.0/24"), Delay: 20 * time.Millisecond},
	}
	for _, tc := range []struct {
		dst      string
		min, max time.Duration
		wantMean time.Duration // within 5 %, or ±0.2 ms
		wantZero bool          // some delays clamped to 0
	}{
		{"198.18.1.1", 45 * time.Millisecond, 55 * time.Millisecond, 50 * time.Millisecond, false},
		// Uniform over [-3 ms, 5 ms] with the negative part at 0: mean 25/16 ms.
		{"198.18.2.1", 0, 5 * time.Millisecond, 25 * time.Millisecond / 16, true},
		{"198.18.3.1", 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, false},
	} {
		t.Run(tc.dst, func(t *testing.T) {
			t.Parallel()
			got := outcomes(t, newTestResponder(t, ranges, 3), tc.dst, 4000)
			var sum time.Duration
			zeros := 0
			for _, d := range got {
				if d < tc.min || d > tc.max {
					t.Fatalf("delay %v outside [%v, %v]", d, tc.min, tc.max)
				}
				if d == 0 {
					zeros++
				}
				sum += d
			}
			mean := sum / time.Duration(len(got))
			tolerance := max(tc.wantMean/20, 200*time.Microsecond)
			if mean < tc.wantMean-tolerance || mean > tc.wantMean+tolerance {
				t.Errorf("mean delay %v, want %v ± %v", mean, tc.wantMean, tolerance)
			}
			if (zeros > 0) != tc.wantZero {
				t.Errorf("%d delays of 0; want some: %v", zeros, tc.wantZero)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		desc string
		cfg  Config
		want string
	}{
		{"defaults", Config{}, ""},
		{"no ranges", Config{Ranges: []Range{}}, ""},
		{"no prefix", Config{Ranges: []Range{{Delay: 1}}}, "range 0: no prefix"},
		{"IPv6", Config{Ranges: []Range{{Prefix: p("2001:db8::/64")}}}, "range 0 (2001:db8::/64): not IPv4; the lab is 198.18.0.0/15"},
		{"host bits", Config{Ranges: []Range{{Prefix: p("198.18.1.1/24")}}}, "range 0 (198.18.1.1/24): host bits set; did you mean 198.18.1.0/24?"},
		{"outside", Config{Ranges: []Range{{Prefix: p("10.0.0.0/24")}}}, "range 0 (10.0.0.0/24): outside the lab network 198.18.0.0/15"},
		{"wider than the lab", Config{Ranges: []Range{{Prefix: p("198.16.0.0/14")}}}, "range 0 (198.16.0.0/14): outside the lab network 198.18.0.0/15"},
		{"twice", Config{Ranges: []Range{{Prefix: p("198.18.1.0/24")}, {Prefix: p("198.18.1.0/24")}}}, "range 1 (198.18.1.0/24): prefix given twice"},
		{"negative delay", Config{Ranges: []Range{{Prefix: p("198.18.1.0/24"), Delay: -1}}}, "range 0 (198.18.1.0/24): negative delay or jitter"},
		{"loss > 1", Config{Ranges: []Range{{Prefix: p("198.18.1.0/24"), Loss: 1.5}}}, "range 0 (198.18.1.0/24): loss 1.5 not within [0, 1]"},
		{"kernel loss < 0", Config{Ranges: []Range{{Prefix: p("198.18.1.0/24"), KernelLoss: -0.1}}}, "range 0 (198.18.1.0/24): kernel loss -0.1 not within [0, 1]"},
		{"device name", Config{Device: "a-very-long-device-name"}, `device "a-very-long-device-name": not a valid interface name (at most 15 bytes, no '/')`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			var got string
			if _, err := NewResponder(tc.cfg); err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("NewResponder error = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRangeString(t *testing.T) {
	t.Parallel()
	var got []string
	for _, r := range append(DefaultRanges(), KernelLossRanges()...) {
		got = append(got, r.String())
	}
	want := []string{
		"198.18.0.0/24 fast: delay 0s",
		"198.18.1.0/24 delay50: delay 50ms ±5ms",
		"198.18.2.0/24 loss20: delay 0s, loss 20%",
		"198.18.3.0/24 loss50: delay 0s, loss 50%",
		"198.18.4.0/24 dead: dead",
		"198.18.16.0/20 latency: delay 50ms",
		"198.19.0.0/16 scale: delay 0s",
		"198.18.5.0/24 kloss20: delay 0s, kernel loss 20% (nftables)",
		"198.18.6.0/24 kloss50: delay 0s, kernel loss 50% (nftables)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestServe runs a Responder on one end of a pipe, as on a TUN device: a
// delayed reply must not hold back a later immediate one, and cancelling
// stops Serve and its writer.
func TestServe(t *testing.T) {
	t.Parallel()
	const delay = 30 * time.Millisecond
	r := newTestResponder(t, []Range{{Prefix: netip.MustParsePrefix("198.18.1.0/24"), Delay: delay}}, 1)
	dev, peer := net.Pipe()
	defer peer.Close()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, dev) }()

	start := time.Now()
	for _, dst := range []string{"198.18.1.1", "198.18.0.1"} {
		if _, err := peer.Write(request{src: LocalAddr, dst: dst, id: 1, seq: 1}.packet(t)); err != nil {
			t.Fatal(err)
		}
	}
	// Junk is ignored, not fatal.
	if _, err := peer.Write([]byte{0x45, 0}); err != nil {
		t.Fatal(err)
	}
	var order []string
	buf := make([]byte, 1500)
	for range 2 {
		if err := peer.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatalf("read reply: %v", err)
		}
		order = append(order, parseReply(t, buf[:n]).Src)
	}
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("delayed reply after %v, before its delay %v", elapsed, delay)
	}
	if diff := cmp.Diff([]string{"198.18.0.1", "198.18.1.1"}, order); diff != "" {
		t.Errorf("reply order (-want +got):\n%s", diff)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return r.Stats().Ignored == 1 })
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil after cancel", err)
	}
	if diff := cmp.Diff(Stats{Requests: 2, Replies: 2, Ignored: 1}, r.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

// recorder is a device that records the order of the packets written.
type recorder struct {
	mu  sync.Mutex
	got []byte // first payload byte of each packet
}

func (w *recorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, p[0])
	return len(p), nil
}

func (w *recorder) written() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.got...)
}

func TestSchedulerOrder(t *testing.T) {
	t.Parallel()
	s := newScheduler()
	w := &recorder{}
	r := &Responder{}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { s.run(ctx, w, r) })
	defer wg.Wait()
	defer cancel()

	// Pushed out of order, with ties; replies due together keep arrival order.
	delays := []struct {
		id    byte
		delay time.Duration
	}{
		{5, 40 * time.Millisecond}, {3, 20 * time.Millisecond}, {1, 0}, {4, 20 * time.Millisecond},
		{6, 60 * time.Millisecond}, {2, 0},
	}
	for _, d := range delays {
		s.push(d.delay, []byte{d.id})
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return len(w.written()) == len(delays) })
	if diff := cmp.Diff([]byte{1, 2, 3, 4, 5, 6}, w.written()); diff != "" {
		t.Errorf("write order (-want +got):\n%s", diff)
	}
	if got := r.Stats().Replies; got != uint64(len(delays)) {
		t.Errorf("Replies = %d, want %d", got, len(delays))
	}
}

func TestReplyHeap(t *testing.T) {
	t.Parallel()
	var h replyHeap
	dues := []time.Duration{9, 3, 7, 3, 1, 8, 2, 2, 6, 0, 5, 4}
	for i, d := range dues {
		h.push(pending{due: d, seq: uint64(i)})
	}
	var got []time.Duration
	for len(h) > 0 {
		got = append(got, h.pop().due)
	}
	if diff := cmp.Diff([]time.Duration{0, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func BenchmarkHandle(b *testing.B) {
	r, err := NewResponder(Config{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	pkt := request{src: LocalAddr, dst: "198.18.1.1", id: 1, seq: 1, data: strings.Repeat("x", 56)}.packet(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := r.handle(pkt); !ok {
			b.Fatal("no reply")
		}
	}
}
