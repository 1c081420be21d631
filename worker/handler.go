package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/ping"
	"github.com/pingfleet/pingfleet/tasks"
)

// DefaultDNSTimeout bounds the resolution of one host name.
const DefaultDNSTimeout = 2 * time.Second

// Recorder stores a host's result; *aggregator.Aggregator is one.
type Recorder interface {
	Record(ctx context.Context, batchID string, r aggregator.Result) (aggregator.Outcome, error)
}

// Resolver looks up host names, and the names of addresses for batches
// that ask for them (fping -n); *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// HandlerConfig configures a Handler.
type HandlerConfig struct {
	// Recorder stores results. Required.
	Recorder Recorder
	// Pinger pings. Required.
	Pinger Pinger
	// Resolver resolves host names. If nil, net.DefaultResolver.
	Resolver Resolver
	// DNSTimeout bounds one resolution. If zero, DefaultDNSTimeout.
	DNSTimeout time.Duration
	// WorkerID names this worker in results. If empty, "worker".
	WorkerID string
	// Logger logs each task at debug level. If nil, slog.Default().
	Logger *slog.Logger
	// Cancelled, if set, tells whether a batch was cancelled: its tasks
	// are then dropped without pinging.
	Cancelled func(batchID string) bool
	// Metrics, if set, counts tasks, pings, RTTs and failures.
	Metrics *Metrics
	// Limiter, if set, paces pings: a fleet-wide rate and the batch's own
	// (PingOptions.BatchRate). *ratelimit.Limiter is one.
	Limiter Limiter
	// Finished, if set, is called when this worker recorded a batch's last
	// result (a notify.Notifier hands the callback over). An error is only
	// logged: the janitor does it later.
	Finished func(ctx context.Context, batchID string) error
	// Policy refuses addresses after resolution: a denied host gets an
	// error result and no ping. The zero Policy denies tasks.DefaultDeny,
	// so a name that resolves to a multicast or broadcast address is
	// never pinged, whatever let it through.
	Policy tasks.Policy
}

// Limiter makes a caller wait until n pings of batch batchID may be sent.
type Limiter interface {
	Wait(ctx context.Context, batchID string, batchRate, n int) error
}

// Handler runs TypePingHost tasks: resolve, ping, record.
type Handler struct {
	rec        Recorder
	pinger     Pinger
	resolver   Resolver
	dnsTimeout time.Duration
	workerID   string
	logger     *slog.Logger
	cancelled  func(string) bool
	finished   func(context.Context, string) error
	limiter    Limiter
	metrics    *Metrics
	policy     tasks.Policy
	payloads   tasks.Decoder // remembers the options of the batches it runs
	// ratedAtFetch: the worker grants a lane's task its pings (its
	// batch's, its tenant's and the fleet's rates) before it fetches it
	// (Config.Rates); only tasks of the static queues wait here.
	ratedAtFetch bool
}

// NewHandler returns a Handler for cfg.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Recorder == nil || cfg.Pinger == nil {
		return nil, errors.New("worker: HandlerConfig.Recorder and Pinger are required")
	}
	var resolver Resolver = net.DefaultResolver
	if cfg.Resolver != nil {
		resolver = cfg.Resolver
	}
	return &Handler{
		rec:        cfg.Recorder,
		pinger:     cfg.Pinger,
		resolver:   resolver,
		dnsTimeout: cmp.Or(cfg.DNSTimeout, DefaultDNSTimeout),
		workerID:   cmp.Or(cfg.WorkerID, "worker"),
		logger:     cmp.Or(cfg.Logger, slog.Default()),
		cancelled:  cfg.Cancelled,
		limiter:    cfg.Limiter,
		metrics:    cfg.Metrics,
		finished:   cfg.Finished,
		policy:     cfg.Policy,
	}, nil
}

