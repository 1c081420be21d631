package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pingfleet/pingfleet/tasks"
)

// A task being processed has a lease in Redis that its worker extends
// every 5 s by 30 s (asynq's heartbeat). When the worker dies, freezes or
// loses Redis, the lease runs out and the task must be handed to another
// worker. asynq's recoverer does it, but only for leases expired 30 s
// ago, and looks once a minute: a task waited 60 to 120 s (and every one
// of a worker's asynq servers (64 by default) runs a recoverer, which race and log
// "NOT FOUND" for each task they lose). The Recoverer does the same work
// once per worker process, every few seconds, for leases a few seconds
// past their end, in one atomic script per queue, so that racing
// recoverers of other processes never take a task twice. asynq's own
// recoverers, one per asynq server, are answered "nothing" by the
// worker's fetch client (isListLeaseExpired): one recoverer per process.

// Defaults of a Recoverer: how often it looks, and how long after a lease
// ran out (allowing for clock differences between machines).
const (
	DefaultRecoverInterval = 2 * time.Second
	DefaultRecoverGrace    = 5 * time.Second
)

// RecovererConfig configures a Recoverer.
type RecovererConfig struct {
	Redis  redis.UniversalClient // required
	Shards int                   // the ping queues; if zero, tasks.DefaultShards
	// Lanes, if set, returns the queues of the batches' lanes, looked at
	// too: for expired leases, and for tasks due again (scheduled, or
	// waiting for a retry), which asynq's servers move only for the queues
	// they were started with.
	Lanes func() []string
	// Interval is how often it looks; if zero, DefaultRecoverInterval.
	Interval time.Duration
	// Grace is how long past its end a lease must be; if zero,
	// DefaultRecoverGrace.
	Grace  time.Duration
	Logger *slog.Logger // if nil, slog.Default()
	Now    func() time.Time
}

// Recoverer puts tasks whose lease ran out back in their queue, with one
// more retry counted (or archives them, out of retries, as asynq does).
type Recoverer struct {
	cfg    RecovererConfig
	queues []string
	warn   *rateLimitedLog

	stop chan struct{}
	done sync.WaitGroup
}

// NewRecoverer returns a Recoverer; Start starts it.
func NewRecoverer(cfg RecovererConfig) (*Recoverer, error) {
	if cfg.Redis == nil {
		return nil, errors.New("worker: RecovererConfig.Redis is required")
	}
	cfg.Interval = cmp.Or(cfg.Interval, DefaultRecoverInterval)
	cfg.Grace = cmp.Or(cfg.Grace, DefaultRecoverGrace)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Recoverer{cfg: cfg, stop: make(chan struct{}), warn: newRateLimitedLog(cfg.Logger, time.Minute)}
	for q := range tasks.Queues(cmp.Or(cfg.Shards, tasks.DefaultShards)) {
		r.queues = append(r.queues, q)
	}
	r.queues = append(r.queues, tasks.CallbackQueue)
	return r, nil
}

// Start looks for expired leases every Interval until Close.
func (r *Recoverer) Start() {
	r.done.Go(func() {
		every(r.stop, r.cfg.Interval, r.cfg.Interval+5*time.Second, func(ctx context.Context) {
			if n, err := r.Recover(ctx); err != nil {
				r.warn.Warn("recover tasks of expired leases", "error", err)
			} else if n > 0 {
				r.cfg.Logger.Info("tasks of expired leases put back in their queues", "tasks", n)
			}
		})
	})
}

// every calls fn every interval, each time with a context that ends
// after timeout, until stop is closed.
func every(stop <-chan struct{}, interval, timeout time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		fn(ctx)
		cancel()
	}
}

// Close stops it.
func (r *Recoverer) Close() {
	close(r.stop)
	r.done.Wait()
}

// recoverPage is the most tasks one pass takes from a queue.
const recoverPage = 1000

