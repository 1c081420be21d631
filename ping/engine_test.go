package ping_test

import (
	"github.com/pingfleet/pingfleet/internal/deathsig"
	"go.uber.org/goleak"

	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/lab"
	"github.com/pingfleet/pingfleet/lab/labtest"
	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/tasks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(deathsig.Spawner)) }

func newEngine(t testing.TB, mode ping.SocketMode) *ping.Engine {
	t.Helper()
	e, err := ping.NewEngine(ping.EngineConfig{Mode: mode, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func fast(count int) tasks.PingOptions {
	return tasks.PingOptions{Count: count, Interval: tasks.Duration(5 * time.Millisecond), Timeout: tasks.Duration(2 * time.Second)}.Normalize()
}

func TestEngineLoopback(t *testing.T) {
	t.Parallel()
	e := newEngine(t, ping.SocketAuto)
	tests := []struct {
		desc string
		addr string
		opts tasks.PingOptions
	}{
		{"IPv4", "127.0.0.1", fast(3)},
		{"IPv6", "::1", func() tasks.PingOptions { o := fast(2); o.Network = tasks.NetworkIP6; return o }()},
		{"large packets, don't fragment, TOS", "127.9.9.9", func() tasks.PingOptions {
			o := fast(2)
			o.Size, o.DontFragment, o.TOS = 1400, true, 0x10
			return o
		}()},
		{"TTL 1 still reaches loopback", "127.0.0.2", func() tasks.PingOptions { o := fast(1); o.TTL = 1; return o }()},
		{"source address", "127.0.0.3", func() tasks.PingOptions {
			o := fast(1)
			o.Network, o.Source = tasks.NetworkIP4, "127.0.0.1"
			return o
		}()},
		{"interface", "127.0.0.4", func() tasks.PingOptions { o := fast(1); o.Interface = "lo"; return o }()},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if tc.addr == "::1" {
				if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
					t.Skip("no IPv6 on this machine")
				}
			}
			st, err := e.Ping(context.Background(), netip.MustParseAddr(tc.addr), tc.opts)
			if err != nil {
				t.Fatalf("Ping: %v", err)
			}
			if st.Sent != tc.opts.Count || st.Received != tc.opts.Count {
				t.Errorf("sent %d, received %d; want %d each", st.Sent, st.Received, tc.opts.Count)
			}
			if st.Min <= 0 || st.Min > st.Avg || st.Avg > st.Max || st.TTL != 64 {
				t.Errorf("stats %+v: want 0 < min <= avg <= max and reply TTL 64", st)
			}
		})
	}
}

func TestEngineErrors(t *testing.T) {
	t.Parallel()
	e := newEngine(t, ping.SocketAuto)
	for _, tc := range []struct {
		desc string
		opts tasks.PingOptions
	}{
		{"no such interface", func() tasks.PingOptions { o := fast(1); o.Interface = "nope0"; return o }()},
		{"source not on this host", func() tasks.PingOptions { o := fast(1); o.Network, o.Source = tasks.NetworkIP4, "192.0.2.77"; return o }()},
	} {
		if _, err := e.Ping(context.Background(), netip.MustParseAddr("127.0.0.1"), tc.opts); err == nil {
			t.Errorf("%s: Ping succeeded; want an error", tc.desc)
		}
	}
}

// 10,000 pings in flight at once on one engine lose no reply. They go to
// the lab's scale range, inside its own network namespace, so that other
// tests' raw sockets never see this flood (nor this test theirs).
func TestEngineTenThousandConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 pings; skipped with -short")
	}
	// Not parallel: the package's other tests wait while it runs. Its
	// 20,000 replies are read by one goroutine per socket, which the race
	// detector slows; beside the other tests, and the other packages'
	// under CI, CI once saw 31 % of them read after the 5 s timeout. The
	// claim is that none is lost in the engine, not how fast a starved
	// process reads them: 15 s.
	l := labtest.Start(t, lab.Config{Seed: 1})
	e := newEngine(t, ping.SocketAuto)
	const n = 10000
	opts := tasks.PingOptions{Count: 2, Interval: tasks.Duration(500 * time.Millisecond), Timeout: tasks.Duration(15 * time.Second)}.Normalize()
	// The engine opens its sockets on first use: do that inside the lab.
	err := l.Do(func() error {
		_, err := e.Ping(context.Background(), netip.MustParseAddr("198.19.255.255"), fast(1))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	lost, failed := 0, 0
	start := make(chan struct{})
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 19, byte(i / 256), byte(i % 256)})
		wg.Go(func() {
			<-start
			st, err := e.Ping(context.Background(), ip, opts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			lost += st.Sent - st.Received
		})
	}
	close(start)
	wg.Wait()
	if lost != 0 || failed != 0 {
		t.Errorf("%d of %d replies lost, %d pings failed (lab: %+v)", lost, 2*n, failed, l.Stats())
	}
}

