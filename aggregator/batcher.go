package aggregator

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultBatchSize is the most results a Batcher writes in one pipeline.
const DefaultBatchSize = 512

// ErrBatcherClosed is returned by Batcher.Record after Close.
var ErrBatcherClosed = errors.New("result batcher closed")

// Batcher records results like Aggregator.Record, but sends the results
// that arrive while a write is in flight together, in one pipeline: one
// round trip (and two system calls on each side) per batch instead of per
// host. Each result is still counted by its own script call, so accounting
// stays exactly-once. A Batcher owns one goroutine; Close stops it.
type Batcher struct {
	agg  *Aggregator
	size int
	reqs chan *recordReq
	quit chan struct{}
	done chan struct{}
}

type recordReq struct {
	ctx  context.Context
	id   string
	r    Result
	keys []string
	args []any
	out  chan recordRes
}

type recordRes struct {
	o   Outcome
	err error
}

// NewBatcher starts a Batcher writing through agg, at most size results per
// pipeline (DefaultBatchSize if size is zero).
func NewBatcher(agg *Aggregator, size int) *Batcher {
	if size <= 0 {
		size = DefaultBatchSize
	}
	b := &Batcher{agg: agg, size: size, reqs: make(chan *recordReq), quit: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

// Record stores and counts r as Aggregator.Record does.
func (b *Batcher) Record(ctx context.Context, id string, r Result) (Outcome, error) {
	keys, args, err := b.agg.recordArgs(id, r)
	if err != nil {
		return Duplicate, err
	}
	req := &recordReq{ctx: ctx, id: id, r: r, keys: keys, args: args, out: make(chan recordRes, 1)}
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
	close(b.quit)
	<-b.done
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
	cmds := make([]*redis.Cmd, len(batch))
	_, _ = b.agg.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, req := range batch {
			cmds[i] = recordScript.EvalSha(ctx, p, req.keys, req.args...)
		}
		return nil
	})
	for i, req := range batch {
		n, err := cmds[i].Int()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// First use on this server (or after SCRIPT FLUSH): Run
			// loads the script.
			n, err = recordScript.Run(ctx, b.agg.rdb, req.keys, req.args...).Int()
		}
		o, err := recordOutcome(req.id, req.r.Host, n, err)
		req.out <- recordRes{o, err}
	}
}