// Recover makes one pass over the queues and returns how many tasks it
// put back (or archived).
func (r *Recoverer) Recover(ctx context.Context) (int, error) {
	now := r.cfg.Now()
	cutoff := now.Add(-r.cfg.Grace).Unix()
	total := 0
	var errs []error
	for _, q := range r.queues {
		n, err := r.recoverQueue(ctx, q, cutoff, now)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("queue %s: %w", q, err))
		}
	}
	if r.cfg.Lanes != nil {
		n, err := r.recoverLanes(ctx, r.cfg.Lanes(), cutoff, now)
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// recoverLanes does what Recover does for the lanes' queues, and moves
// their tasks due again to their pending lists. It asks about all the
// queues in one round trip, and acts only on those with work.
func (r *Recoverer) recoverLanes(ctx context.Context, queues []string, cutoff int64, now time.Time) (int, error) {
	if len(queues) == 0 {
		return 0, nil
	}
	type probe struct{ lease, scheduled, retry *redis.StringSliceCmd }
	probes := make([]probe, len(queues))
	due := strconv.FormatInt(now.Unix(), 10)
	_, err := r.cfg.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range queues {
			base := tasks.AsynqKeys(q)
			first := func(key, max string) *redis.StringSliceCmd {
				return p.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "-inf", Max: max, Count: 1})
			}
			probes[i] = probe{first(base+":lease", strconv.FormatInt(cutoff, 10)), first(base+":scheduled", due), first(base+":retry", due)}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("look at the lanes: %w", err)
	}
	total := 0
	var errs []error
	for i, q := range queues {
		pr := probes[i]
		if len(pr.lease.Val()) > 0 {
			n, err := r.recoverQueue(ctx, q, cutoff, now)
			total += n
			if err != nil {
				errs = append(errs, fmt.Errorf("queue %s: %w", q, err))
			}
		}
		base := tasks.AsynqKeys(q)
		for _, set := range []struct {
			cmd *redis.StringSliceCmd
			key string
		}{{pr.scheduled, base + ":scheduled"}, {pr.retry, base + ":retry"}} {
			if len(set.cmd.Val()) == 0 {
				continue
			}
			n, err := forwardScript.Run(ctx, r.cfg.Redis, []string{set.key, base + ":pending"}, now.Unix(), base+":t:", recoverPage, now.UnixNano()).Int()
			total += n
			if err != nil {
				errs = append(errs, fmt.Errorf("queue %s: forward %s: %w", q, set.key, err))
			}
		}
	}
	return total, errors.Join(errs...)
}

