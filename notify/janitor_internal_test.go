package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
)

// newJanitor returns a janitor, and the store it sweeps, on a Redis of
// its own; cfg configures the store's aggregator.
func newJanitor(t *testing.T, cfg aggregator.Config) (*testkit.Store, *Janitor) {
	t.Helper()
	rdb := redistest.Start(t).Client()
	st := testkit.NewStore(t, rdb, cfg)
	notifier, err := NewNotifier(NotifierConfig{Client: asynq.NewClientFromRedisClient(rdb), Aggregator: st.Aggregator, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	j, err := NewJanitor(JanitorConfig{Aggregator: st.Aggregator, Notifier: notifier, Client: rdb, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return st, j
}

// The janitor deletes the queued tasks of the batches it expires, and
// finishes the clean-up of a cancelled batch whose canceller stopped
// before deleting them (a process killed mid-DELETE): until then the
// batch says it is cleaning.
func TestJanitorCleansUp(t *testing.T) {
	t.Parallel()
	st, j := newJanitor(t, aggregator.Config{})
	ctx := context.Background()
	hosts := make([]string, 500)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.0.%d.%d", 30+i/250, 1+i%250)
	}
	// One batch past its deadline, one cancelled by a canceller that died
	// right after the batch became final.
	if _, err := st.Enqueuer.Submit(ctx, enqueuer.Batch{ID: "late", Hosts: hosts[:250], Deadline: time.Now().Add(time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Enqueuer.Submit(ctx, enqueuer.Batch{ID: "orphan", Hosts: hosts[250:]}); err != nil {
		t.Fatal(err)
	}
	if n := st.Queued(t); n != 500 {
		t.Fatalf("%d tasks queued; want 500", n)
	}
	if _, err := st.Aggregator.Finalize(ctx, "orphan", aggregator.StateCancelled); err != nil {
		t.Fatal(err)
	}
	if s, _ := st.Aggregator.Summary(ctx, "orphan"); !s.Cleaning {
		t.Errorf("a cancelled batch whose tasks are queued: cleaning %v; want true", s.Cleaning)
	}
	time.Sleep(5 * time.Millisecond)
	j.now = func() time.Time { return time.Now().Add(time.Minute) } // past the canceller's grace
	if err := j.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := st.Queued(t); n != 0 {
		t.Errorf("%d tasks still queued after the janitor's sweep; want none", n)
	}
	for _, id := range []string{"late", "orphan"} {
		s, err := st.Aggregator.Summary(ctx, id)
		if err != nil || !s.State.Final() || s.Cleaning {
			t.Errorf("batch %s after the sweep: %+v, %v; want final, cleaned up", id, s, err)
		}
	}
}

// The janitor ends sharded batches whose last step was lost: one whose
// shards all completed while the batch did not (the last shard's writer
// stopped before telling the batch), one whose cancel stopped after it
// began.
func TestJanitorRepairsShardedBatches(t *testing.T) {
	t.Parallel()
	st, j := newJanitor(t, aggregator.Config{StateShards: 3})
	rdb := st.Client
	ctx := context.Background()
	hosts := make([]string, 24)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.0.40.%d", 1+i)
	}
	for _, id := range []string{"stalled", "halfway"} {
		if _, err := st.Enqueuer.Submit(ctx, enqueuer.Batch{ID: id, Hosts: hosts}); err != nil {
			t.Fatal(err)
		}
		if err := st.Aggregator.MarkEnqueued(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	record := func(id string, hs []string) {
		t.Helper()
		for _, h := range hs {
			if o, err := st.Aggregator.Record(ctx, id, aggregator.Result{Host: h, Status: aggregator.StatusDown, Sent: 1}); err != nil || o == aggregator.Completed {
				t.Fatalf("Record(%s, %s) = %v, %v", id, h, o, err)
			}
		}
	}
	// While a finalizer's mark is on the record, shards complete without
	// completing the batch; with the mark gone, it is left stalled.
	rdb.HSet(ctx, "pingfleet:{stalled}:meta", "ending", "cancelled")
	record("stalled", hosts)
	rdb.HDel(ctx, "pingfleet:{stalled}:meta", "ending")
	// A cancel that marked the record and stopped.
	record("halfway", hosts[:3])
	rdb.HSet(ctx, "pingfleet:{halfway}:meta", "ending", "cancelled")
	for _, id := range []string{"stalled", "halfway"} {
		if s, err := st.Aggregator.Summary(ctx, id); err != nil || s.State.Final() {
			t.Fatalf("batch %s before the sweep: %+v, %v; want not final", id, s, err)
		}
	}
	if err := j.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := st.Aggregator.Summary(ctx, "stalled")
	if err != nil || s.State != aggregator.StateComplete || s.Down != 24 {
		t.Errorf("stalled batch after the sweep: %+v, %v; want complete, 24 down", s, err)
	}
	s, err = st.Aggregator.Summary(ctx, "halfway")
	if err != nil || s.State != aggregator.StateCancelled || s.Down != 3 || s.Cancelled != 21 || s.Cleaning {
		t.Errorf("halfway batch after the sweep: %+v, %v; want cancelled, 3 down, 21 cancelled, cleaned up", s, err)
	}
	open, err := st.Aggregator.OpenBatches(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range open {
		if b.ID == "halfway" || b.ID == "stalled" {
			t.Errorf("batch %s still open after the sweep: %+v", b.ID, b)
		}
	}
}

// A batch without a deadline of its own that is still draining past its
// first deadline gets it moved to its last result plus its idle timeout;
// once no result came for that long, it expires.
func TestJanitorDeadlineFollowsProgress(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	clock := time.Now().Truncate(time.Millisecond) // as Redis keeps times
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	set := func(t time.Time) { mu.Lock(); defer mu.Unlock(); clock = t }
	st, j := newJanitor(t, aggregator.Config{Now: now})
	j.now = now
	ctx := context.Background()
	created := now()
	hosts := []string{"127.0.41.1", "127.0.41.2"}
	if _, err := st.Enqueuer.Submit(ctx, enqueuer.Batch{ID: "draining", Hosts: hosts}); err != nil {
		t.Fatal(err)
	}
	set(created.Add(2 * time.Minute)) // a result two minutes in
	if _, err := st.Aggregator.Record(ctx, "draining", aggregator.Result{Host: hosts[0], Status: aggregator.StatusDown, Sent: 1}); err != nil {
		t.Fatal(err)
	}
	s, _ := st.Aggregator.Progress(ctx, "draining")
	idle := aggregator.IdleTimeout(s.Options)
	set(s.Deadline.Add(time.Second))
	if err := j.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ = st.Aggregator.Progress(ctx, "draining")
	if want := created.Add(2 * time.Minute).Add(idle).Truncate(time.Millisecond); s.State.Final() || !s.Deadline.Equal(want) {
		t.Fatalf("after the first deadline: %s, deadline %s; want running, deadline %s (last result + idle timeout)", s.State, s.Deadline, want)
	}
	set(s.Deadline.Add(time.Second))
	if err := j.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ = st.Aggregator.Progress(ctx, "draining"); s.State != aggregator.StateExpired || s.Expired != 1 || s.Down != 1 {
		t.Errorf("with no result for the idle timeout: %+v; want expired, 1 down, 1 expired", s)
	}
}

// A cancel that finds every shard of a sharded batch complete (the last
// shard's writer had not told the batch yet) ends it complete, and says it
// had ended, as for an unsharded batch cancelled once complete.
func TestCancelFindsShardsComplete(t *testing.T) {
	t.Parallel()
	st, _ := newJanitor(t, aggregator.Config{StateShards: 3})
	ctx := context.Background()
	hosts := make([]string, 24)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.0.41.%d", 1+i)
	}
	if _, err := st.Enqueuer.Submit(ctx, enqueuer.Batch{ID: "done", Hosts: hosts}); err != nil {
		t.Fatal(err)
	}
	// The shards complete while a finalizer's mark is on the record: as
	// if the cancel came between the last result and the batch's step.
	st.Client.HSet(ctx, "pingfleet:{done}:meta", "ending", "cancelled")
	for _, h := range hosts {
		if _, err := st.Aggregator.Record(ctx, "done", aggregator.Result{Host: h, Status: aggregator.StatusUp, Sent: 1, Received: 1, RTTAvg: 1}); err != nil {
			t.Fatal(err)
		}
	}
	notifier, err := NewNotifier(NotifierConfig{Client: asynq.NewClientFromRedisClient(st.Client), Aggregator: st.Aggregator, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCanceller(CancellerConfig{Aggregator: st.Aggregator, Notifier: notifier, Client: st.Client, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Cancel(ctx, "done")
	var final *FinalError
	if !errors.As(err, &final) || final.State != aggregator.StateComplete || s.State != aggregator.StateComplete || s.Up != 24 || s.Cancelled != 0 {
		t.Errorf("Cancel = %+v, %v; want the batch complete, 24 up, and a FinalError", s, err)
	}
}
