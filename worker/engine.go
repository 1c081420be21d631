package worker

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/pingfleet/pingfleet/tasks"
)

// Engine is the default Pinger: every ping of the process shares a few ICMP
// sockets, one reader goroutine per socket hands each reply to the ping
// that waits for it (matched by sequence number, source address and a
// per-socket token in the payload). This is how fping works, and it is what
// makes 10,000 concurrent pings cheap: with one socket per ping (pro-bing),
// each raw socket receives a copy of every ICMP packet of the host, so the
// cost grows with the square of the pings in flight, and every idle socket
// costs a goroutine waking up to poll.
//
// Sockets are opened on first use, one set per combination of the options
// that are socket-wide (family, TTL, TOS, don't-fragment, source, interface,
// mark).
type Engine struct {
	cfg        EngineConfig
	readErrors atomic.Uint64
	raw        atomic.Bool // SocketAuto fell back to raw sockets
	mu         sync.Mutex
	groups     map[sockKey]*sockGroup
	closed     bool
	wg         sync.WaitGroup
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	// Mode chooses ping or raw sockets; see SocketMode.
	Mode SocketMode
	// Sockets is the number of ping sockets per option set. Each carries at
	// most 65,536 requests in flight (the sequence space; the kernel sets
	// the ID). If zero, 4. Raw sockets each receive a copy of every ICMP
	// reply, so in raw mode there is one socket, whose requests vary the ID
	// too.
	Sockets int
	// ReadBuffer is each socket's receive buffer in bytes: a burst of
	// replies larger than it is lost. If zero, 4 MiB.
	ReadBuffer int
	// Logger logs the fallback to raw sockets. If nil, slog.Default().
	Logger *slog.Logger
}

// sockKey is what sockets are shared by: the options that are set on a
// socket rather than on each packet.
type sockKey struct {
	v6     bool
	ttl    int
	tos    uint8
	df     bool
	iface  string
	mark   uint32
	source netip.Addr
}

// NewEngine returns an Engine. Close it to release its sockets.
func NewEngine(cfg EngineConfig) *Engine {
	if cfg.Sockets <= 0 {
		cfg.Sockets = 4
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = 8 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Engine{cfg: cfg, groups: map[sockKey]*sockGroup{}}
	e.raw.Store(cfg.Mode == SocketPrivileged)
	return e
}

// Privileged reports whether e uses raw sockets.
func (e *Engine) Privileged() bool { return e.raw.Load() }

// ReadErrors is the number of failed reads on e's sockets so far.
func (e *Engine) ReadErrors() uint64 { return e.readErrors.Load() }

// Close closes every socket and waits for the readers to stop. Pings in
// flight end with an error.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	groups := e.groups
	e.groups = map[sockKey]*sockGroup{}
	e.mu.Unlock()
	for _, g := range groups {
		for _, s := range g.socks {
			s.close()
		}
	}
	e.wg.Wait()
	return nil
}

// ErrClosed is returned by Ping after Close.
var ErrClosed = errors.New("ping engine closed")

// Ping implements Pinger.
func (e *Engine) Ping(ctx context.Context, ip netip.Addr, opts tasks.PingOptions) (Stats, error) {
	ip = ip.Unmap()
	g, pr, err := e.prepare(ip, &opts)
	if err != nil {
		return Stats{}, err
	}
	sa, err := sockaddr(ip)
	if err != nil {
		return Stats{}, fmt.Errorf("ping %s: %w", ip, err)
	}
	r := &pingRun{dst: ip, sa: sa, opts: pr, replies: make(chan reply, pr.count)}
	defer r.release()
	if err := g.run(ctx, r); err != nil {
		return Stats{}, err
	}
	return r.stats(), nil
}

// prepare returns the sockets and the probe for pinging ip with opts. It is
// apart from Ping so that Ping's frame, which stays on the stack of a
// goroutine waiting for replies, is small.
func (e *Engine) prepare(ip netip.Addr, o *tasks.PingOptions) (*sockGroup, probe, error) {
	opts := o.Normalize()
	key := sockKey{v6: ip.Is6(), ttl: opts.TTL, tos: uint8(opts.TOS), df: opts.DontFragment, iface: opts.Interface, mark: opts.Mark}
	if opts.Source != "" {
		src, err := netip.ParseAddr(opts.Source)
		if err != nil {
			return nil, probe{}, fmt.Errorf("ping %s: source address %q: %w", ip, opts.Source, err)
		}
		if src.Unmap().Is6() != key.v6 {
			return nil, probe{}, fmt.Errorf("ping %s: source address %s is of the other IP family", ip, src)
		}
		key.source = src.Unmap()
	}
	g, err := e.group(key)
	if err != nil {
		return nil, probe{}, fmt.Errorf("ping %s: %w", ip, err)
	}
	return g, probe{count: opts.Count, size: opts.Size, interval: opts.Interval.D(), timeout: opts.Timeout.D()}, nil
}

