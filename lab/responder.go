package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// replyTTL is the IP TTL of every reply, as a Linux host's.
const replyTTL = 64

// Stats counts what a Responder did. Every echo request to the lab is
// either replied, dropped, dead, or still waiting for its delay (or was
// discarded when the responder stopped).
type Stats struct {
	// Requests is the number of ICMP echo requests to lab addresses read.
	Requests uint64
	// Replies is the number of echo replies written.
	Replies uint64
	// Dropped is the number of requests dropped by a Range's Loss.
	Dropped uint64
	// Dead is the number of requests to Dead ranges.
	Dead uint64
	// Ignored is the number of other packets read: not IPv4 ICMP echo
	// requests to the lab, fragments, or with a bad checksum.
	Ignored uint64
	// WriteErrors is the number of replies the device refused.
	WriteErrors uint64
}

// Responder answers ICMP echo requests read from a TUN-like device (one
// IPv4 packet per Read and Write, no packet information header) the way
// its Ranges say. Replies wait for their delay in one min-heap served by
// one goroutine, which is the only writer of the device.
type Responder struct {
	// levels holds the ranges by prefix length, longest first, for
	// longest-prefix matching with one map lookup per distinct length.
	levels []level
	// rng decides loss and jitter; only the reading goroutine uses it.
	rng *rand.Rand

	requests, replies, dropped, dead, ignored, writeErrors atomic.Uint64
}

type level struct {
	bits   int
	ranges map[netip.Addr]*Range // by masked prefix address
}

// NewResponder returns a Responder for cfg.Ranges (DefaultRanges() if nil)
// and cfg.Seed. Other fields of cfg are not used.
func NewResponder(cfg Config) (*Responder, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &Responder{rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	for _, rg := range cfg.Ranges {
		i := slices.IndexFunc(r.levels, func(l level) bool { return l.bits == rg.Prefix.Bits() })
		if i < 0 {
			r.levels = append(r.levels, level{bits: rg.Prefix.Bits(), ranges: map[netip.Addr]*Range{}})
			i = len(r.levels) - 1
		}
		r.levels[i].ranges[rg.Prefix.Addr()] = &rg
	}
	slices.SortFunc(r.levels, func(a, b level) int { return b.bits - a.bits })
	return r, nil
}

// Stats returns the counters so far. It is safe to call at any time.
func (r *Responder) Stats() Stats {
	return Stats{
		Requests:    r.requests.Load(),
		Replies:     r.replies.Load(),
		Dropped:     r.dropped.Load(),
		Dead:        r.dead.Load(),
		Ignored:     r.ignored.Load(),
		WriteErrors: r.writeErrors.Load(),
	}
}

// match returns the most specific range that holds addr, or nil.
func (r *Responder) match(addr netip.Addr) *Range {
	for _, l := range r.levels {
		p, _ := addr.Prefix(l.bits)
		if rg, ok := l.ranges[p.Addr()]; ok {
			return rg
		}
	}
	return nil
}

// Serve reads packets from dev and writes the replies until ctx is done or
// reading fails. dev is typically the *os.File of a TUN device; if it has a
// SetReadDeadline method, Serve uses it to stop when ctx is done, else it
// stops at the first failed Read (close dev to stop it). Replies still
// waiting for their delay are discarded. Serve returns nil when stopped by
// ctx. It must not be called twice at the same time.
func (r *Responder) Serve(ctx context.Context, dev io.ReadWriter) error {
	ctx, cancel := context.WithCancel(ctx)
	s := newScheduler()
	var wg sync.WaitGroup
	wg.Go(func() { s.run(ctx, dev, r) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	if d, ok := dev.(interface{ SetReadDeadline(time.Time) error }); ok {
		stop := context.AfterFunc(ctx, func() { _ = d.SetReadDeadline(time.Now()) })
		defer stop()
	}

	buf := make([]byte, 1<<16)
	for {
		n, err := dev.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		if reply, delay, ok := r.handle(buf[:n]); ok {
			s.push(delay, reply)
		}
	}
}

// handle answers one packet read from the device. It returns a new reply
// packet and how long to wait before sending it, or ok == false when the
// packet gets no answer (ignored, dropped or dead). It is not safe for
// concurrent use: it draws from r.rng.
func (r *Responder) handle(pkt []byte) (reply []byte, delay time.Duration, ok bool) {
	icmp, ok := echoRequest(pkt)
	if !ok {
		r.ignored.Add(1)
		return nil, 0, false
	}
	dst := netip.AddrFrom4([4]byte(pkt[16:20]))
	if !network.Contains(dst) {
		r.ignored.Add(1)
		return nil, 0, false
	}
	r.requests.Add(1)
	if rg := r.match(dst); rg != nil {
		switch {
		case rg.Dead:
			r.dead.Add(1)
			return nil, 0, false
		case rg.Loss > 0 && r.rng.Float64() < rg.Loss:
			r.dropped.Add(1)
			return nil, 0, false
		}
		delay = rg.Delay
		if rg.Jitter > 0 {
			delay += time.Duration((r.rng.Float64()*2 - 1) * float64(rg.Jitter))
			delay = max(delay, 0)
		}
	}
	return echoReply(pkt, icmp), delay, true
}

// echoRequest returns the ICMP message of pkt if pkt is a whole IPv4 ICMP
// echo request with a valid ICMP checksum.
func echoRequest(pkt []byte) (icmp []byte, ok bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return nil, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	switch {
	case ihl < 20 || total < ihl+8 || total > len(pkt):
		return nil, false
	case pkt[9] != 1: // not ICMP
		return nil, false
	case binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0: // a fragment: MF or an offset
		return nil, false
	}
	icmp = pkt[ihl:total]
	if icmp[0] != 8 || icmp[1] != 0 || checksum(icmp) != 0 {
		return nil, false
	}
	return icmp, true
}

// echoReply builds the reply to the echo request pkt, whose ICMP message is
// icmp: addresses swapped, no IP options, same identifier, sequence number
// and data.
func echoReply(pkt, icmp []byte) []byte {
	reply := make([]byte, 20+len(icmp))
	ip := reply[:20]
	ip[0] = 0x45                // version 4, 20-byte header
	ip[1] = pkt[1]              // DSCP/ECN as requested
	copy(ip[4:6], pkt[4:6])     // IP ID: any value will do for an unfragmented packet
	ip[8] = replyTTL            // flags and fragment offset stay 0
	ip[9] = 1                   // ICMP
	copy(ip[12:16], pkt[16:20]) // the host answering is the one asked
	copy(ip[16:20], pkt[12:16])
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(reply)))
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip))

	m := reply[20:]
	copy(m, icmp)
	m[0], m[1], m[2], m[3] = 0, 0, 0, 0 // echo reply, code 0, checksum to compute
	binary.BigEndian.PutUint16(m[2:4], checksum(m))
	return reply
}

// checksum is the Internet checksum (RFC 1071) of b. Over data that holds
// its own correct checksum, it is 0.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
