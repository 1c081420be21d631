//go:build darwin || freebsd

package ping

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultEngine is the engine a worker uses unless told otherwise.
const DefaultEngine = EngineShared

// listen opens an ICMP socket, raw (SOCK_RAW, needs root) or, where the
// system has them (macOS), a ping socket (SOCK_DGRAM), with the
// socket-wide options of key set before it is bound. The Linux-only
// options have no equivalent here: a mark is refused with that reason.
func listen(key sockKey, raw bool, rcvbuf int) (net.PacketConn, error) {
	family, proto, kind := unix.AF_INET, unix.IPPROTO_ICMP, "ICMP"
	if key.v6 {
		family, proto, kind = unix.AF_INET6, unix.IPPROTO_ICMPV6, "ICMPv6"
	}
	typ := unix.SOCK_DGRAM
	if raw {
		typ = unix.SOCK_RAW
		kind = "raw " + kind
	} else if !pingSockets {
		return nil, fmt.Errorf("open %s socket: %w", kind, errNoPingSockets)
	}
	// As the net package does here: no SOCK_CLOEXEC on macOS, so keep
	// fork from seeing the descriptor before it is marked.
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(family, typ, proto)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("open %s socket: %w", kind, os.NewSyscallError("socket", err))
	}
	fail := func(what string, err error) (net.PacketConn, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail("set non-blocking", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf) // take what the system gives
	if !raw && !key.v6 {
		// Deliver replies without their IP header, as Linux does.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, ipStripHeader, 1)
	}
	if key.iface != "" {
		if err := bindToInterface(fd, key.v6, key.iface); err != nil {
			return fail("bind to interface "+key.iface, err)
		}
	}
	if key.mark != 0 {
		return fail(fmt.Sprintf("set mark %d", key.mark), errNoMark)
	}
	if key.df {
		var err error
		if key.v6 {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1)
		} else {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_DONTFRAG, 1)
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
