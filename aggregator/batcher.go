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
	// One script call per Redis batch, its results in arrival order.
	var ids []string
	byID := make(map[string][]*recordReq)
	for _, req := range batch {
		if _, ok := byID[req.id]; !ok {
			ids = append(ids, req.id)
		}
		byID[req.id] = append(byID[req.id], req)
	}
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
	cmds := make([]*redis.Cmd, len(ids))
	_, _ = b.agg.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = recordScript.EvalSha(ctx, p, recordKeys(id), argv(byID[id])...)
		}
		return nil
	})
	for i, id := range ids {
		reqs := byID[id]
		cmd := cmds[i]
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// First use on this server (or after SCRIPT FLUSH): Run
			// loads the script.
			cmd = recordScript.Run(ctx, b.agg.rdb, recordKeys(id), argv(reqs)...)
		}
		outs, err := recordOutcomes(id, cmd, len(reqs))
		for j, req := range reqs {
			if err != nil {
				req.out <- recordRes{Duplicate, fmt.Errorf("record %s in batch %s: %w", req.host, id, err)}
				continue
			}
			req.out <- recordRes{outs[j], nil}
		}
	}
}