// Requests a firewall rule drops on their way out make sendmsg fail with
// EPERM: they count as sent and lost, as in fping, and the ping is no error.
func TestEngineKernelLoss(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not found; install it (apt-get install nftables) to run this test")
	}
	p := netip.MustParsePrefix
	l := labtest.Start(t, lab.Config{Seed: 1, Ranges: []lab.Range{
		{Name: "firewalled", Prefix: p("198.18.9.0/24"), KernelLoss: 1},
		{Name: "half", Prefix: p("198.18.10.0/24"), KernelLoss: 0.5},
	}})
	e := newEngine(t, ping.SocketAuto)
	opts := fast(40)
	var all, half ping.Stats
	err := l.Do(func() (err error) {
		if all, err = e.Ping(context.Background(), netip.MustParseAddr("198.18.9.1"), opts); err != nil {
			return err
		}
		half, err = e.Ping(context.Background(), netip.MustParseAddr("198.18.10.1"), opts)
		return err
	})
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if all.Sent != 40 || all.Received != 0 || all.Refused != 40 || !errors.Is(all.RefusedErr, syscall.EPERM) {
		t.Errorf("all dropped: %+v; want 40 sent, 40 refused with EPERM", all)
	}
	// 40 requests at p = 0.5: 6 to 34 refused outside 1 in 10^5 runs.
	if half.Sent != 40 || half.Received+half.Refused != 40 || half.Refused < 6 || half.Refused > 34 {
		t.Errorf("half dropped: %+v; want 40 sent, each either answered or refused", half)
	}
	if dropped, err := l.KernelDropped(context.Background()); err != nil || dropped != uint64(all.Refused+half.Refused) {
		t.Errorf("nftables dropped %d (%v); want %d", dropped, err, all.Refused+half.Refused)
	}
}

