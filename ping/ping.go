// Package ping sends ICMP echo requests and reports what came back. Engine
// is fping's design: every ping of the process shares a few ICMP sockets;
// ProBing wraps github.com/prometheus-community/pro-bing, one socket per
// ping. Both take a host's tasks.PingOptions and return its Stats.
//
// The engine runs on Linux (ping sockets, or raw ones as root), macOS
// (its unprivileged ping sockets) and FreeBSD (raw sockets, as root);
// elsewhere, Windows included, it refuses and names ProBing.
package ping

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Engine names, as a worker's --engine flag takes them.
const (
	EngineShared  = "shared"
	EngineProBing = "probing"
)

// Stats are the figures of one ping run.
type Stats struct {
	Sent, Received       int
	Min, Avg, Max, Stdev time.Duration
	// RTTs, when the options ask for them, hold each request's RTT in the
	// order they were sent; -1 for one that got no reply in time.
	RTTs []time.Duration
	// TTL is the IP TTL (hop limit) of the last reply, 0 when none came.
	TTL int
	// Refused is how many of the Sent requests the local network stack
	// would not send (a firewall rule, no route): like fping, they count
	// as sent and lost. RefusedErr is the first such error.
	Refused    int
	RefusedErr error
}

// refused reports whether err, from sending a request, means the local
// network stack refused that packet (a firewall drop in the output path
// gives EPERM; a missing route EHOSTUNREACH or ENETUNREACH): the request
// is lost on the way like any other, not a failure of the ping.
func refused(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EPERM, syscall.EACCES, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.ENETDOWN} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// SocketMode chooses the kind of ICMP socket.
type SocketMode int

// Socket modes.
const (
	// SocketAuto tries an unprivileged ICMP ("ping") socket and falls back
	// to a raw socket, for good, the first time the kernel refuses one.
	SocketAuto SocketMode = iota
	// SocketUnprivileged uses only "ping" sockets. On Linux they need the
	// process's group inside net.ipv4.ping_group_range; macOS gives them
	// to everyone; FreeBSD and Windows have none.
	SocketUnprivileged
	// SocketPrivileged uses only raw sockets. They need root (on Linux,
	// CAP_NET_RAW is enough; on Windows, an administrator).
	SocketPrivileged
)

func (m SocketMode) validate() error {
	if m < SocketAuto || m > SocketPrivileged {
		return fmt.Errorf("ping: socket mode %d: want SocketAuto, SocketUnprivileged or SocketPrivileged", m)
	}
	return nil
}

func isPermission(err error) bool {
	return errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}
