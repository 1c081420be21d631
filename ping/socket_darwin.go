package ping

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// macOS has unprivileged ping sockets (SOCK_DGRAM, IPPROTO_ICMP) for every
// user. It keeps the echo ID the sender chose and hands every such socket
// all echo replies: the engine matches them by ID as on raw sockets.
const (
	pingSockets    = true
	kernelSetsID   = false
	permissionHint = ""
	ipStripHeader  = 0x17 // IP_STRIPHDR, from netinet/in.h
)

var (
	errNoPingSockets = errors.New("no ping sockets")
	errNoMark        = errors.New("packet marks (SO_MARK) are Linux only")
)

// bindToInterface sends through the named interface (IP_BOUND_IF).
func bindToInterface(fd int, v6 bool, name string) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	if v6 {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_BOUND_IF, ifi.Index)
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BOUND_IF, ifi.Index)
}
