package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	probing "github.com/prometheus-community/pro-bing"

	"github.com/pingfleet/pingfleet/tasks"
)

// Pinger sends echo requests to one address and reports what came back. An
// address that does not answer is not an error: Stats say so. Errors are
// for pings that could not be sent at all.
type Pinger interface {
	Ping(ctx context.Context, ip netip.Addr, opts tasks.PingOptions) (Stats, error)
}

// Stats are the figures of one ping run.
type Stats struct {
	Sent, Received       int
	Min, Avg, Max, Stdev time.Duration
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
	// SocketUnprivileged uses only "ping" sockets. They need the process's
	// group inside net.ipv4.ping_group_range.
	SocketUnprivileged
	// SocketPrivileged uses only raw sockets. They need root or CAP_NET_RAW.
	SocketPrivileged
)

// ProBing is the Pinger built on github.com/prometheus-community/pro-bing,
// one pro-bing Pinger (and socket) per call.
type ProBing struct {
	mode   SocketMode
	logger *slog.Logger
	raw    atomic.Bool // SocketAuto fell back to raw sockets
}

// NewProBing returns a ProBing using sockets of the given mode.
func NewProBing(mode SocketMode, logger *slog.Logger) *ProBing {
	p := &ProBing{mode: mode, logger: logger}
	p.raw.Store(mode == SocketPrivileged)
	return p
}

// Ping implements Pinger.
func (p *ProBing) Ping(ctx context.Context, ip netip.Addr, opts tasks.PingOptions) (Stats, error) {
	privileged := p.raw.Load()
	st, err := p.run(ctx, ip, opts, privileged)
	if err != nil && !privileged && p.mode == SocketAuto && isPermission(err) {
		if p.raw.CompareAndSwap(false, true) {
			p.logger.Warn("unprivileged ICMP sockets refused (net.ipv4.ping_group_range); falling back to raw sockets", "error", err)
		}
		return p.run(ctx, ip, opts, true)
	}
	return st, err
}

// Privileged reports whether p now uses raw sockets.
func (p *ProBing) Privileged() bool { return p.raw.Load() }

func isPermission(err error) bool {
	return errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}

func (p *ProBing) run(ctx context.Context, ip netip.Addr, opts tasks.PingOptions, privileged bool) (Stats, error) {
	opts = opts.Normalize()
	pg := probing.New(ip.String())
	pg.SetIPAddr(&net.IPAddr{IP: ip.AsSlice(), Zone: ip.Zone()})
	pg.SetPrivileged(privileged)
	pg.Count = opts.Count
	// Neither may be zero: pro-bing would panic in its own goroutine.
	pg.Interval = max(opts.Interval.D(), tasks.MinInterval)
	pg.Timeout = max(opts.RunTime(), time.Millisecond)
	pg.Size = opts.Size
	pg.TTL = opts.TTL
	pg.RecordRtts = false
	pg.RecordTTLs = false
	logs := &runLog{}
	pg.SetLogger(logs)
	var ttl int
	pg.OnRecv = func(pkt *probing.Packet) { ttl = pkt.TTL }

	if err := pg.RunWithContext(ctx); err != nil {
		return Stats{}, fmt.Errorf("ping %s: %w", ip, err)
	}
	s := pg.Statistics()
	if s.PacketsSent == 0 {
		if msg := logs.first(); msg != "" {
			return Stats{}, fmt.Errorf("ping %s: %s", ip, msg)
		}
		return Stats{}, fmt.Errorf("ping %s: no request could be sent", ip)
	}
	return Stats{
		Sent:     s.PacketsSent,
		Received: s.PacketsRecv,
		Min:      s.MinRtt,
		Avg:      s.AvgRtt,
		Max:      s.MaxRtt,
		Stdev:    s.StdDevRtt,
		TTL:      ttl,
	}, nil
}

// runLog keeps the first error pro-bing logs during one run (a send that
// failed, say), so a run that sent nothing can tell why.
type runLog struct {
	mu  sync.Mutex
	msg string
}

func (l *runLog) keep(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.msg == "" {
		l.msg = fmt.Sprintf(format, v...)
	}
}

func (l *runLog) first() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msg
}

func (l *runLog) Fatalf(format string, v ...any) { l.keep(format, v...) }
func (l *runLog) Errorf(format string, v ...any) { l.keep(format, v...) }
func (l *runLog) Warnf(string, ...any)           {}
func (l *runLog) Infof(string, ...any)           {}
func (l *runLog) Debugf(string, ...any)          {}