// group returns the sockets for key, opening them on first use.
func (e *Engine) group(key sockKey) (*sockGroup, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if g := e.groups[key]; g != nil {
		return g, nil
	}
	g := &sockGroup{}
	n := e.cfg.Sockets
	if e.raw.Load() {
		n = 1
	}
	for i := range n {
		s, err := e.open(key)
		if err == nil && s.raw && i > 0 {
			s.close() // fell back to raw while opening: one is enough
			break
		}
		if err != nil {
			for _, s := range g.socks {
				s.close()
			}
			return nil, err
		}
		g.socks = append(g.socks, s)
	}
	for _, s := range g.socks {
		s.readErrors = &e.readErrors
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			s.read()
		}()
	}
	e.groups[key] = g
	return g, nil
}

// open opens one socket: a ping socket unless raw sockets are wanted or
// the kernel refused ping sockets before.
func (e *Engine) open(key sockKey) (*socket, error) {
	if !e.raw.Load() {
		s, err := openSocket(key, false, e.cfg.ReadBuffer)
		if err == nil || e.cfg.Mode != SocketAuto || !isPermission(err) {
			return s, err
		}
		if e.raw.CompareAndSwap(false, true) {
			e.cfg.Logger.Warn("unprivileged ICMP sockets refused (net.ipv4.ping_group_range); falling back to raw sockets", "error", err)
		}
	}
	return openSocket(key, true, e.cfg.ReadBuffer)
}

// sockGroup spreads pings over its sockets.
type sockGroup struct {
	socks []*socket
	next  atomic.Uint32
}

// run runs r on one of g's sockets: the next one, or the one after if it
// has no free sequence number.
func (g *sockGroup) run(ctx context.Context, r *pingRun) error {
	start := int(g.next.Add(1))
	for i := range g.socks {
		r.s = g.socks[(start+i)%len(g.socks)]
		// A run that found no sequence number has registered nothing.
		if err := r.run(ctx); err != errNoSequence {
			return err
		}
	}
	return tooMany(r.dst)
}

func tooMany(ip netip.Addr) error {
	return fmt.Errorf("ping %s: too many requests in flight", ip)
}

// socket is one ICMP socket and the requests in flight on it.
type socket struct {
	conn  net.PacketConn
	rc    syscall.RawConn // conn's descriptor, for sendto
	p4    *ipv4.PacketConn
	p6    *ipv6.PacketConn
	raw   bool
	v6    bool
	id    uint16 // first echo ID (raw sockets only: ping sockets get theirs from the kernel)
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
}

var errNoSequence = errors.New("no free sequence number")

