package ping

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

type socket struct {
	conn  net.PacketConn
	rc    syscall.RawConn // conn's descriptor, for sendto
	p4    *ipv4.PacketConn
	p6    *ipv6.PacketConn
	raw   bool
	v6    bool
	ownID bool   // the echo ID is ours to set (see kernelSetsID)
	id    uint16 // first echo ID, when ownID
	token [8]byte

	readErrors *atomic.Uint64 // the engine's count of failed reads

	mu       sync.Mutex
	next     uint32 // the next request's key: ID offset << 16 | sequence
	inflight map[uint32]*request
}

// request is one echo request waiting for its reply.
type request struct {
	dst  netip.Addr
	sent time.Time
	out  chan<- reply
}

type reply struct {
	rtt time.Duration
	ttl int
	key uint32 // the request's
}

var errNoSequence = errors.New("no free sequence number")

func openSocket(key sockKey, raw bool, rcvbuf int) (*socket, error) {
	conn, err := listen(key, raw, rcvbuf)
	if err != nil {
		return nil, err
	}
	s := &socket{conn: conn, raw: raw, v6: key.v6, ownID: raw || !kernelSetsID, inflight: map[uint32]*request{}}
	if _, err := rand.Read(s.token[:]); err != nil {
		conn.Close()
		return nil, err
	}
	s.id = binary.BigEndian.Uint16(s.token[:2])
	sc, ok := conn.(syscall.Conn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("ICMP socket: %T has no descriptor", conn)
	}
	if s.rc, err = sc.SyscallConn(); err != nil {
		conn.Close()
		return nil, err
	}
	if err := s.configure(key); err != nil {
		conn.Close()
		return nil, fmt.Errorf("configure ICMP socket: %w", err)
	}
	return s, nil
}

func (s *socket) configure(key sockKey) error {
	if s.v6 {
		s.p6 = ipv6.NewPacketConn(s.conn)
		if err := s.p6.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
			return err
		}
		if err := s.p6.SetHopLimit(key.ttl); err != nil {
			return fmt.Errorf("set hop limit: %w", err)
		}
		if key.tos != 0 {
			if err := s.p6.SetTrafficClass(int(key.tos)); err != nil {
				return fmt.Errorf("set traffic class: %w", err)
			}
		}
		if s.raw {
			var f ipv6.ICMPFilter
			f.SetAll(true)
			f.Accept(ipv6.ICMPTypeEchoReply)
			_ = s.p6.SetICMPFilter(&f)
		}
		return nil
	}
	s.p4 = ipv4.NewPacketConn(s.conn)
	if err := s.p4.SetControlMessage(ipv4.FlagTTL, true); err != nil {
		return err
	}
	if err := s.p4.SetTTL(key.ttl); err != nil {
		return fmt.Errorf("set TTL: %w", err)
	}
	if key.tos != 0 {
		if err := s.p4.SetTOS(int(key.tos)); err != nil {
			return fmt.Errorf("set TOS: %w", err)
		}
	}
	if s.raw {
		// Raw sockets see every ICMP packet of the host: let the kernel
		// drop all but echo replies before they reach our queue.
		var f ipv4.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv4.ICMPTypeEchoReply)
		_ = s.p4.SetICMPFilter(&f)
	}
	return nil
}

func (s *socket) close() { s.conn.Close() }

// register reserves a key (ID and sequence number) for a request to dst.
// Linux's ping sockets have one ID (the kernel's), so 65,536 keys; where
// the ID is ours (raw sockets, macOS's ping sockets) it varies as well.
func (s *socket) register(dst netip.Addr, out chan<- reply) (uint32, *request, error) {
	space := uint32(1 << 16)
	if s.ownID {
		space = 1 << 24 // 256 IDs: 16M requests in flight
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if uint32(len(s.inflight)) >= space-1 {
		return 0, nil, errNoSequence
	}
	for {
		s.next = (s.next + 1) % space
		if _, busy := s.inflight[s.next]; !busy {
			break
		}
	}
	r := &request{dst: dst, out: out}
	s.inflight[s.next] = r
	return s.next, r, nil
}

func (s *socket) release(key uint32) {
	s.mu.Lock()
	delete(s.inflight, key)
	s.mu.Unlock()
}

// send sends the echo request of key to d.
func (s *socket) send(d dest, key uint32, r *request, size int) error {
	b, err := s.echo(key, size)
	if err != nil {
		return err
	}
	s.mu.Lock()
	r.sent = time.Now()
	s.mu.Unlock()
	return s.sendto(b, d)
}

// echo returns the echo request of key with size data bytes.
func (s *socket) echo(key uint32, size int) ([]byte, error) {
	data := make([]byte, size)
	copy(data, s.token[:])
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if s.v6 {
		typ = ipv6.ICMPTypeEchoRequest
	}
	id := uint16(key>>16) + s.id
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(id), Seq: int(uint16(key)), Data: data}}
	return msg.Marshal(nil)
}

// read delivers replies until the socket is closed.
func (s *socket) read() {
	buf := make([]byte, 65536+512)
	proto := 1
	if s.v6 {
		proto = 58
	}
	for {
		var (
			n   int
			ttl int
			src net.Addr
			err error
		)
		if s.v6 {
			var cm *ipv6.ControlMessage
			n, cm, src, err = s.p6.ReadFrom(buf)
			if cm != nil {
				ttl = cm.HopLimit
			}
		} else {
			var cm *ipv4.ControlMessage
			n, cm, src, err = s.p4.ReadFrom(buf)
			if cm != nil {
				ttl = cm.TTL
			}
		}
		now := time.Now()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.readErrors.Add(1)
			continue
		}
		b := buf[:n]
		if !s.v6 {
			b = stripIPv4Header(b)
		}
		s.deliver(proto, b, src, ttl, now)
	}
}

func (s *socket) deliver(proto int, b []byte, src net.Addr, ttl int, now time.Time) {
	m, err := icmp.ParseMessage(proto, b)
	if err != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
		return
	}
	echo, ok := m.Body.(*icmp.Echo)
	if !ok || len(echo.Data) < len(s.token) || [8]byte(echo.Data[:8]) != s.token {
		return // another program's reply, or not ours
	}
	key := uint32(uint16(echo.Seq))
	if s.ownID {
		key |= uint32(uint16(echo.ID)-s.id) << 16
	}
	from := addrOf(src)
	s.mu.Lock()
	r, ok := s.inflight[key]
	if ok && r.dst == from {
		delete(s.inflight, key)
	} else {
		ok = false
	}
	var sent time.Time
	if ok {
		sent = r.sent
	}
	s.mu.Unlock()
	if !ok {
		return // late (timed out) or duplicate reply
	}
	select {
	case r.out <- reply{rtt: now.Sub(sent), ttl: ttl, key: key}:
	default: // cannot happen: out has room for every request of its ping
	}
}

func addrOf(a net.Addr) netip.Addr {
	var ip net.IP
	var zone string
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, zone = a.IP, a.Zone
	case *net.IPAddr:
		ip, zone = a.IP, a.Zone
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr.Unmap().WithZone(zone)
}

// stripIPv4Header removes the IP header that raw IPv4 sockets deliver (and
// macOS's ping sockets). A packet without one starts with an ICMP type, and
// an echo reply's (0) is never mistaken for IP version 4.
func stripIPv4Header(b []byte) []byte {
	if len(b) < 20 || b[0]>>4 != 4 {
		return b
	}
	l := int(b[0]&0x0f) << 2
	if l < 20 || l > len(b) {
		return b
	}
	return b[l:]
}

// probe is what a socket needs of the options to ping: a small value, so
