package worker

import (
	"context"
	"net/netip"

	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/tasks"
)

// Pinger sends echo requests to one address and reports what came back. An
// address that does not answer is not an error: the Stats say so. Errors
// are for pings that could not be sent at all. ping.Engine and ping.ProBing
// are the two a worker uses.
type Pinger interface {
	Ping(ctx context.Context, ip netip.Addr, opts tasks.PingOptions) (ping.Stats, error)
}

var (
	_ Pinger = (*ping.Engine)(nil)
	_ Pinger = (*ping.ProBing)(nil)
)
