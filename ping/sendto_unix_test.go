//go:build unix

package ping

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSockaddr(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo interface:", err)
	}
	for _, tc := range []struct {
		addr string
		want unix.Sockaddr
	}{
		{"127.0.0.2", &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 2}}},
		{"::1", &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}},
		{"fe80::1%lo", &unix.SockaddrInet6{Addr: netip.MustParseAddr("fe80::1").As16(), ZoneId: uint32(lo.Index)}},
		{"fe80::1%7", &unix.SockaddrInet6{Addr: netip.MustParseAddr("fe80::1").As16(), ZoneId: 7}},
	} {
		got, err := sockaddr(netip.MustParseAddr(tc.addr))
		if err != nil {
			t.Errorf("%s: %v", tc.addr, err)
			continue
		}
		switch w := tc.want.(type) {
		case *unix.SockaddrInet4:
			if g, ok := got.(*unix.SockaddrInet4); !ok || g.Addr != w.Addr || g.Port != 0 {
				t.Errorf("%s: got %#v, want %#v", tc.addr, got, w)
			}
		case *unix.SockaddrInet6:
			if g, ok := got.(*unix.SockaddrInet6); !ok || g.Addr != w.Addr || g.ZoneId != w.ZoneId || g.Port != 0 {
				t.Errorf("%s: got %#v, want %#v", tc.addr, got, w)
			}
		}
	}
	if _, err := sockaddr(netip.MustParseAddr("fe80::1%no-such-device")); err == nil {
		t.Error("unknown zone: no error")
	}
}
