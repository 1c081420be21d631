package aggregator_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

func TestFinalize(t *testing.T) {
	t.Parallel()
	for _, state := range []aggregator.State{aggregator.StateCancelled, aggregator.StateExpired} {
		t.Run(string(state), func(t *testing.T) {
			t.Parallel()
			agg, _ := setup(t, aggregator.Config{})
			ctx := context.Background()
			hs := hosts(10)
			create(t, agg, "f", hs)
			for _, h := range hs[:4] {
				if _, err := agg.Record(ctx, "f", up(h, 1)); err != nil {
					t.Fatal(err)
				}
			}
			// Several finalizers at once: exactly one acts.
			var wg sync.WaitGroup
			var mu sync.Mutex
			acted := 0
			for range 5 {
				wg.Go(func() {
					ok, err := agg.Finalize(ctx, "f", state)
					if err != nil {
						t.Error(err)
					}
					if ok {
						mu.Lock()
						acted++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if acted != 1 {
				t.Errorf("%d Finalize calls acted; want 1", acted)
			}
			// A worker that finishes a host afterwards changes nothing.
			if o, err := agg.Record(ctx, "f", up(hs[9], 1)); err != nil || o != aggregator.Duplicate {
				t.Errorf("Record after finalize = %v, %v; want Duplicate", o, err)
			}
			s, err := agg.Summary(ctx, "f")
			if err != nil {
				t.Fatal(err)
			}
			notPinged := s.Cancelled + s.Expired
			if s.State != state || s.Up != 4 || notPinged != 6 || s.Done != 10 || s.Pending != 0 ||
				s.Up+s.Down+s.Error+notPinged != s.Total || s.Finished.IsZero() {
				t.Errorf("summary %+v; want %s, 4 up, 6 not pinged, counts adding up", s, state)
			}
			var statuses []string
			err = agg.Results(ctx, "f", func(r aggregator.Result) error {
				statuses = append(statuses, string(r.Status))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"up", "up", "up", "up"}
			for range 6 {
				want = append(want, string(state))
			}
			if diff := cmp.Diff(want, statuses); diff != "" {
				t.Errorf("statuses (-want +got):\n%s", diff)
			}
			if _, err := agg.Finalize(ctx, "nope", state); !errors.Is(err, aggregator.ErrNotFound) {
				t.Errorf("Finalize(unknown) error = %v", err)
			}
		})
	}
}

// readEvents reads batch id's events after the one with ID after, without
// waiting, until the final event or until there is none.
func readEvents(t *testing.T, agg *aggregator.Aggregator, id, after string) []aggregator.Event {
	t.Helper()
	var evs []aggregator.Event
	for {
		n := len(evs)
		next, final, err := agg.Events(context.Background(), id, after, 0, func(e aggregator.Event) error {
			evs = append(evs, e)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if final || len(evs) == n {
			return evs
		}
		after = next
	}
}

// Events, read in pieces from anywhere in a running or final batch, yield
// each counted result once and then the final event, whether they come
// from the stream or, once it is trimmed, from the results. A sharded
// batch (PINGFLEET_TEST_STATE_SHARDS) has a stream per shard, each trimmed
// once final, and IDs that name a place in each.
func TestEventsResume(t *testing.T) {
	t.Parallel()
	agg, _ := setup(t, aggregator.Config{})
	ctx := context.Background()
	n := 2500 + 1000*stateShards // more than the stream (each shard's) keeps once final
	hs := hosts(n)
	create(t, agg, "ev", hs)
	record := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			// Recorded in an order other than submission's.
			if _, err := agg.Record(ctx, "ev", up(hs[(i*7)%n], float64(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// seen is how many results a reader at stream ID id has passed.
	seen := func(id string) int {
		seq, _, _, err := aggregator.ParseEventID(id)
		if err != nil {
			t.Fatal(err)
		}
		return int(seq)
	}
	record(0, 1200)
	// Running: the stream has every result so far.
	live := readEvents(t, agg, "ev", "")
	if len(live) != 1200 || seen(live[0].ID) != 1 || seen(live[1199].ID) != 1200 {
		t.Fatalf("running batch: %d events from %s to %s; want 1200, 1 to 1200", len(live), live[0].ID, live[len(live)-1].ID)
	}
	for i, e := range live {
		if seen(e.ID) != i+1 {
			t.Fatalf("running batch: event %d has ID %s", i, e.ID)
		}
	}
	if stateShards == 0 && (live[0].ID != "1" || live[1199].ID != "1200" || !reflect.DeepEqual(live[0].Result, up(hs[0], 0))) {
		t.Fatalf("running batch: events from %s to %s, first %+v; want 1 to 1200", live[0].ID, live[len(live)-1].ID, live[0])
	}
	// A blocking read past the end waits, then returns nothing.
	start := time.Now()
	end := live[1199].ID
	next, final, err := agg.Events(ctx, "ev", end, 50*time.Millisecond, func(e aggregator.Event) error {
		t.Errorf("event %+v past the end", e)
		return nil
	})
	if err != nil || final || next != end || time.Since(start) < 40*time.Millisecond {
		t.Errorf("blocking read past the end = %q, %v, %v after %s", next, final, err, time.Since(start))
	}
	record(1200, n)
	// From several points, through the trimmed stream and the results.
	points := []string{"", live[6].ID, end}
	if stateShards == 0 {
		points = append(points, "1499", "1500", "2499", "2500")
	}
	for _, after := range points {
		evs := readEvents(t, agg, "ev", after)
		from := seen(after)
		if len(evs) != n-from+1 || evs[len(evs)-1].Type != "complete" {
			t.Errorf("after %q: %d events ending with %+v; want %d results and the complete event", after, len(evs), evs[len(evs)-1], n-from)
			continue
		}
		seen := map[string]bool{}
		for _, e := range evs[:len(evs)-1] {
			if e.Type != "result" || seen[e.Result.Host] {
				t.Fatalf("after %q: event %+v is not a new result", after, e)
			}
			seen[e.Result.Host] = true
		}
		// A reader that stops mid-way and comes back gets the rest.
		if len(evs) > 10 {
			rest := readEvents(t, agg, "ev", evs[4].ID)
			if len(rest) != len(evs)-5 || !reflect.DeepEqual(rest[0].Result, evs[5].Result) {
				t.Errorf("after %q, resumed at %s: %d events from %+v; want %d from %+v", after, evs[4].ID, len(rest), rest[0], len(evs)-5, evs[5])
			}
		}
	}
	// The final event's ID ends the stream.
	evs := readEvents(t, agg, "ev", "")
	fin := evs[len(evs)-1].ID
	if rest := readEvents(t, agg, "ev", fin); len(rest) != 0 {
		t.Errorf("after the final event %s: %d more events", fin, len(rest))
	}
	bad := []string{"x", "-1", "1/x", "3/-2", "1,x", "1,2,3,4"}
	if stateShards > 0 {
		bad = append(bad, "5", "5/3")
	}
	for _, bad := range bad {
		if _, _, err := agg.Events(ctx, "ev", bad, 0, func(aggregator.Event) error { return nil }); !errors.Is(err, aggregator.ErrEventID) {
			t.Errorf("Events(after %q) error = %v; want ErrEventID", bad, err)
		}
	}
}

func TestOpenBatches(t *testing.T) {
	t.Parallel()
	agg, _ := setup(t, aggregator.Config{})
	ctx := context.Background()
	base := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	for i := range 3 {
		_, err := agg.Create(ctx, aggregator.Batch{ID: fmt.Sprint("o", i), Hosts: []string{"127.0.0.1"},
			Deadline: base.Add(time.Duration(2-i) * time.Minute), CallbackURL: "http://127.0.0.1:1/cb"})
		if err != nil {
			t.Fatal(err)
		}
	}
	open, err := agg.OpenBatches(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range open {
		ids = append(ids, o.ID)
		if o.CallbackURL != "http://127.0.0.1:1/cb" || o.State != aggregator.StateEnqueuing {
			t.Errorf("open batch %+v", o)
		}
	}
	if diff := cmp.Diff([]string{"o2", "o1", "o0"}, ids); diff != "" {
		t.Errorf("open batches by deadline (-want +got):\n%s", diff)
	}
	if err := agg.Close(ctx, "o1"); err != nil {
		t.Fatal(err)
	}
	if open, _ = agg.OpenBatches(ctx, 10); len(open) != 2 {
		t.Errorf("after Close: %d open; want 2", len(open))
	}
	s, err := agg.Summary(ctx, "o0")
	if err != nil || !s.Deadline.Equal(base.Add(2*time.Minute)) {
		t.Errorf("deadline = %v, %v; want %v", s.Deadline, err, base.Add(2*time.Minute))
	}
	if d := aggregator.DefaultDeadline(base, 2500, tasks.PingOptions{Count: 1}); !d.Equal(base.Add(5*time.Minute + 3*500*time.Millisecond)) {
		t.Errorf("DefaultDeadline = %v", d.Sub(base))
	}
}

// ExpireOverdue expires a batch past its fixed deadline, and one whose
// deadline follows its progress only once no result came for its idle
// timeout, as the janitor does; a final batch stays as it is.
func TestExpireOverdue(t *testing.T) {
	t.Parallel()
	now := time.Now()
	agg, _ := setup(t, aggregator.Config{Now: func() time.Time { return now }})
	ctx := context.Background()
	hs := hosts(3)
	opts := tasks.PingOptions{Count: 1}
	for _, b := range []aggregator.Batch{
		{ID: "fixed", Hosts: hs, Options: opts, Deadline: now.Add(time.Minute)},
		{ID: "follows", Hosts: hs, Options: opts},
	} {
		if _, err := agg.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	created := now
	check := func(id string, want bool) {
		t.Helper()
		if got, err := agg.ExpireOverdue(ctx, id); err != nil || got != want {
			t.Errorf("at +%s, ExpireOverdue(%s) = %v, %v; want %v", now.Sub(created), id, got, err, want)
		}
	}
	check("fixed", false)
	check("follows", false)
	now = created.Add(2 * time.Minute) // a result, two minutes in
	if _, err := agg.Record(ctx, "follows", up(hs[0], 1)); err != nil {
		t.Fatal(err)
	}
	idle := aggregator.IdleTimeout(opts.Normalize())
	s, _ := agg.Progress(ctx, "follows")
	// Past its first deadline, but its last result came less than the
	// idle timeout ago: still draining.
	now = s.Deadline.Add(time.Second)
	check("follows", false)
	check("fixed", true)
	check("fixed", false) // final now
	now = now.Add(idle)
	check("follows", true)
	for _, id := range []string{"fixed", "follows"} {
		if s, err := agg.Summary(ctx, id); err != nil || s.State != aggregator.StateExpired {
			t.Errorf("batch %s: %+v, %v; want expired", id, s, err)
		}
	}
}