// ProcessTask implements asynq.Handler. An unreachable or unresolvable host
// is a result, recorded like any other; only a failure to record (Redis) or
// an interrupted run is an error, and asynq retries it. A malformed payload
// is never retried.
//
// Stack size is memory here: a worker with 10,000 pings in flight has
// 10,000 of these goroutines waiting for replies (and as many of asynq's),
// each keeping the largest stack it has needed so far. The work before and
// after the ping runs in functions of their own, the payload is decoded
// elsewhere (decode) and the engine keeps its frames small, so the stack
// during the wait fits in 4 KiB, not 8 (TestBudgetStackWhileWaiting).
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) (err error) {
	start := h.metrics.start()
	outcome := OutcomeError
	defer func() {
		if err != nil && !errors.Is(err, asynq.SkipRetry) {
			outcome = OutcomeRetried
		}
		h.metrics.finish(start, outcome)
	}()
	p, err := h.prepare(ctx, t.Payload())
	if err != nil {
		return err
	}
	if p == nil {
		outcome = OutcomeCancelled
		return nil
	}
	r, notes := h.ping(ctx, p)
	if err := ctx.Err(); err != nil {
		// Shut down or timed out mid-ping: the result is partial, so let
		// asynq run the task again rather than record it.
		return fmt.Errorf("ping %s: %w", p.Host, err)
	}
	outcome, err = h.record(ctx, p, r, notes)
	return err
}

// prepare decodes a task's payload and waits for the rate limits. It
// returns nil and no error for a task of a cancelled batch.
func (h *Handler) prepare(ctx context.Context, payload []byte) (*tasks.PingPayload, error) {
	p, err := h.decode(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if h.cancelled != nil && h.cancelled(p.BatchID) {
		h.logger.Debug("task of a cancelled batch dropped", "batch", p.BatchID, "host", p.Host)
		return nil, nil
	}
	if q, _ := asynq.GetQueueName(ctx); h.limiter != nil && (!h.ratedAtFetch || !tasks.IsLaneQueue(q)) {
		// (A lane's task had its pings granted before it was fetched.)
		if err := h.limiter.Wait(ctx, p.BatchID, p.Options.BatchRate, p.Options.Count); err != nil {
			return nil, fmt.Errorf("rate limit: %w", err)
		}
	}
	return &p, nil
}

// decode decodes a payload. Payloads of a batch whose options h.payloads
// remembers are decoded in place; others on a goroutine of their own.
// encoding/json needs more than 3 KiB of stack for them; on the task's
// goroutine that would double the stack the goroutine then keeps while it
// waits for replies (8 KiB instead of 4 KiB). The short-lived goroutine
// grows, ends, and its stack goes back to the runtime's cache.
func (h *Handler) decode(payload []byte) (p tasks.PingPayload, err error) {
	if p, err, ok := h.payloads.Known(payload); ok {
		return p, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p, err = h.payloads.Decode(payload)
	}()
	<-done
	return p, err
}

// record stores the result of p and returns the task's outcome.
func (h *Handler) record(ctx context.Context, p *tasks.PingPayload, r *aggregator.Result, notes pingNotes) (string, error) {
	h.metrics.result(*r, notes)
	retried, _ := asynq.GetRetryCount(ctx)
	r.Attempts = retried + 1
	out, err := h.rec.Record(ctx, p.BatchID, *r)
	if errors.Is(err, aggregator.ErrNotFound) {
		// The batch expired or was never created: nothing will ever
		// accept this result.
		return OutcomeError, fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if err != nil {
		return OutcomeError, err
	}
	outcome := string(r.Status)
	if out == aggregator.Duplicate {
		outcome = OutcomeDuplicate
	}
	taskID, _ := asynq.GetTaskID(ctx)
	h.logger.Debug("host pinged", "batch", p.BatchID, "host", p.Host, "task", taskID, "status", r.Status, "duplicate", out == aggregator.Duplicate)
	if out == aggregator.Completed && h.finished != nil {
		if err := h.finished(ctx, p.BatchID); err != nil {
			h.logger.Warn("batch finished, callback not handed over yet (the janitor will)", "batch", p.BatchID, "error", err)
		}
	}
	return outcome, nil
}

// pingNotes is what a result does not say but metrics count.
type pingNotes struct {
	resolveFailed bool
	denied        bool
	refused       int // requests the local network stack refused to send
}

// ping resolves and pings p.Host and returns its result.
func (h *Handler) ping(ctx context.Context, p *tasks.PingPayload) (*aggregator.Result, pingNotes) {
	r := &aggregator.Result{Host: p.Host, Worker: h.workerID, Started: time.Now().UTC()}
	ip, notes, ok := h.target(ctx, p, r)
	if !ok {
		return r, notes
	}
	st, err := h.pinger.Ping(ctx, ip, p.Options)
	notes = fill(r, &st, err)
	if p.Options.Names {
		r.Name = h.reverseName(ctx, ip)
	}
	return r, notes
}

// reverseName returns the name of ip by reverse DNS within the DNS
// timeout, without its final dot, or "" when there is none: as in fping -n,
// an address without a name is shown as itself. A name that is not a
// plain DNS name (letters, digits, '-', '_', '.') is dropped: results store
// it in a text record (see aggregator's codec).
func (h *Handler) reverseName(ctx context.Context, ip netip.Addr) string {
	ctx, cancel := context.WithTimeout(ctx, h.dnsTimeout)
	defer cancel()
	names, err := h.resolver.LookupAddr(ctx, ip.String())
	if err != nil || len(names) == 0 {
		return ""
	}
	name := strings.TrimSuffix(names[0], ".")
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return ""
		}
	}
	if len(name) > 253 {
		return ""
	}
	return name
}

