package ping

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"time"
)

type probe struct {
	count, size, retries int
	interval, timeout    time.Duration
	backoff              float64
	perRequest           bool // keep each request's RTT
}

// noKey marks, in pingRun.keys, a request the network refused: it has no
// reply to wait for.
const noKey = ^uint32(0)

// pingRun is one host's ping: opts.count requests to dst, opts.interval
// apart, and the replies that arrive within opts.timeout of their request.
// It lives on the heap and its methods have small frames, so the goroutine
// waiting in it keeps a small stack (see worker.Handler.ProcessTask).
type pingRun struct {
	s        *socket
	dst      netip.Addr
	sa       dest // dst's socket address, resolved once (a zone is a lookup)
	opts     probe
	replies  chan reply
	timer    *time.Timer
	seqs     []uint32
	rtts     []time.Duration
	st       Stats
	lastSent time.Time
	firstErr error
	// With opts.perRequest: each request's key (noKey if refused) and RTT
	// (-1 until its reply comes).
	keys   []uint32
	perReq []time.Duration
}

func (r *pingRun) release() {
	for _, q := range r.seqs {
		r.s.release(q)
	}
	if r.timer != nil {
		r.timer.Stop()
	}
}

func (r *pingRun) run(ctx context.Context) error {
	if r.opts.retries > 0 {
		return r.retry(ctx)
	}
	start := time.Now()
	for i := 0; i < r.opts.count; i++ {
		if i > 0 {
			if err := r.wait(ctx, start.Add(time.Duration(i)*r.opts.interval), 0); err != nil {
				return err
			}
		}
		if err := r.send(); err != nil {
			if i == 0 {
				return err
			}
			break
		}
	}
	if r.st.Sent == 0 {
		return fmt.Errorf("send to %s: %w", r.dst, r.firstErr)
	}
	// Wait for the replies still due, each up to Timeout after its request
	// (the last one sets the bound).
	return r.wait(ctx, r.lastSent.Add(r.opts.timeout), r.st.Sent-r.st.Refused)
}

// retry is fping's reachability mode: a request, and while none has been
// answered, up to opts.retries more, each after a wait opts.backoff times
// the one before; the first reply, to any of them, ends it.
func (r *pingRun) retry(ctx context.Context) error {
	wait := r.opts.timeout
	for i := 0; i <= r.opts.retries; i++ {
		if err := r.send(); err != nil {
			if i == 0 {
				return err
			}
			break
		}
		if r.st.Sent == 0 {
			return fmt.Errorf("send to %s: %w", r.dst, r.firstErr)
		}
		if err := r.wait(ctx, time.Now().Add(wait), 1); err != nil || len(r.rtts) > 0 {
			return err
		}
		wait = time.Duration(float64(wait) * r.opts.backoff)
	}
	return nil
}

// send sends the next request. Only a failure to register one is an
// error: a request the network refuses counts as sent and lost, and one
// that failed otherwise is not counted.
func (r *pingRun) send() error {
	seq, req, err := r.s.register(r.dst, r.replies)
	if err != nil {
		return err
	}
	if err := r.s.send(r.sa, seq, req, r.opts.size); err != nil {
		r.s.release(seq)
		if refused(err) {
			r.st.Sent++
			if r.st.Refused++; r.st.RefusedErr == nil {
				r.st.RefusedErr = err
			}
			r.track(noKey)
		} else if r.firstErr == nil {
			r.firstErr = err
		}
		return nil
	}
	r.seqs = append(r.seqs, seq)
	r.st.Sent++
	r.lastSent = time.Now()
	r.track(seq)
	return nil
}

// track notes a request sent, when each request's RTT is kept.
func (r *pingRun) track(key uint32) {
	if r.opts.perRequest {
		r.keys = append(r.keys, key)
		r.perReq = append(r.perReq, -1)
	}
}

// answered notes rep's RTT as its request's, when each is kept.
//
//go:noinline // keeps wait's frame, which every waiting ping holds, small
func (r *pingRun) answered(rep reply) {
	for i, k := range r.keys {
		if k == rep.key {
			r.perReq[i] = rep.rtt
			return
		}
	}
}

// wait collects replies until deadline, or, if need is above 0, until it
// has need replies.
func (r *pingRun) wait(ctx context.Context, deadline time.Time, need int) error {
	if need > 0 && len(r.rtts) >= need {
		return nil
	}
	if r.timer == nil {
		r.timer = time.NewTimer(time.Until(deadline))
	} else {
		r.timer.Reset(time.Until(deadline))
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case rep := <-r.replies:
			r.rtts = append(r.rtts, rep.rtt)
			r.st.TTL = rep.ttl
			if r.opts.perRequest {
				r.answered(rep)
			}
			if need > 0 && len(r.rtts) >= need {
				return nil
			}
		case <-r.timer.C:
			return nil
		}
	}
}

// stats returns the figures of a finished run. Replies that came later than
// Timeout after their own request are lost; in the reachability mode
// (retries) none is: a reply to an earlier request that comes while a
// retry waits ends the run, and the host answered, as fping counts it.
func (r *pingRun) stats() Stats {
	st := r.st
	bound := r.opts.timeout
	if r.opts.retries > 0 {
		bound = time.Duration(math.MaxInt64)
	}
	kept := r.rtts[:0]
	for _, d := range r.rtts {
		if d <= bound {
			kept = append(kept, d)
		}
	}
	st.Received = len(kept)
	if st.Received == 0 {
		st.TTL = 0
	}
	st.Min, st.Avg, st.Max, st.Stdev = rttStats(kept)
	if r.opts.perRequest {
		for i, d := range r.perReq {
			if d > bound {
				r.perReq[i] = -1
			}
		}
		st.RTTs = r.perReq
	}
	return st
}

// rttStats returns min, mean, max and population standard deviation.
func rttStats(rtts []time.Duration) (lo, mean, hi, sd time.Duration) {
	if len(rtts) == 0 {
		return 0, 0, 0, 0
	}
	lo, hi = rtts[0], rtts[0]
	var sum float64
	for _, r := range rtts {
		lo, hi = min(lo, r), max(hi, r)
		sum += float64(r)
	}
	m := sum / float64(len(rtts))
	var sq float64
	for _, r := range rtts {
		d := float64(r) - m
		sq += d * d
	}
	return lo, time.Duration(m), hi, time.Duration(math.Sqrt(sq / float64(len(rtts))))
}
