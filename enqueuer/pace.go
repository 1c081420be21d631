package enqueuer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
)

// windowPoll is how often a paced enqueue looks at its batch's progress.
const windowPoll = 10 * time.Millisecond

// pacer keeps a batch's enqueue a window of tasks ahead of its results
// (Config.Window and Ahead).
type pacer struct {
	agg     *aggregator.Aggregator
	id      string
	skipped int           // hosts done before this enqueue, counted in the batch's done
	least   int           // the smallest window; 0: no pacing
	ahead   time.Duration // the window holds this long of the fleet's work, if more
	free    chan struct{} // closed by release: no more waiting
	once    sync.Once

	mu       sync.Mutex
	done     int // the batch's results since this enqueue, as last read
	window   int
	rateFrom time.Time // when done was rateBase, for the rate
	rateBase int
	// reading serializes the reads of the batch's progress: the senders
	// that wait share one read per windowPoll.
	reading  sync.Mutex
	lastRead time.Time
}

func (e *Enqueuer) newPacer(id string, skipped int) *pacer {
	return &pacer{agg: e.agg, id: id, skipped: skipped, least: e.window, ahead: e.ahead, window: e.window, free: make(chan struct{})}
}

// release ends the pacing: later waits return at once.
func (p *pacer) release() { p.once.Do(func() { close(p.free) }) }

// wait returns once queued tasks fit in the window ahead of the results.
func (p *pacer) wait(ctx context.Context, queued int) error {
	if p.least == 0 {
		return nil
	}
	for {
		p.mu.Lock()
		fits := queued-p.done <= p.window
		p.mu.Unlock()
		if fits {
			return nil
		}
		select {
		case <-p.free:
			return nil
		default:
		}
		if err := p.read(ctx); err != nil {
			return err
		}
	}
}

// read reads the batch's progress, unless another sender did in the last
// windowPoll: then it waits for the next read instead.
func (p *pacer) read(ctx context.Context) error {
	p.reading.Lock()
	defer p.reading.Unlock()
	if wait := windowPoll - time.Since(p.lastRead); wait > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.free:
			return nil
		case <-time.After(wait):
		}
	}
	p.lastRead = time.Now()
	s, err := p.agg.Progress(ctx, p.id)
	if err != nil {
		return fmt.Errorf("wait for room in the queues: %w", err)
	}
	if s.Completed() {
		return fmt.Errorf("batch %s ended (%s) while its tasks were enqueued", p.id, s.State)
	}
	p.update(s.Done-p.skipped, p.lastRead)
	return nil
}

// update records done results at now, and grows the window to what the
// fleet completes in p.ahead at the rate of the last second or more. It
// reports whether there were new results.
func (p *pacer) update(done int, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if done <= p.done {
		return false
	}
	p.done = done
	if p.rateFrom.IsZero() {
		p.rateFrom, p.rateBase = now, done
	} else if span := now.Sub(p.rateFrom); span >= time.Second {
		rate := float64(done-p.rateBase) / span.Seconds()
		p.window = max(p.least, int(rate*p.ahead.Seconds()))
		p.rateFrom, p.rateBase = now, done
	}
	return true
}
