package ping_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/tasks"
)

// Real ICMP to loopback addresses: every 127.0.0.0/8 address answers on
// Linux. Needs ping sockets or raw sockets (root); SocketAuto picks.
func TestProBingLoopback(t *testing.T) {
	t.Parallel()
	p := newProBing(t)
	tests := []struct {
		desc string
		addr string
		opts tasks.PingOptions
	}{
		{"IPv4", "127.0.0.1", tasks.PingOptions{Count: 3, Interval: tasks.Duration(10 * time.Millisecond)}},
		{"other loopback address, big packets, low TTL", "127.42.1.7", tasks.PingOptions{Count: 2, Interval: tasks.Duration(5 * time.Millisecond), Size: 1400, TTL: 3}},
		{"IPv6", "::1", tasks.PingOptions{Count: 2, Interval: tasks.Duration(5 * time.Millisecond)}},
		{"no count: retries, stopped by the first reply", "127.0.0.2", tasks.PingOptions{}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if tc.addr == "::1" {
				if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
					t.Skip("no IPv6 on this machine")
				}
			}
			st, err := p.Ping(context.Background(), netip.MustParseAddr(tc.addr), tc.opts.Normalize())
			if err != nil {
				t.Fatalf("Ping: %v", err)
			}
			n := max(tc.opts.Count, 1)
			if st.Sent != n || st.Received != n {
				t.Errorf("sent %d, received %d; want %d, %d", st.Sent, st.Received, n, n)
			}
			if st.Min <= 0 || st.Min > st.Avg || st.Avg > st.Max || st.TTL == 0 {
				t.Errorf("stats %+v: want 0 < min <= avg <= max and a reply TTL", st)
			}
		})
	}
}

func TestProBingCancelled(t *testing.T) {
	t.Parallel()
	p := newProBing(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Ping(ctx, netip.MustParseAddr("127.0.0.1"), tasks.PingOptions{Count: 100, Interval: tasks.Duration(time.Second)}.Normalize())
	if err == nil {
		t.Fatal("Ping with a cancelled context returned no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Ping returned %s after its context ended", d)
	}
}

func newProBing(t *testing.T) *ping.ProBing {
	t.Helper()
	p, err := ping.NewProBing(ping.ProBingConfig{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
