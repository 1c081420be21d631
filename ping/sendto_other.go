//go:build !unix

package ping

import (
	"errors"
	"net/netip"
)

// dest is a destination; the shared engine never opens a socket here (see
// listen), so nothing is ever sent to one.
type dest = netip.Addr

func sockaddr(dst netip.Addr) (dest, error) { return dst, nil }

var errNoSendto = errors.New("sendto: not on this system")

func (s *socket) sendto([]byte, dest) error { return errNoSendto }
