package ping_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/tasks"
)

// BenchmarkEngine pings n loopback hosts at once, one request each, and
// reports the CPU-bound cost per ping:
//
//	go test ./ping -run '^$' -bench Engine -benchtime 5x -cpuprofile cpu.out
func BenchmarkEngine(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := newEngine(b, ping.SocketAuto)
			opts := tasks.PingOptions{Count: 1, Timeout: tasks.Duration(5 * time.Second)}.Normalize()
			ips := make([]netip.Addr, n)
			for i := range ips {
				ips[i] = netip.AddrFrom4([4]byte{127, 200, byte(i / 250), byte(i%250 + 1)})
			}
			lost := 0
			for b.Loop() {
				var wg sync.WaitGroup
				var mu sync.Mutex
				for _, ip := range ips {
					wg.Go(func() {
						st, err := e.Ping(context.Background(), ip, opts)
						mu.Lock()
						defer mu.Unlock()
						if err != nil || st.Received != 1 {
							lost++
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "pings/s")
			b.ReportMetric(float64(lost), "lost")
		})
	}
}
