//go:build !linux && !darwin && !freebsd

package ping

import (
	"fmt"
	"net"
	"runtime"
)

// DefaultEngine is the engine a worker uses unless told otherwise: pro-bing
// here, as the shared engine has no socket code for this system.
const DefaultEngine = EngineProBing

const (
	kernelSetsID   = false
	permissionHint = ""
)

// listen refuses: the shared engine opens sockets on Linux, macOS and
// FreeBSD only.
func listen(sockKey, bool, int) (net.PacketConn, error) {
	return nil, fmt.Errorf("the shared ICMP engine runs on Linux, macOS and FreeBSD, not on %s: use the probing engine (--engine probing)", runtime.GOOS)
}
