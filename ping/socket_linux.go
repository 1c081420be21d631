package ping

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// DefaultEngine is the engine a worker uses unless told otherwise.
const DefaultEngine = EngineShared

// kernelSetsID: Linux's ping sockets get their echo ID from the kernel,
// which also hands each socket only the replies to its own ID.
const kernelSetsID = true

// permissionHint says what lets a user open ping sockets.
const permissionHint = " (net.ipv4.ping_group_range)"

// listen opens an ICMP socket: a raw one (SOCK_RAW, needs CAP_NET_RAW) or a
// ping socket (SOCK_DGRAM, IPPROTO_ICMP; allowed by ping_group_range), with
// the socket-wide options of key set before it is bound.
func listen(key sockKey, raw bool, rcvbuf int) (net.PacketConn, error) {
	family, proto, kind := unix.AF_INET, unix.IPPROTO_ICMP, "ICMP"
	if key.v6 {
		family, proto, kind = unix.AF_INET6, unix.IPPROTO_ICMPV6, "ICMPv6"
	}
	typ := unix.SOCK_DGRAM
	if raw {
		typ = unix.SOCK_RAW
		kind = "raw " + kind
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		return nil, fmt.Errorf("open %s socket: %w", kind, os.NewSyscallError("socket", err))
	}
	fail := func(what string, err error) (net.PacketConn, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// SO_RCVBUFFORCE passes the rmem_max cap when we may (root);
	// otherwise take what SO_RCVBUF gives.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if key.iface != "" {
		if err := unix.BindToDevice(fd, key.iface); err != nil {
			return fail("bind to interface "+key.iface, err)
		}
	}
	if key.mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(key.mark)); err != nil {
			return fail(fmt.Sprintf("set mark %d", key.mark), err)
		}
	}
	if key.df {
		var err error
		if key.v6 {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO)
		} else {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		}
		if err != nil {
			return fail("set don't fragment", err)
		}
	}
	if key.source.IsValid() {
		if err := unix.Bind(fd, sockaddrOf(key.source)); err != nil {
			return fail("bind to source "+key.source.String(), err)
		}
	}
	return packetConn(fd, kind)
}
