//go:build !linux

package worker

import (
	"fmt"
	"net"
	"runtime"
)

// DefaultEngine is the ping engine a worker uses unless told otherwise:
// pro-bing here, as the shared-socket engine needs Linux's socket options.
const DefaultEngine = "probing"

// listen refuses: the shared-socket engine sets Linux-only socket options
// (SO_RCVBUFFORCE, SO_MARK, SO_BINDTODEVICE...) and reads replies as Linux
// delivers them on ping sockets (without the IP header, which other systems
// keep). Use the probing engine (pro-bing) on this system.
func listen(sockKey, bool, int) (net.PacketConn, error) {
	return nil, fmt.Errorf("the shared ICMP engine runs on Linux only, not on %s: use --engine probing", runtime.GOOS)
}
