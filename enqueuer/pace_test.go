package enqueuer

import (
	"testing"
	"time"
)

// The window grows to what the fleet completes in Ahead, measured over a
// second or more, and never shrinks below its least size.
func TestPacerWindow(t *testing.T) {
	t.Parallel()
	p := &pacer{least: 1000, ahead: 10 * time.Second, window: 1000, free: make(chan struct{})}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at   time.Duration
		done int
		want int
	}{
		{0, 100, 1000},                       // the first reading: no rate yet
		{500 * time.Millisecond, 5000, 1000}, // less than a second: not yet
		{time.Second, 20100, 200000},         // 20,000 in a second: 10 s of them
		{1500 * time.Millisecond, 20100, 200000},
		{3 * time.Second, 20150, 1000}, // 50 in 2 s: back to the least
	}
	for _, s := range steps {
		p.update(s.done, t0.Add(s.at))
		if p.window != s.want {
			t.Errorf("at %v with %d done: window %d; want %d", s.at, s.done, p.window, s.want)
		}
	}
	if p.update(20150, t0.Add(4*time.Second)) {
		t.Error("update reported new results when there were none")
	}
}
