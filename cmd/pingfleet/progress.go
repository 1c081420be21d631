package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pingfleet/pingfleet/aggregator"
)

// DefaultProgressInterval is how often a command that waits for a batch
// prints a progress line when stderr is not a terminal (a CI log, say).
const DefaultProgressInterval = 10 * time.Second

// progress shows how a batch advances: a bar on a terminal; otherwise a
// line every interval (none when it is 0). The rate is the batch's pace
// since its first ping (so a burst of first results, or a command
// attached mid-batch, does not skew it), and the time left follows from
// it; neither is shown before the first result.
type progress struct {
	w        io.Writer
	bar      *progressbar.ProgressBar
	interval time.Duration
	now      func() time.Time

	lastLine time.Time
}

func newProgress(w io.Writer, terminal bool, total int, interval time.Duration) *progress {
	p := &progress{w: w, interval: interval, now: time.Now}
	if terminal {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(false), // ours, from the first result on
			progressbar.OptionSetElapsedTime(false),
			progressbar.OptionThrottle(100*time.Millisecond),
		)
	}
	p.lastLine = p.now()
	return p
}

// update shows s, the batch's progress now.
func (p *progress) update(s aggregator.Summary) {
	now := p.now()
	counts := fmt.Sprintf("%d up, %d down, %d error", s.Up, s.Down, s.Error)
	if n := s.Cancelled + s.Expired; n > 0 {
		counts += fmt.Sprintf(", %d not pinged", n)
	}
	pace := ""
	if el := now.Sub(s.Started); s.Done > 0 && !s.Started.IsZero() && el > 0 {
		rate := float64(s.Done) / el.Seconds()
		pace = ", " + hostsPerSecond(rate)
		if left := s.Total - s.Done; left > 0 {
			pace += ", " + (time.Duration(float64(left) / rate * float64(time.Second))).Round(time.Second).String() + " left"
		}
	}
	if p.bar != nil {
		p.bar.Describe(counts + pace)
		_ = p.bar.Set(s.Done)
		return
	}
	if p.interval > 0 && now.Sub(p.lastLine) >= p.interval {
		p.lastLine = now
		fmt.Fprintf(p.w, "pingfleet: batch %s: %d of %d done (%s%s)\n", s.ID, s.Done, s.Total, counts, pace)
	}
}

// hostsPerSecond writes rate for humans: whole hosts from 10 a second up,
// two significant digits below ("0.5 hosts/s", not "1 hosts/s").
func hostsPerSecond(rate float64) string {
	if rate >= 10 {
		return fmt.Sprintf("%.0f hosts/s", rate)
	}
	return strconv.FormatFloat(rate, 'g', 2, 64) + " hosts/s"
}

// end leaves the bar as it is: finished when the batch is, where it
// stopped when it was interrupted.
func (p *progress) end(finished bool) {
	if p.bar == nil {
		return
	}
	if finished {
		_ = p.bar.Finish()
	} else {
		_ = p.bar.Exit()
	}
	fmt.Fprintln(p.w)
}
