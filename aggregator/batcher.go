package aggregator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultBatchSize is the most results a Batcher writes in one pipeline.
const DefaultBatchSize = 512

// ErrBatcherClosed is returned by Batcher.Record after Close.
var ErrBatcherClosed = errors.New("result batcher closed")

// Batcher records results like Aggregator.Record, but writes the results
// that arrive while a write is in flight together: one round trip (and two
// system calls on each side) per batch of results instead of per host,
// and one script call per Redis batch they belong to, which counts each
// host exactly once. A Batcher owns one goroutine; Close stops it.
type Batcher struct {
	agg     *Aggregator
	size    int
	reqs    chan *recordReq
	quit    chan struct{}
	done    chan struct{}
	started atomic.Bool
	stop    sync.Once
}

type recordReq struct {
	id      string
	host    string
	args    []any
	started int64 // startMs of the result
	out     chan recordRes
}

type recordRes struct {
	o   Outcome
	err error
}

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	Aggregator *Aggregator // writes the results; required
	// Size bounds the results written in one pipeline. If zero,
	// DefaultBatchSize.
	Size int
}

// NewBatcher returns a Batcher; Start starts it. Records made before wait
// for it.
func NewBatcher(cfg BatcherConfig) (*Batcher, error) {
	if cfg.Aggregator == nil {
		return nil, errors.New("aggregator: BatcherConfig.Aggregator is required")
	}
	if cfg.Size < 0 {
		return nil, fmt.Errorf("aggregator: batch size %d", cfg.Size)
	}
	return &Batcher{agg: cfg.Aggregator, size: cmp.Or(cfg.Size, DefaultBatchSize), reqs: make(chan *recordReq), quit: make(chan struct{}), done: make(chan struct{})}, nil
}

// Start starts the goroutine that writes.
func (b *Batcher) Start() {
	if b.started.CompareAndSwap(false, true) {
		go b.loop()
	}
}

// Record stores and counts r as Aggregator.Record does.
func (b *Batcher) Record(ctx context.Context, id string, r Result) (Outcome, error) {
	args, err := recordArgs(id, r)
	if err != nil {
		return Duplicate, err
	}
	req := &recordReq{id: id, host: r.Host, args: args, started: startMs(r), out: make(chan recordRes, 1)}
	select {
	case b.reqs <- req:
	case <-ctx.Done():
		return Duplicate, ctx.Err()
	case <-b.quit:
		return Duplicate, ErrBatcherClosed
	}
	// Once handed over, the write happens: wait for its outcome even if ctx
	// ends, so the caller never mistakes a counted result for a failure.
	res := <-req.out
	return res.o, res.err
}

// Close stops the Batcher after the writes in flight.
func (b *Batcher) Close() {
	b.stop.Do(func() { close(b.quit) })
	if b.started.Load() {
		<-b.done
	}
}

func (b *Batcher) loop() {
	defer close(b.done)
	batch := make([]*recordReq, 0, b.size)
	for {
		select {
		case req := <-b.reqs:
			batch = append(batch[:0], req)
		case <-b.quit:
			return
		}
	more:
		for len(batch) < b.size {
			select {
			case req := <-b.reqs:
				batch = append(batch, req)
			default:
				break more
			}
		}
		b.flush(batch)
	}
}

func (b *Batcher) flush(batch []*recordReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// One script call per Redis batch (per shard of a sharded one), its
	// results in arrival order.
	groups := b.group(batch, func(id string) layout { return b.agg.cached(id) })
	retry := b.write(ctx, groups)
	if len(retry) > 0 {
		// Batches found sharded (or their shards gone): once more, with
		// their layouts read.
		layouts := make(map[string]layout)
		var again []*recordReq
		for _, g := range retry {
			if _, ok := layouts[g.id]; !ok {
				l, err := b.agg.layoutOf(ctx, g.id)
				if err != nil {
					g.fail(err)
					continue
				}
				layouts[g.id] = l
			}
			again = append(again, g.reqs...)
		}
		if len(again) > 0 {
			for _, g := range b.write(ctx, b.group(again, func(id string) layout { return layouts[id] })) {
				g.fail(ErrNotFound)
			}
		}
	}
}

// recordGroup is the results of one batch (one shard of it) written by
// one script call.
type recordGroup struct {
	id   string
	l    layout
	j    int
	reqs []*recordReq
}

func (g *recordGroup) fail(err error) {
	for _, req := range g.reqs {
		req.out <- recordRes{Duplicate, fmt.Errorf("record %s in batch %s: %w", req.host, g.id, err)}
	}
}

// group sorts batch into script calls: one per batch and shard, in the
// order of their first results.
func (b *Batcher) group(batch []*recordReq, layoutOf func(string) layout) []*recordGroup {
	type key struct {
		id string
		j  int
	}
	var groups []*recordGroup
	at := make(map[key]*recordGroup)
	layouts := make(map[string]layout)
	for _, req := range batch {
		l, ok := layouts[req.id]
		if !ok {
			l = layoutOf(req.id)
			layouts[req.id] = l
		}
		k := key{req.id, l.of(req.host)}
		g := at[k]
		if g == nil {
			g = &recordGroup{id: req.id, l: l, j: k.j}
			at[k] = g
			groups = append(groups, g)
		}
		g.reqs = append(g.reqs, req)
	}
	return groups
}

// write writes groups in one pipeline and answers their results, but for
// the groups written to the wrong layout, which it returns unanswered.
func (b *Batcher) write(ctx context.Context, groups []*recordGroup) []*recordGroup {
	now := b.agg.now().UnixMilli()
	argv := func(reqs []*recordReq) []any {
		args := make([]any, 3, 3+recordArgsPerResult*len(reqs))
		var first int64
		for _, req := range reqs {
			args = append(args, req.args...)
			if req.started > 0 && (first == 0 || req.started < first) {
				first = req.started
			}
		}
		args[0], args[1], args[2] = now, b.agg.tail, first
		return args
	}
	cmds := make([]*redis.Cmd, len(groups))
	_, _ = b.agg.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, g := range groups {
			cmds[i] = recordScript.EvalSha(ctx, p, g.l.recordKeys(g.id, g.j), argv(g.reqs)...)
		}
		return nil
	})
	var retry []*recordGroup
	for i, g := range groups {
		cmd := cmds[i]
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// First use on this server (or after SCRIPT FLUSH): Run
			// loads the script.
			cmd = recordScript.Run(ctx, b.agg.rdb, g.l.recordKeys(g.id, g.j), argv(g.reqs)...)
		}
		outs, err := recordOutcomes(g.id, cmd, len(g.reqs))
		if errors.Is(err, errSharded) || errors.Is(err, ErrNotFound) && g.l.sharded() {
			b.agg.forget(g.id)
			retry = append(retry, g)
			continue
		}
		if err != nil {
			g.fail(err)
			continue
		}
		for j, req := range g.reqs {
			if outs[j] == Completed && g.l.sharded() {
				outs[j] = b.agg.completeShard(ctx, g.id, g.l, g.j)
			}
			req.out <- recordRes{outs[j], nil}
		}
	}
	return retry
}
