//go:build !race

// The race detector makes every frame larger; the budget below is for the
// binary that ships.

package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/pingfleet/pingfleet/worker"
)

type nopRecorder struct{}

func (nopRecorder) Record(context.Context, string, aggregator.Result) (aggregator.Outcome, error) {
	return aggregator.Counted, nil
}

// A worker with 10,000 pings in flight holds 10,000 task goroutines waiting
// for replies (and as many of asynq's): their stacks are most of its memory.
// A task's goroutine must wait with a stack of 4 KiB, not 8 KiB. asynq's
// frames above the handler (v0.26: about 400 bytes) take part of the
// margin, so the handler runs below a pad of that size. A few goroutines
// may still grow (the one that grows the engine's map of requests in
// flight, say); most must not.
func TestBudgetStackWhileWaiting(t *testing.T) {
	h, err := worker.NewHandler(worker.HandlerConfig{Recorder: nopRecorder{}, Pinger: newEngine(t)})
	if err != nil {
		t.Fatal(err)
	}
	// The second request is never sent: the test measures the wait before
	// it, then cancels.
	opts := tasks.PingOptions{Count: 2, Interval: tasks.Duration(time.Minute), Timeout: tasks.Duration(time.Second)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 2000
	ts := make([]func(), n)
	for i := range ts {
		tk := task(t, netip.AddrFrom4([4]byte{127, 9, byte(i >> 8), byte(i)}).String(), opts)
		ts[i] = func() { _ = h.ProcessTask(ctx, tk) }
	}
	var before, during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for _, f := range ts {
		wg.Go(func() { padded(f) })
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	// Between the two requests every goroutine waits in the engine.
	deadline := time.Now().Add(30 * time.Second)
	for waitingForReplies() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tasks wait for replies after 30 s", waitingForReplies(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.ReadMemStats(&during)
	per := float64(during.StackInuse-before.StackInuse) / n
	t.Logf("stack per waiting task: %.0f bytes", per)
	if per > 6<<10 {
		t.Errorf("a waiting task holds %.0f bytes of stack, want 4 KiB (a frame on its path grew; see Handler.ProcessTask)", per)
	}
}

// waitingForReplies counts the goroutines parked in the engine's wait.
func waitingForReplies() int {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	// debug=1 writes a header line, then groups goroutines by stack:
	// "N @ pcs..." and then the frames.
	_, groups, _ := strings.Cut(b.String(), "\n")
	total := 0
	for _, rec := range strings.Split(groups, "\n\n") {
		if !strings.Contains(rec, "(*pingRun).wait") {
			continue
		}
		var count int
		if _, err := fmt.Sscanf(rec, "%d @", &count); err == nil {
			total += count
		}
	}
	return total
}

// padded calls f below a frame as large as asynq's above a handler.
//
//go:noinline
func padded(f func()) byte {
	var pad [400]byte
	f()
	return pad[len(pad)-1]
}
