package tasks_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/tasks"
)

func TestFleetShards(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	for _, step := range []struct {
		desc     string
		proposed int
		want     int
	}{
		{"the first records its number", 8, 8},
		{"a later one takes it", 16, 8},
		{"whatever it proposes", 1, 8},
	} {
		if got, err := tasks.FleetShards(ctx, rdb, step.proposed); err != nil || got != step.want {
			t.Errorf("%s: FleetShards(%d) = %d, %v; want %d", step.desc, step.proposed, got, err, step.want)
		}
	}
	if _, err := tasks.FleetShards(ctx, rdb, 0); err == nil {
		t.Error("FleetShards(0): no error")
	}
	rdb.Set(ctx, tasks.ShardsKey, "lots", 0)
	if _, err := tasks.FleetShards(ctx, rdb, 8); err == nil || !strings.Contains(err.Error(), "DEL "+tasks.ShardsKey) {
		t.Errorf("a garbled key: %v; want an error that says how to fix it", err)
	}
}
