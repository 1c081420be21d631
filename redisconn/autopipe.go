package redisconn

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// AutoPipeline wraps a client so that script calls (EVALSHA) made at the
// same time by many goroutines travel together in one pipeline: one round
// trip, and one write and one read system call on each side, for the lot.
// asynq v0.26 runs one script per task operation and has no batch API;
// handing it this client batches its enqueues (and acknowledgements) from
// concurrent callers without touching its code. Every other command goes
// straight through. A call waits for at most one pipeline in flight before
// its own: nothing lingers to fill batches.
type AutoPipeline struct {
	redis.UniversalClient
	reqs chan *evalReq
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

type evalReq struct {
	ctx  context.Context
	sha  string
	keys []string
	args []any
	out  chan *redis.Cmd
}

// maxPipeline bounds one batch of script calls.
const maxPipeline = 256

// NewAutoPipeline wraps c. Stop ends the batching (and does not close c).
func NewAutoPipeline(c redis.UniversalClient) *AutoPipeline {
	p := &AutoPipeline{UniversalClient: c, reqs: make(chan *evalReq), quit: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

// EvalSha sends the call with others made meanwhile.
func (p *AutoPipeline) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	req := &evalReq{ctx: ctx, sha: sha1, keys: keys, args: args, out: make(chan *redis.Cmd, 1)}
	select {
	case p.reqs <- req:
		return <-req.out
	case <-ctx.Done():
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		return cmd
	case <-p.quit:
		return p.UniversalClient.EvalSha(ctx, sha1, keys, args...)
	}
}

// Stop ends batching; later calls go straight to the client. It does not
// close the wrapped client.
func (p *AutoPipeline) Stop() {
	p.once.Do(func() { close(p.quit) })
	<-p.done
}

func (p *AutoPipeline) loop() {
	defer close(p.done)
	batch := make([]*evalReq, 0, maxPipeline)
	for {
		select {
		case r := <-p.reqs:
			batch = append(batch[:0], r)
		case <-p.quit:
			return
		}
	more:
		for len(batch) < maxPipeline {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		p.flush(batch)
	}
}

func (p *AutoPipeline) flush(batch []*evalReq) {
	if len(batch) == 1 {
		r := batch[0]
		r.out <- p.UniversalClient.EvalSha(r.ctx, r.sha, r.keys, r.args...)
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	// Each call keeps its own context for its result; the pipeline as a
	// whole runs under the first one's values but is not cancelled with it.
	ctx := context.WithoutCancel(batch[0].ctx)
	_, _ = p.UniversalClient.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for i, r := range batch {
			cmds[i] = pl.EvalSha(r.ctx, r.sha, r.keys, r.args...)
		}
		return nil
	})
	for i, r := range batch {
		r.out <- cmds[i]
	}
}