// forwardScript moves tasks due again from a scheduled or retry set to
// their pending list, as asynq's forwarder does for the queues its server
// knows. KEYS: the set and the pending list; ARGV: now in Unix seconds,
// the task key prefix, the most to move, now in Unix nanoseconds. Returns
// how many.
var forwardScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  redis.call('LPUSH', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', ARGV[2] .. id, 'state', 'pending', 'pending_since', ARGV[4])
end
return #ids
`)

func (r *Recoverer) recoverQueue(ctx context.Context, q string, cutoff int64, now time.Time) (int, error) {
	base := tasks.AsynqKeys(q)
	ids, err := r.cfg.Redis.ZRangeByScore(ctx, base+":lease", &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(cutoff, 10), Count: recoverPage}).Result()
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	cmds, err := r.cfg.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.HGet(ctx, base+":t:"+id, "msg")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, err
	}
	argv := []any{cutoff, now.Unix(), base + ":t:"}
	for i, c := range cmds {
		msg, err := c.(*redis.StringCmd).Bytes()
		if err != nil {
			continue // its hash is gone: nothing to run again
		}
		next, archive, ok := leaseExpired(msg, now)
		if !ok {
			continue
		}
		argv = append(argv, ids[i], next, archive)
	}
	if len(argv) == 3 {
		return 0, nil
	}
	keys := []string{base + ":lease", base + ":active", base + ":pending", base + ":archived"}
	return recoverScript.Run(ctx, r.cfg.Redis, keys, argv...).Int()
}

// recoverScript puts back each task whose lease is still past the cutoff
// and that is still active (another recoverer has not taken it): its new
// message, then its queue's pending list, or the archive when it is out of
// retries. KEYS: the queue's lease set, active list, pending list and
// archive; ARGV: the cutoff and now in Unix seconds, the task key prefix,
// then an ID, a message and 1 (archive) or 0 per task. Returns how many.
var recoverScript = redis.NewScript(`
local n = 0
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= tonumber(ARGV[1]) and redis.call('LREM', KEYS[2], -1, id) > 0 then
    redis.call('ZREM', KEYS[1], id)
    local key = ARGV[3] .. id
    if ARGV[i + 2] == '1' then
      redis.call('ZADD', KEYS[4], ARGV[2], id)
      redis.call('HSET', key, 'msg', ARGV[i + 1], 'state', 'archived')
    else
      redis.call('LPUSH', KEYS[3], id)
      redis.call('HSET', key, 'msg', ARGV[i + 1], 'state', 'pending')
    end
    n = n + 1
  end
end
return n
`)

// leaseExpiredError is what asynq records for a task whose lease expired.
const leaseExpiredError = "asynq: task lease expired"

// leaseExpired returns msg, asynq's TaskMessage protobuf, as asynq's
// recoverer rewrites it for a lease that expired: one more retry counted
// (retried, field 6), the error (7) and the time of failure (11); and
// whether the task is out of retries (retried >= retry, field 5) and goes
// to the archive instead. ok is false if msg is not a message it reads.
func leaseExpired(msg []byte, now time.Time) (next []byte, archive int, ok bool) {
	var retry, retried int64
	out := make([]byte, 0, len(msg)+48)
	for b := msg; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, 0, false
		}
		field := b[:n+m]
		if typ == protowire.VarintType && (num == 5 || num == 6) {
			v, _ := protowire.ConsumeVarint(b[n:])
			if num == 5 {
				retry = int64(int32(v))
			} else {
				retried = int64(int32(v))
			}
		}
		if num != 6 && num != 7 && num != 11 {
			out = append(out, field...)
		}
		b = b[n+m:]
	}
	out = protowire.AppendTag(out, 6, protowire.VarintType)
	out = protowire.AppendVarint(out, uint64(retried+1))
	out = protowire.AppendTag(out, 7, protowire.BytesType)
	out = protowire.AppendString(out, leaseExpiredError)
	out = protowire.AppendTag(out, 11, protowire.VarintType)
	out = protowire.AppendVarint(out, uint64(now.Unix()))
	if retried >= retry {
		archive = 1
	}
	return out, archive, true
}

// rateLimitedLog logs a message of a kind at most once per interval, and
// says how many it held back since.
type rateLimitedLog struct {
	l        *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	held     map[string]int
}

func newRateLimitedLog(l *slog.Logger, interval time.Duration) *rateLimitedLog {
	return &rateLimitedLog{l: l, interval: interval, last: map[string]time.Time{}, held: map[string]int{}}
}

// Warn logs msg with args at warning level, as log does.
func (r *rateLimitedLog) Warn(msg string, args ...any) { r.log(slog.LevelWarn, msg, msg, args...) }

// log logs msg at level unless a message of kind was logged less than an
// interval ago.
func (r *rateLimitedLog) log(level slog.Level, kind, msg string, args ...any) {
	r.mu.Lock()
	now := time.Now()
	if t, ok := r.last[kind]; ok && now.Sub(t) < r.interval {
		r.held[kind]++
		r.mu.Unlock()
		return
	}
	held := r.held[kind]
	r.last[kind], r.held[kind] = now, 0
	if len(r.last) > 1000 { // kinds are few; bound them anyway
		clear(r.last)
		clear(r.held)
	}
	r.mu.Unlock()
	if held > 0 {
		args = append(args, "repeats_not_logged", held)
	}
	r.l.Log(context.Background(), level, msg, args...)
}
