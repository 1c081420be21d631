//go:build unix

package ping

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// dest is a destination as sendto(2) takes it.
type dest = unix.Sockaddr

// sockaddr returns dst as a socket address; an IPv6 zone names the
// interface (or is its index).
func sockaddr(dst netip.Addr) (dest, error) {
	if dst.Is4() {
		return &unix.SockaddrInet4{Addr: dst.As4()}, nil
	}
	sa := &unix.SockaddrInet6{Addr: dst.As16()}
	if z := dst.Zone(); z != "" {
		if n, err := strconv.ParseUint(z, 10, 32); err == nil {
			sa.ZoneId = uint32(n)
		} else {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return nil, fmt.Errorf("zone of %s: %w", dst, err)
			}
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa, nil
}

// sendto sends b to d. It calls sendto(2) itself: x/net's WriteTo builds a
// msghdr for control messages we never send, which costs time and stack
// depth on every waiting ping's goroutine (see worker.Handler.ProcessTask).
func (s *socket) sendto(b []byte, d dest) error {
	for {
		var serr error
		err := s.rc.Write(func(fd uintptr) bool {
			serr = unix.Sendto(int(fd), b, 0, d)
			return serr != unix.EAGAIN // a full buffer: wait until writable
		})
		if err != nil {
			return err // closed
		}
		if serr == unix.EINTR {
			continue
		}
		// ENOBUFS is back-pressure from the device queue, not a failure.
		if serr != unix.ENOBUFS {
			if serr != nil {
				return os.NewSyscallError("sendto", serr)
			}
			return nil
		}
		time.Sleep(time.Millisecond)
	}
}

// sockaddrOf returns a as a socket address without a port.
func sockaddrOf(a netip.Addr) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Addr: a.As16()}
}

// packetConn wraps the ICMP socket fd (of kind, for errors) for the net
// package, which then owns it: fd is closed.
func packetConn(fd int, kind string) (net.PacketConn, error) {
	f := os.NewFile(uintptr(fd), "icmp")
	defer f.Close() // FilePacketConn dups the descriptor
	conn, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("open %s socket: %w", kind, err)
	}
	return conn, nil
}