func TestEngineCancelAndClose(t *testing.T) {
	t.Parallel()
	e, err := ping.NewEngine(ping.EngineConfig{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = e.Ping(ctx, netip.MustParseAddr("127.0.0.1"), tasks.PingOptions{Count: 100}.Normalize())
	if err == nil {
		t.Error("Ping past its context's end returned no error")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Ping(context.Background(), netip.MustParseAddr("127.0.0.1"), fast(1)); err == nil {
		t.Error("Ping after Close returned no error")
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		cfg  ping.EngineConfig
		want string
	}{
		{"negative sockets", ping.EngineConfig{Sockets: -1}, "ping engine: -1 sockets per option set: want 1 to 64 (0 for 4)"},
		{"too many sockets", ping.EngineConfig{Sockets: 65}, "ping engine: 65 sockets per option set: want 1 to 64 (0 for 4)"},
		{"negative buffer", ping.EngineConfig{ReadBuffer: -5}, "ping engine: read buffer of -5 bytes"},
		{"unknown mode", ping.EngineConfig{Mode: 9}, "ping: socket mode 9: want SocketAuto, SocketUnprivileged or SocketPrivileged"},
	} {
		if _, err := ping.NewEngine(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("%s: NewEngine: %v; want %q", tc.desc, err, tc.want)
		}
	}
	if _, err := ping.NewProBing(ping.ProBingConfig{Mode: -1}); err == nil {
		t.Error("NewProBing with mode -1: no error")
	}
}

// Without a count, a ping is fping's reachability check: the first reply
// ends it, a host that does not answer gets its retries, each waiting
// longer, and a lossy host is reported up with its loss counted.
func TestEngineRetries(t *testing.T) {
	t.Parallel()
	p := netip.MustParsePrefix
	l := labtest.Start(t, lab.Config{Seed: 7, Ranges: []lab.Range{
		{Name: "dead", Prefix: p("198.18.20.0/24"), Dead: true},
		{Name: "lossy", Prefix: p("198.18.21.0/24"), Loss: 0.5},
	}})
	e := newEngine(t, ping.SocketAuto)
	// Retries 3, backoff 1.5. The timeout is long enough that a reply the
	// lab sent is read in time even when the race detector and the other
	// packages' tests starve this process for hundreds of milliseconds (CI
	// saw 95 of 200 up at 250 ms): the loss counted is then the lab's.
	opts := tasks.PingOptions{Timeout: tasks.Duration(time.Second)}.Normalize()
	if opts.Retries != 3 || opts.Backoff != 1.5 {
		t.Fatalf("options without a count: %+v; want 3 retries, backoff 1.5", opts)
	}
	err := l.Do(func() error {
		st, err := e.Ping(context.Background(), netip.MustParseAddr("127.0.0.1"), opts)
		if err != nil || st.Sent != 1 || st.Received != 1 {
			t.Errorf("a host that answers: %+v, %v; want 1 sent, 1 received", st, err)
		}
		st, err = e.Ping(context.Background(), netip.MustParseAddr("198.18.20.1"), opts)
		if err != nil || st.Sent != 4 || st.Received != 0 {
			t.Errorf("a dead host: %+v, %v; want 4 sent (the request and 3 retries), none received", st, err)
		}
		const n = 200
		var mu sync.Mutex
		var wg sync.WaitGroup
		up, sent := 0, 0
		before := l.Stats()
		for i := range n {
			ip := netip.AddrFrom4([4]byte{198, 18, 21, byte(i + 1)})
			wg.Go(func() {
				st, err := e.Ping(context.Background(), ip, opts)
				mu.Lock()
				defer mu.Unlock()
				if err != nil || st.Received > 1 || st.Sent < 1 || st.Sent > 4 || (st.Received == 1) != (st.Min > 0) {
					t.Errorf("%s: %+v, %v", ip, st, err)
				}
				up += st.Received
				sent += st.Sent
			})
		}
		wg.Wait()
		// Up unless all 4 tries are lost (p = 1/16): 187.5 expected, 170
		// to 200 but once in 10^6 runs; about 1.9 tries per host.
		if up < 170 || sent < n+120 || sent > n+240 {
			t.Errorf("50 %% loss: %d of %d up after %d requests; want about 188 up after about 375 (lab, before: %+v, after: %+v)", up, n, sent, before, l.Stats())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// In the reachability mode a reply later than its request's timeout, which
// comes while a retry waits, means the host answered (as fping counts
// it): the run ends there, up, with that reply's RTT from its own request.
func TestEngineRetriesLateReply(t *testing.T) {
	t.Parallel()
	l := labtest.Start(t, lab.Config{Seed: 5, Ranges: []lab.Range{
		{Name: "slow", Prefix: netip.MustParsePrefix("198.18.23.0/24"), Delay: 900 * time.Millisecond},
	}})
	e := newEngine(t, ping.SocketAuto)
	// The first request waits 500 ms, the retry 750 (until 1,250 ms): the
	// first reply, at 900 ms, comes during the retry's wait, later than
	// the retry's own wait after its request.
	opts := tasks.PingOptions{Timeout: tasks.Duration(500 * time.Millisecond)}.Normalize()
	err := l.Do(func() error {
		st, err := e.Ping(context.Background(), netip.MustParseAddr("198.18.23.1"), opts)
		if err != nil || st.Sent != 2 || st.Received != 1 || st.Min < 850*time.Millisecond || st.Min > 1250*time.Millisecond {
			t.Errorf("a host answering in 900 ms, timeout 500 ms: %+v, %v; want 2 sent, 1 received at about 900 ms", st, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// With RTTs asked for, each request's RTT comes back in the order sent,
// and a lost request as lost (fping -C).
func TestEnginePerRequestRTTs(t *testing.T) {
	t.Parallel()
	l := labtest.Start(t, lab.Config{Seed: 3, Ranges: []lab.Range{{Name: "lossy", Prefix: netip.MustParsePrefix("198.18.22.0/24"), Loss: 0.5}}})
	e := newEngine(t, ping.SocketAuto)
	opts := fast(20)
	opts.RTTs, opts.Timeout = true, tasks.Duration(200*time.Millisecond)
	err := l.Do(func() error {
		for _, ip := range []string{"127.0.0.1", "198.18.22.1", "198.18.22.2"} {
			st, err := e.Ping(context.Background(), netip.MustParseAddr(ip), opts)
			if err != nil {
				return err
			}
			answered := 0
			for _, d := range st.RTTs {
				switch {
				case d > 0:
					answered++
					if d < st.Min || d > st.Max {
						t.Errorf("%s: RTT %v outside min %v, max %v", ip, d, st.Min, st.Max)
					}
				case d != -1:
					t.Errorf("%s: RTT %v", ip, d)
				}
			}
			if len(st.RTTs) != 20 || answered != st.Received {
				t.Errorf("%s: %d RTTs, %d answered; want 20, and %d answered as received", ip, len(st.RTTs), answered, st.Received)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Without asking, none are kept.
	if st, err := e.Ping(context.Background(), netip.MustParseAddr("127.0.0.1"), fast(2)); err != nil || st.RTTs != nil {
		t.Errorf("RTTs without asking: %v, %v", st.RTTs, err)
	}
}
