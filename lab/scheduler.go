package lab

import (
	"context"
	"io"
	"sync"
	"time"
)

// scheduler holds replies until they are due and writes them, from one
// goroutine, so that a delayed reply costs a heap entry rather than a
// goroutine or a timer, and writes to the device are serialized.
type scheduler struct {
	start time.Time // due times are offsets from start, on the monotonic clock
	wake  chan struct{}

	mu   sync.Mutex
	q    replyHeap
	next uint64 // arrival order, to keep replies due at the same time in order
}

type pending struct {
	due time.Duration
	seq uint64
	pkt []byte
}

func newScheduler() *scheduler {
	return &scheduler{start: time.Now(), wake: make(chan struct{}, 1)}
}

// push schedules pkt to be written after delay.
func (s *scheduler) push(delay time.Duration, pkt []byte) {
	due := time.Since(s.start) + delay
	s.mu.Lock()
	s.q.push(pending{due: due, seq: s.next, pkt: pkt})
	s.next++
	first := s.q[0].seq == s.next-1
	s.mu.Unlock()
	if first { // the writer may sleep until a later reply: wake it
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// run writes the replies to w as they fall due, until ctx is done.
func (s *scheduler) run(ctx context.Context, w io.Writer, r *Responder) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var batch [][]byte
	for {
		now := time.Since(s.start)
		s.mu.Lock()
		for len(s.q) > 0 && s.q[0].due <= now {
			batch = append(batch, s.q.pop().pkt)
		}
		wait := time.Duration(-1)
		if len(s.q) > 0 {
			wait = s.q[0].due - now
		}
		s.mu.Unlock()

		for i, pkt := range batch {
			if _, err := w.Write(pkt); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.writeErrors.Add(1)
			} else {
				r.replies.Add(1)
			}
			batch[i] = nil
		}
		if len(batch) > 0 {
			batch = batch[:0]
			continue // writing took time: more may be due
		}

		var fire <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-fire:
		}
	}
}

// replyHeap is a min-heap of pending replies by due time, then arrival.
// It is written out rather than built on container/heap to avoid boxing
// every entry in an interface.
type replyHeap []pending

func (h replyHeap) less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}

func (h *replyHeap) push(p pending) {
	*h = append(*h, p)
	q := *h
	for i := len(q) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			break
		}
		q[i], q[parent] = q[parent], q[i]
		i = parent
	}
}

func (h *replyHeap) pop() pending {
	q := *h
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q[last] = pending{}
	q = q[:last]
	for i := 0; ; {
		least, l, r := i, 2*i+1, 2*i+2
		if l < len(q) && q.less(l, least) {
			least = l
		}
		if r < len(q) && q.less(r, least) {
			least = r
		}
		if least == i {
			break
		}
		q[i], q[least] = q[least], q[i]
		i = least
	}
	*h = q
	return top
}