func openSocket(key sockKey, raw bool, rcvbuf int) (*socket, error) {
	conn, err := listen(key, raw, rcvbuf)
	if err != nil {
		return nil, err
	}
	s := &socket{conn: conn, raw: raw, v6: key.v6, inflight: map[uint32]*request{}}
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
// Ping sockets have one ID (the kernel's), so 65,536 keys; raw sockets
// vary the ID as well.
func (s *socket) register(dst netip.Addr, out chan<- reply) (uint32, *request, error) {
	space := uint32(1 << 16)
	if s.raw {
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

// send sends the echo request of key to sa. It calls sendto(2) itself:
// x/net's WriteTo builds a msghdr for control messages we never send, which
// costs time and stack depth on every task's goroutine (see
// Handler.ProcessTask).
func (s *socket) send(sa unix.Sockaddr, key uint32, r *request, size int) error {
	b, err := s.echo(key, size)
	if err != nil {
		return err
	}
	s.mu.Lock()
	r.sent = time.Now()
	s.mu.Unlock()
	for {
		var serr error
		err := s.rc.Write(func(fd uintptr) bool {
			serr = unix.Sendto(int(fd), b, 0, sa)
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

// sockaddr returns dst as a socket address; an IPv6 zone names the
// interface (or is its index).
func sockaddr(dst netip.Addr) (unix.Sockaddr, error) {
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
		if s.raw && !s.v6 {
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
	if s.raw {
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
	case r.out <- reply{rtt: now.Sub(sent), ttl: ttl}:
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

// stripIPv4Header removes the IP header raw IPv4 sockets deliver.
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
// that the frames of every goroutine waiting for replies stay small.
type probe struct {
	count, size       int
	interval, timeout time.Duration
}

// pingRun is one host's ping: opts.count requests to dst, opts.interval
// apart, and the replies that arrive within opts.timeout of their request.
// It lives on the heap and its methods have small frames, so the goroutine
// waiting in it keeps a small stack (see Handler.ProcessTask).
type pingRun struct {
	s        *socket
	dst      netip.Addr
	sa       unix.Sockaddr // dst's, resolved once (a zone is a lookup)
	opts     probe
	replies  chan reply
	timer    *time.Timer
	seqs     []uint32
	rtts     []time.Duration
	st       Stats
	lastSent time.Time
	firstErr error
}

func (r *pingRun) release() {
	for _, q := range r.seqs {
		r.s.release(q)
	}
	if r.timer != nil {
		r.timer.Stop()
	}
}

func (r *pingRun) run(ctx context.Context) error {
	start := time.Now()
	for i := 0; i < r.opts.count; i++ {
		if i > 0 {
			if err := r.wait(ctx, start.Add(time.Duration(i)*r.opts.interval), false); err != nil {
				return err
			}
		}
		if err := r.send(); err != nil {
			if i == 0 {
				return err
			}
			break
		}
	}
	if r.st.Sent == 0 {
		return fmt.Errorf("send to %s: %w", r.dst, r.firstErr)
	}
	// Wait for the replies still due, each up to Timeout after its request
	// (the last one sets the bound).
	return r.wait(ctx, r.lastSent.Add(r.opts.timeout), true)
}

// send sends the next request. Only a failure to register one is an
// error: a request the network refuses counts as sent and lost, and one
// that failed otherwise is not counted.
func (r *pingRun) send() error {
	seq, req, err := r.s.register(r.dst, r.replies)
	if err != nil {
		return err
	}
	if err := r.s.send(r.sa, seq, req, r.opts.size); err != nil {
		r.s.release(seq)
		if refused(err) {
			r.st.Sent++
			if r.st.Refused++; r.st.RefusedErr == nil {
				r.st.RefusedErr = err
			}
		} else if r.firstErr == nil {
			r.firstErr = err
		}
		return nil
	}
	r.seqs = append(r.seqs, seq)
	r.st.Sent++
	r.lastSent = time.Now()
	return nil
}

// wait collects replies until deadline, or, if all is set, until every
// request sent has its reply.
func (r *pingRun) wait(ctx context.Context, deadline time.Time, all bool) error {
	if all && len(r.rtts) >= r.st.Sent-r.st.Refused {
		return nil
	}
	if r.timer == nil {
		r.timer = time.NewTimer(time.Until(deadline))
	} else {
		r.timer.Reset(time.Until(deadline))
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case rep := <-r.replies:
			r.rtts = append(r.rtts, rep.rtt)
			r.st.TTL = rep.ttl
			if all && len(r.rtts) >= r.st.Sent-r.st.Refused {
				return nil
			}
		case <-r.timer.C:
			return nil
		}
	}
}

// stats returns the figures of a finished run. Replies that came later than
// Timeout after their own request are lost.
func (r *pingRun) stats() Stats {
	st := r.st
	kept := r.rtts[:0]
	for _, d := range r.rtts {
		if d <= r.opts.timeout {
			kept = append(kept, d)
		}
	}
	st.Received = len(kept)
	if st.Received == 0 {
		st.TTL = 0
	}
	st.Min, st.Avg, st.Max, st.Stdev = rttStats(kept)
	return st
}

// rttStats returns min, mean, max and population standard deviation.
func rttStats(rtts []time.Duration) (lo, mean, hi, sd time.Duration) {
	if len(rtts) == 0 {
		return 0, 0, 0, 0
	}
	lo, hi = rtts[0], rtts[0]
	var sum float64
	for _, r := range rtts {
		lo, hi = min(lo, r), max(hi, r)
		sum += float64(r)
	}
	m := sum / float64(len(rtts))
	var sq float64
	for _, r := range rtts {
		d := float64(r) - m
		sq += d * d
	}
	return lo, time.Duration(m), hi, time.Duration(math.Sqrt(sq / float64(len(rtts))))
}

var _ Pinger = (*Engine)(nil)