// target returns the address to ping for p, or fills r with the error
// that stops it.
func (h *Handler) target(ctx context.Context, p *tasks.PingPayload, r *aggregator.Result) (netip.Addr, pingNotes, bool) {
	ip, err := h.resolve(ctx, p.Host, p.Options.Network)
	if err != nil {
		r.Status, r.Error = aggregator.StatusError, err.Error()
		r.Finished = time.Now().UTC()
		return ip, pingNotes{resolveFailed: true}, false
	}
	r.IP = ip.String()
	if err := h.policy.CheckAddr(ip); err != nil {
		r.Status, r.Error = aggregator.StatusError, err.Error()
		r.Finished = time.Now().UTC()
		return ip, pingNotes{denied: true}, false
	}
	return ip, pingNotes{}, true
}

// fill completes r from the outcome of a ping.
func fill(r *aggregator.Result, st *ping.Stats, err error) pingNotes {
	r.Finished = time.Now().UTC()
	if err != nil {
		r.Status, r.Error = aggregator.StatusError, err.Error()
		return pingNotes{}
	}
	r.Sent, r.Received, r.ReplyTTL = st.Sent, st.Received, st.TTL
	if st.RTTs != nil {
		r.RTTs = make([]float64, len(st.RTTs))
		for i, d := range st.RTTs {
			r.RTTs[i] = -1
			if d >= 0 {
				r.RTTs[i] = ms(d)
			}
		}
	}
	if st.Refused > 0 {
		// Lost, not failed, but the user should know why.
		r.Error = fmt.Sprintf("%d of %d requests not sent: %v", st.Refused, st.Sent, st.RefusedErr)
	}
	r.LossPct = aggregator.LossPct(st.Sent, st.Received)
	r.Status = aggregator.StatusDown
	if st.Received > 0 {
		r.Status = aggregator.StatusUp
		r.RTTMin, r.RTTAvg, r.RTTMax, r.RTTStdev = ms(st.Min), ms(st.Avg), ms(st.Max), ms(st.Stdev)
	}
	return pingNotes{refused: st.Refused}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// resolve returns the address to ping for host: host itself when it is an IP
// literal, otherwise the first address of the wanted family, looked up
// within the DNS timeout.
func (h *Handler) resolve(ctx context.Context, host, network string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if (network == tasks.NetworkIP4 && !ip.Unmap().Is4()) || (network == tasks.NetworkIP6 && !ip.Is6()) {
			return netip.Addr{}, fmt.Errorf("resolve %s: not an %s address", host, network)
		}
		return ip, nil
	}
	if n := strings.TrimSuffix(strings.ToLower(host), "."); n == "invalid" || strings.HasSuffix(n, ".invalid") {
		// RFC 6761 reserves .invalid and asks resolvers to fail at once,
		// without asking a DNS server.
		return netip.Addr{}, fmt.Errorf("resolve %s: no such host (.invalid is reserved, RFC 6761)", host)
	}
	ctx, cancel := context.WithTimeout(ctx, h.dnsTimeout)
	defer cancel()
	addrs, err := h.resolver.LookupNetIP(ctx, network, host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	var v6 netip.Addr
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
		if !v6.IsValid() {
			v6 = a
		}
	}
	if !v6.IsValid() {
		return netip.Addr{}, fmt.Errorf("resolve %s: no address", host)
	}
	return v6, nil
}
