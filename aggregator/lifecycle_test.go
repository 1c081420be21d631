package aggregator_test

import (
	"context"
	"errors"
	"fmt"
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

func TestEventsResume(t *testing.T) {
	t.Parallel()
	agg, _ := setup(t, aggregator.Config{})
	ctx := context.Background()
	hs := hosts(5)
	create(t, agg, "ev", hs)
	for _, h := range hs {
		if _, err := agg.Record(ctx, "ev", up(h, 1)); err != nil {
			t.Fatal(err)
		}
	}
	first, err := agg.Events(ctx, "ev", "", 2, 0)
	if err != nil || len(first) != 2 {
		t.Fatalf("first page = %v, %v", first, err)
	}
	rest, err := agg.Events(ctx, "ev", first[1].ID, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range append(first, rest...) {
		types = append(types, e.Type)
	}
	if diff := cmp.Diff([]string{"result", "result", "result", "result", "result", "complete"}, types); diff != "" {
		t.Errorf("event types (-want +got):\n%s", diff)
	}
	// Blocking read past the end times out empty.
	start := time.Now()
	more, err := agg.Events(ctx, "ev", rest[len(rest)-1].ID, 10, 50*time.Millisecond)
	if err != nil || len(more) != 0 || time.Since(start) < 40*time.Millisecond {
		t.Errorf("blocking read past the end = %v, %v after %s", more, err, time.Since(start))
	}
}

func TestOpenBatches(t *testing.T) {
	t.Parallel()
	agg, _ := setup(t, aggregator.Config{})
	ctx := context.Background()
	base := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	for i := range 3 {
		_, err := agg.Create(ctx, aggregator.NewBatch{ID: fmt.Sprint("o", i), Hosts: []string{"127.0.0.1"},
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
	if d := aggregator.DefaultDeadline(base, 2500, tasks.PingOptions{}); !d.Equal(base.Add(5*time.Minute + 3*500*time.Millisecond)) {
		t.Errorf("DefaultDeadline = %v", d.Sub(base))
	}
}
