package aggregator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
)

func shardedBatch(t *testing.T, id string, n int) (*aggregator.Aggregator, []string) {
	t.Helper()
	srv := redistest.Start(t)
	a, err := aggregator.New(aggregator.Config{Client: srv.Client(), StateShards: 3})
	if err != nil {
		t.Fatal(err)
	}
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.0.0.%d", i+1)
	}
	if _, err := a.Create(context.Background(), aggregator.Batch{ID: id, Hosts: hosts, Options: tasks.PingOptions{Count: 1}}); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Shards(context.Background(), id); err != nil || n != 3 {
		t.Fatalf("batch %s has %d shards (%v); want 3", id, n, err)
	}
	return a, hosts
}

func recordInShard(t *testing.T, a *aggregator.Aggregator, id string, r aggregator.Result) {
	t.Helper()
	if err := a.RecordInShard(context.Background(), id, r); err != nil {
		t.Fatal(err)
	}
}

func openBatch(t *testing.T, a *aggregator.Aggregator, id string) aggregator.OpenBatch {
	t.Helper()
	open, err := a.OpenBatches(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range open {
		if b.ID == id {
			return b
		}
	}
	t.Fatalf("batch %s not open", id)
	return aggregator.OpenBatch{}
}

// Two Creates of one sharded batch overlap: the second read the record
// before the first had loaded it, and fills the shards after a result was
// counted. The counted host is not pending again, and its result, sent a
// second time, is not counted twice.
func TestOverlappingCreatesOfShards(t *testing.T) {
	t.Parallel()
	a, hosts := shardedBatch(t, "overlap", 2500) // more than a chunk per shard
	ctx := context.Background()
	r := aggregator.Result{Host: hosts[7], Status: aggregator.StatusUp, Sent: 1, Received: 1, RTTAvg: 1}
	if o, err := a.Record(ctx, "overlap", r); err != nil || o != aggregator.Counted {
		t.Fatalf("Record = %v, %v; want counted", o, err)
	}
	for range 2 {
		if err := a.FillShards(ctx, "overlap", hosts); err != nil {
			t.Fatal(err)
		}
	}
	pending, err := a.Pending(ctx, "overlap", hosts[:10])
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pending {
		if p == (i == 7) {
			t.Errorf("host %s pending = %v after the overlapping fill; want %v", hosts[i], p, i != 7)
		}
	}
	if o, err := a.Record(ctx, "overlap", r); err != nil || o == aggregator.Counted {
		t.Errorf("the same result again: %v, %v; want not counted", o, err)
	}
	s, err := a.Summary(ctx, "overlap")
	if err != nil || s.Done != 1 || s.Up != 1 || s.Pending != len(hosts)-1 {
		t.Errorf("summary %+v, %v; want 1 done of %d", s, err, len(hosts))
	}
}

// The writer of a sharded batch's last shard stopped before telling the
// batch: the batch is listed as stalled, and Complete completes it, once.
func TestStalledShardsComplete(t *testing.T) {
	t.Parallel()
	a, hosts := shardedBatch(t, "stalled", 12)
	ctx := context.Background()
	for _, h := range hosts {
		recordInShard(t, a, "stalled", aggregator.Result{Host: h, Status: aggregator.StatusDown, Sent: 1})
	}
	if b := openBatch(t, a, "stalled"); !b.Stalled || b.State.Final() {
		t.Fatalf("open batch %+v; want stalled, not final", b)
	}
	for i, want := range []bool{true, false} {
		if done, err := a.Complete(ctx, "stalled"); err != nil || done != want {
			t.Fatalf("Complete #%d = %v, %v; want %v", i, done, err, want)
		}
	}
	s, err := a.Summary(ctx, "stalled")
	if err != nil || s.State != aggregator.StateComplete || s.Down != 12 || s.Done != 12 || s.Finished.IsZero() {
		t.Errorf("summary %+v, %v; want complete, 12 down", s, err)
	}
	if b := openBatch(t, a, "stalled"); b.Stalled {
		t.Errorf("a complete batch listed as stalled: %+v", b)
	}
}

// A cancel that stopped after marking a sharded batch, before closing its
// shards: the batch is listed as ending, a shard that completes meanwhile
// does not complete the batch, and Finalize ends it: in the state begun
// if a shard had hosts left (TestJanitorRepairsShardedBatches), complete
// if none had.
func TestEndingShardsFinalize(t *testing.T) {
	t.Parallel()
	a, hosts := shardedBatch(t, "ending", 12)
	ctx := context.Background()
	if _, err := a.Record(ctx, "ending", aggregator.Result{Host: hosts[0], Status: aggregator.StatusUp, Sent: 1, Received: 1, RTTAvg: 1}); err != nil {
		t.Fatal(err)
	}
	if err := a.BeginFinalize(ctx, "ending", aggregator.StateCancelled); err != nil {
		t.Fatal(err)
	}
	if b := openBatch(t, a, "ending"); b.Ending != aggregator.StateCancelled || b.State.Final() {
		t.Fatalf("open batch %+v; want ending as cancelled", b)
	}
	// Every host's result comes in before the cancel goes on: shards
	// complete, the batch does not.
	for _, h := range hosts[1:] {
		if o, err := a.Record(ctx, "ending", aggregator.Result{Host: h, Status: aggregator.StatusDown, Sent: 1}); err != nil || o == aggregator.Completed {
			t.Fatalf("Record(%s) = %v, %v; want counted, not completing an ending batch", h, o, err)
		}
	}
	if acted, err := a.Finalize(ctx, "ending", aggregator.StateExpired); err != nil || !acted {
		t.Fatalf("Finalize = %v, %v; want it to end the batch", acted, err)
	}
	s, err := a.Summary(ctx, "ending")
	// Every host was pinged before the cancel closed a shard: the batch
	// is complete, as an unsharded one would have been.
	if err != nil || s.State != aggregator.StateComplete || s.Up != 1 || s.Down != 11 || s.Cancelled != 0 || s.Done != 12 || !s.Cleaning {
		t.Errorf("summary %+v, %v; want complete with 1 up, 11 down, cleaning", s, err)
	}
	if acted, err := a.Finalize(ctx, "ending", aggregator.StateCancelled); err != nil || acted {
		t.Errorf("Finalize again = %v, %v; want false", acted, err)
	}
}

// Cancelling a sharded batch midway counts the hosts of every shard not
// pinged as cancelled, and refuses results that come later.
func TestCancelSharded(t *testing.T) {
	t.Parallel()
	a, hosts := shardedBatch(t, "cancel", 12)
	ctx := context.Background()
	for _, h := range hosts[:5] {
		if _, err := a.Record(ctx, "cancel", aggregator.Result{Host: h, Status: aggregator.StatusUp, Sent: 1, Received: 1, RTTAvg: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if acted, err := a.Finalize(ctx, "cancel", aggregator.StateCancelled); err != nil || !acted {
		t.Fatalf("Finalize = %v, %v", acted, err)
	}
	if o, err := a.Record(ctx, "cancel", aggregator.Result{Host: hosts[7], Status: aggregator.StatusUp, Sent: 1, Received: 1}); err != nil || o != aggregator.Duplicate {
		t.Errorf("Record after cancel = %v, %v; want aggregator.Duplicate", o, err)
	}
	s, err := a.Summary(ctx, "cancel")
	if err != nil || s.State != aggregator.StateCancelled || s.Up != 5 || s.Cancelled != 7 || s.Done != 12 || s.RTTP50 != 2 {
		t.Errorf("summary %+v, %v; want cancelled, 5 up, 7 cancelled", s, err)
	}
	var got []aggregator.Status
	if err := a.Results(ctx, "cancel", func(r aggregator.Result) error { got = append(got, r.Status); return nil }); err != nil {
		t.Fatal(err)
	}
	for i, st := range got {
		if want := map[bool]aggregator.Status{true: aggregator.StatusUp, false: aggregator.StatusCancelled}[i < 5]; st != want {
			t.Errorf("result %d: %s; want %s", i, st, want)
		}
	}
}

// A shard that completes while others run keeps its whole event stream:
// a reader from the start gets every result so far, then the rest and
// the final event once the batch is final (and the streams are cut to
// their tails then).
func TestShardStreamKeptWhileRunning(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, err := aggregator.New(aggregator.Config{Client: srv.Client(), StateShards: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hs := make([]string, 4000) // over 1,000 a shard: more than a final stream keeps
	for i := range hs {
		hs[i] = fmt.Sprintf("127.1.%d.%d", i/250, 1+i%250)
	}
	if _, err := a.Create(ctx, aggregator.Batch{ID: "early", Hosts: hs, Options: tasks.PingOptions{Count: 1}}); err != nil {
		t.Fatal(err)
	}
	var last string // a host of shard 2, recorded last
	for _, h := range hs {
		if j, _ := a.ShardOf(ctx, "early", h); j == 2 && last == "" {
			last = h
			continue
		}
		if _, err := a.Record(ctx, "early", aggregator.Result{Host: h, Status: aggregator.StatusDown, Sent: 1}); err != nil {
			t.Fatal(err)
		}
	}
	read := func(after string) (evs []aggregator.Event) {
		t.Helper()
		for {
			next, final, err := a.Events(ctx, "early", after, 0, func(e aggregator.Event) error { evs = append(evs, e); return nil })
			if err != nil {
				t.Fatalf("events after %q: %v", after, err)
			}
			if final || next == after {
				return evs
			}
			after = next
		}
	}
	if evs := read(""); len(evs) != len(hs)-1 {
		t.Fatalf("running batch, two shards complete: %d events; want %d results", len(evs), len(hs)-1)
	}
	if o, err := a.Record(ctx, "early", aggregator.Result{Host: last, Status: aggregator.StatusDown, Sent: 1}); err != nil || o != aggregator.Completed {
		t.Fatalf("last result: %v, %v; want Completed", o, err)
	}
	evs := read("")
	if len(evs) != len(hs)+1 || evs[len(evs)-1].Type != "complete" {
		t.Errorf("final batch: %d events; want %d results and the complete event", len(evs), len(hs))
	}
	keys, _ := a.KeysOf(ctx, "early")
	for _, k := range keys {
		if strings.HasSuffix(k, ":events") && k != "pingfleet:{early}:events" {
			if n := srv.Client().XLen(ctx, k).Val(); n > 1000 {
				t.Errorf("final batch: stream %s keeps %d entries; want its tail", k, n)
			}
		}
	}
}

// A batch ID used again after its sharded batch expired: an Aggregator
// that remembers the old layout writes to, finalizes and reads the new
// batch, never the old shards.
func TestShardLayoutOfReusedID(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	worker, err := aggregator.New(aggregator.Config{Client: srv.Client(), StateShards: 3})
	if err != nil {
		t.Fatal(err)
	}
	hs := []string{"127.0.42.1", "127.0.42.2", "127.0.42.3", "127.0.42.4", "127.0.42.5", "127.0.42.6"}
	for round, shards := range []int{3, 1, 2} {
		creator, err := aggregator.New(aggregator.Config{Client: srv.Client(), StateShards: shards})
		if err != nil {
			t.Fatal(err)
		}
		if round > 0 { // the batch before expired: all its keys gone
			keys, _ := creator.KeysOf(ctx, "weekly")
			srv.Client().Del(ctx, keys...)
		}
		if _, err := creator.Create(ctx, aggregator.Batch{ID: "weekly", Hosts: hs, Options: tasks.PingOptions{Count: 1}}); err != nil {
			t.Fatal(err)
		}
		for i, h := range hs[:5] {
			o, err := worker.Record(ctx, "weekly", aggregator.Result{Host: h, Status: aggregator.StatusUp, Sent: 1, Received: 1, RTTAvg: 1})
			if err != nil || o != aggregator.Counted {
				t.Fatalf("round %d (%d shards), result %d: %v, %v; want Counted", round, shards, i, o, err)
			}
		}
		if acted, err := worker.Finalize(ctx, "weekly", aggregator.StateCancelled); err != nil || !acted {
			t.Fatalf("round %d: Finalize = %v, %v", round, acted, err)
		}
		s, err := worker.Summary(ctx, "weekly")
		if err != nil || s.Up != 5 || s.Cancelled != 1 || s.State != aggregator.StateCancelled {
			t.Errorf("round %d (%d shards): %+v, %v; want cancelled, 5 up, 1 cancelled", round, shards, s, err)
		}
	}
}

// A stalled sharded batch that wait finds past its deadline is completed,
// not expired: every host has its result.
func TestExpireOverdueCompletesStalled(t *testing.T) {
	t.Parallel()
	a, hosts := shardedBatch(t, "stalled-late", 9)
	ctx := context.Background()
	for _, h := range hosts {
		recordInShard(t, a, "stalled-late", aggregator.Result{Host: h, Status: aggregator.StatusDown, Sent: 1})
	}
	if expired, err := a.ExpireOverdue(ctx, "stalled-late"); err != nil || expired {
		t.Fatalf("ExpireOverdue = %v, %v; want false", expired, err)
	}
	if s, err := a.Summary(ctx, "stalled-late"); err != nil || s.State != aggregator.StateComplete || s.Expired != 0 {
		t.Errorf("summary %+v, %v; want complete", s, err)
	}
}
