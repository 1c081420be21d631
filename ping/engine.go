package ping

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

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
	// replies larger than it is lost. If zero, 8 MiB (the system may cap
	// it: on Linux, root passes net.core.rmem_max).
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

// NewEngine returns an Engine. It opens no socket yet: each set of
// socket-wide options gets its sockets, and their readers, on first use.
// Close it to release them.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if err := cfg.Mode.validate(); err != nil {
		return nil, err
	}
	if cfg.Sockets < 0 || cfg.Sockets > 64 {
		return nil, fmt.Errorf("ping engine: %d sockets per option set: want 1 to 64 (0 for 4)", cfg.Sockets)
	}
	if cfg.ReadBuffer < 0 {
		return nil, fmt.Errorf("ping engine: read buffer of %d bytes", cfg.ReadBuffer)
	}
	cfg.Sockets = cmp.Or(cfg.Sockets, 4)
	cfg.ReadBuffer = cmp.Or(cfg.ReadBuffer, 8<<20)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	e := &Engine{cfg: cfg, groups: map[sockKey]*sockGroup{}}
	e.raw.Store(cfg.Mode == SocketPrivileged)
	return e, nil
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
	g, r, err := e.prepare(ip.Unmap(), &opts)
	if err != nil {
		return Stats{}, err
	}
	defer r.release()
	if err := g.run(ctx, r); err != nil {
		return Stats{}, err
	}
	return r.stats(), nil
}

// prepare returns the sockets and the run for pinging ip with opts. It is
// apart from Ping so that Ping's frame, which stays on the stack of a
// goroutine waiting for replies, is small: the run lives on the heap.
func (e *Engine) prepare(ip netip.Addr, o *tasks.PingOptions) (*sockGroup, *pingRun, error) {
	opts := o.Normalize()
	key := sockKey{v6: ip.Is6(), ttl: opts.TTL, tos: uint8(opts.TOS), df: opts.DontFragment, iface: opts.Interface, mark: opts.Mark}
	if opts.Source != "" {
		src, err := netip.ParseAddr(opts.Source)
		if err != nil {
			return nil, nil, fmt.Errorf("ping %s: source address %q: %w", ip, opts.Source, err)
		}
		if src.Unmap().Is6() != key.v6 {
			return nil, nil, fmt.Errorf("ping %s: source address %s is of the other IP family", ip, src)
		}
		key.source = src.Unmap()
	}
	g, err := e.group(key)
	if err != nil {
		return nil, nil, fmt.Errorf("ping %s: %w", ip, err)
	}
	sa, err := sockaddr(ip)
	if err != nil {
		return nil, nil, fmt.Errorf("ping %s: %w", ip, err)
	}
	pr := probe{count: opts.Count, size: opts.Size, retries: opts.Retries, backoff: opts.Backoff, interval: opts.Interval.D(), timeout: opts.Timeout.D(), perRequest: opts.RTTs}
	return g, &pingRun{dst: ip, sa: sa, opts: pr, replies: make(chan reply, pr.count+pr.retries)}, nil
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
			e.cfg.Logger.Info("unprivileged ICMP sockets refused"+permissionHint+"; falling back to raw sockets", "error", err)
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
		if err := r.run(ctx); !errors.Is(err, errNoSequence) {
			return err
		}
	}
	return tooMany(r.dst)
}

func tooMany(ip netip.Addr) error {
	return fmt.Errorf("ping %s: too many requests in flight", ip)
}
