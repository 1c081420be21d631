package ping

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	probing "github.com/prometheus-community/pro-bing"

	"github.com/pingfleet/pingfleet/tasks"
)

// ProBing pings with github.com/prometheus-community/pro-bing, one
// pro-bing Pinger (and socket) per call. It runs wherever pro-bing does,
// Windows included (with raw sockets: run it as an administrator).
type ProBing struct {
	mode   SocketMode
	logger *slog.Logger
	raw    atomic.Bool // SocketAuto fell back to raw sockets
}

// ProBingConfig configures a ProBing.
type ProBingConfig struct {
	// Mode chooses ping or raw sockets; see SocketMode. On Windows,
	// pro-bing has raw sockets only, whatever the mode.
	Mode SocketMode
	// Logger logs the fallback to raw sockets. If nil, slog.Default().
	Logger *slog.Logger
}

// NewProBing returns a ProBing.
func NewProBing(cfg ProBingConfig) (*ProBing, error) {
	if err := cfg.Mode.validate(); err != nil {
		return nil, err
	}
	p := &ProBing{mode: cfg.Mode, logger: cmp.Or(cfg.Logger, slog.Default())}
	p.raw.Store(cfg.Mode == SocketPrivileged || runtime.GOOS == "windows")
	return p, nil
}

// Ping implements Pinger.
func (p *ProBing) Ping(ctx context.Context, ip netip.Addr, opts tasks.PingOptions) (Stats, error) {
	privileged := p.raw.Load()
	st, err := p.run(ctx, ip, opts, privileged)
	if err != nil && !privileged && p.mode == SocketAuto && isPermission(err) {
		if p.raw.CompareAndSwap(false, true) {
			p.logger.Info("unprivileged ICMP sockets refused"+permissionHint+"; falling back to raw sockets", "error", err)
		}
		return p.run(ctx, ip, opts, true)
	}
	return st, err
}

// Privileged reports whether p now uses raw sockets.
func (p *ProBing) Privileged() bool { return p.raw.Load() }

func (p *ProBing) run(ctx context.Context, ip netip.Addr, opts tasks.PingOptions, privileged bool) (Stats, error) {
	opts = opts.Normalize()
	if opts.Retries > 0 {
		return p.retry(ctx, ip, opts, privileged)
	}
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
	var perReq []time.Duration
	if opts.RTTs {
		perReq = make([]time.Duration, opts.Count)
		for i := range perReq {
			perReq[i] = -1
		}
	}
	pg.OnRecv = func(pkt *probing.Packet) {
		ttl = pkt.TTL
		if pkt.Seq >= 0 && pkt.Seq < len(perReq) {
			perReq[pkt.Seq] = pkt.Rtt
		}
	}

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
		RTTs:     perReq[:min(len(perReq), s.PacketsSent)],
	}, nil
}

// retry is fping's reachability mode with pro-bing: one run of one
// request per try, each waiting opts.Backoff times longer than the one
// before, until a reply comes.
func (p *ProBing) retry(ctx context.Context, ip netip.Addr, opts tasks.PingOptions, privileged bool) (Stats, error) {
	one := opts
	one.Count, one.Retries = 1, 0
	var total Stats
	for i := 0; i <= opts.Retries; i++ {
		st, err := p.run(ctx, ip, one, privileged)
		if err != nil {
			if i == 0 {
				return Stats{}, err
			}
			break
		}
		st.Sent += total.Sent
		st.RTTs = append(total.RTTs, st.RTTs...)
		total = st
		if st.Received > 0 {
			break
		}
		one.Timeout = tasks.Duration(float64(one.Timeout) * opts.Backoff)
	}
	return total, nil
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
