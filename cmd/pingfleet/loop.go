package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/report"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// loopFlags are run's fping -l and -Q.
type loopFlags struct {
	loop    bool
	rounds  int
	summary time.Duration // -Q
}

func (l *loopFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.BoolVarP(&l.loop, "loop", "l", false, "ping the hosts again and again, one request each per --interval, as fping -l, until interrupted (or --rounds); each round is a batch; then print each host's totals")
	fs.IntVar(&l.rounds, "rounds", 0, "with --loop: stop after this many rounds (0: until interrupted)")
	fs.VarP(secDuration{&l.summary}, "squiet", "Q", "as -q, and this often print on stderr: with --loop, each host's figures since the last time, as fping -Q; without, a progress line; a bare number is seconds, as fping -Q's")
}

// check refuses what loop mode cannot do, and returns the output format
// it prints in.
func (l *loopFlags) check(cmd *cobra.Command, bf *batchFlags, output string) (string, error) {
	if !l.loop {
		if cmd.Flags().Changed("rounds") {
			return output, usageErr("--rounds needs --loop")
		}
		return output, nil
	}
	switch {
	case bf.fs.Changed("count"), bf.fs.Changed("vcount"):
		return output, usageErr("--loop sends one request per host and round: it excludes --count and --vcount, as in fping")
	case bf.fs.Changed("batch-id"):
		return output, usageErr("--loop gives each round a batch ID of its own: it excludes --batch-id")
	case l.rounds < 0:
		return output, usageErr("--rounds %d: must be 0 (until interrupted) or more", l.rounds)
	case len(bf.labels) > aggregator.MaxLabels-len(loopLabels):
		return output, usageErr("--label: at most %d with --loop, which adds %v to each round", aggregator.MaxLabels-len(loopLabels), loopLabels)
	}
	for _, kv := range bf.labels {
		for _, k := range loopLabels {
			if strings.HasPrefix(kv, k+"=") {
				return output, usageErr("--label %s: --loop sets %q itself", kv, k)
			}
		}
	}
	if output == "json" {
		if cmd.Flags().Changed("output") {
			return output, usageErr("--loop streams its results: use --output ndjson, csv or table")
		}
		output = "ndjson" // the default off a terminal, as a stream
	}
	return output, nil
}

// loopLabels are the labels loop gives each round's batch: its number,
// and from the second on, the first round's batch ID.
var loopLabels = []string{"round", "loop"}

// loopRetention is how long a round's batch is kept when --loop is given
// no --retention: a loop every second would otherwise keep 86,400 batches
// a day for a week.
const loopRetention = time.Hour

// loop runs batch b in rounds, as fping -l does: one request per host a
// round, a round every b's interval (or right after the last one, when a
// round takes longer). Each round's results are printed as they are read
// (none with -q or -Q); at the end, interrupted or after --rounds, each
// host's totals go to stderr in fping's layout. Interrupting is the way a
// loop ends, so it exits as fping does: 0 if every host answered at
// least once, 1 if some host never did, 2 if some name never resolved.
func (a *app) loop(ctx context.Context, rdb redis.UniversalClient, agg *aggregator.Aggregator, b enqueuer.Batch, pace enqueuer.Config, rf *reportFlags, lf *loopFlags) error {
	b.Options.Count, b.Options.Retries, b.Options.Backoff = 1, 0, 0
	period := b.Options.Interval.D()
	quiet := rf.quiet || lf.summary > 0
	var rw *report.ResultWriter
	if !quiet {
		rw = report.NewResultWriter(a.stdout, a.output, rf.table())
	}
	only, _ := rf.statuses()
	totals := newLoopTotals(b.Hosts)
	interval := newLoopTotals(b.Hosts)
	lastReport := time.Now()
	first := ""
	noProgress := *rf
	noProgress.quiet = true // rounds are short; their rows are the progress
	next := time.Now()
	for round := 1; lf.rounds == 0 || round <= lf.rounds; round++ {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(next)):
		}
		if ctx.Err() != nil {
			break
		}
		next = time.Now().Add(period)
		rb := b
		rb.Labels = maps.Clone(b.Labels)
		if rb.Labels == nil {
			rb.Labels = map[string]string{}
		}
		rb.Labels["round"] = strconv.Itoa(round)
		if first != "" {
			rb.Labels["loop"] = first // the first round's batch ID
		}
		sub, err := a.start(ctx, rdb, agg, rb, pace)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		if first == "" {
			first = sub.ID
		}
		s, err := a.wait(ctx, agg, sub.ID, sub, &noProgress)
		if ctx.Err() != nil {
			a.abandon(rdb, agg, sub.ID) // the round in progress is not counted
			break
		}
		if err != nil {
			return err
		}
		if !s.Started.IsZero() { // a host's next request -p after its last, not after the round's set-up
			next = s.Started.Add(period)
		}
		write := func(r aggregator.Result) error {
			totals.add(r)
			interval.add(r)
			if rw != nil && (len(only) == 0 || slices.Contains(only, r.Status)) {
				return rw.Write(r)
			}
			return nil
		}
		totals.start()
		interval.start()
		if err := agg.Results(ctx, s.ID, write); err != nil {
			if ctx.Err() != nil {
				break
			}
			return systemErr(fmt.Errorf("read round %d's results: %w", round, err))
		}
		if rw != nil {
			if err := rw.Flush(); err != nil {
				return systemErr(err)
			}
		}
		if lf.summary > 0 && time.Since(lastReport) >= lf.summary {
			lastReport = time.Now()
			fmt.Fprintf(a.stderr, "[%s]\n", lastReport.Format("15:04:05"))
			interval.write(a.stderr)
			interval = newLoopTotals(b.Hosts)
		}
	}
	if rw != nil {
		if err := rw.Close(); err != nil {
			return systemErr(err)
		}
	}
	if rw != nil || lf.summary > 0 {
		fmt.Fprintln(a.stderr)
	}
	totals.write(a.stderr)
	return exitWith(totals.code())
}

// abandon cancels the round an interrupt cut short, on a Redis that
// outlives the command (its own Redis ends with it anyway), so that the
// fleet's other workers do not go on with it.
func (a *app) abandon(rdb redis.UniversalClient, agg *aggregator.Aggregator, id string) {
	if a.local != nil {
		return
	}
	_, canceller, err := a.lifecycle(rdb, agg)
	if err != nil {
		return
	}
	defer canceller.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := canceller.Cancel(ctx, id); err != nil {
		fmt.Fprintf(a.stderr, "pingfleet: could not cancel the interrupted round %s: %v\n", id, err)
	}
}

// loopTotals are each host's figures over the rounds of a loop, as fping
// keeps them: requests, replies, and the min, sum and max of the RTTs.
type loopTotals struct {
	hosts []string
	stats []hostTotals
	next  int // the position of the next result of the round being read
}

type hostTotals struct {
	sent, received int
	unresolved     bool
	min, max, sum  float64 // ms
}

func newLoopTotals(hosts []string) *loopTotals {
	return &loopTotals{hosts: hosts, stats: make([]hostTotals, len(hosts))}
}

// start begins a round: its results come in submission order.
func (t *loopTotals) start() { t.next = 0 }

func (t *loopTotals) add(r aggregator.Result) {
	if t.next >= len(t.stats) {
		return
	}
	h := &t.stats[t.next]
	t.next++
	h.sent += r.Sent
	h.received += r.Received
	if r.Status == aggregator.StatusError && r.IP == "" {
		h.unresolved = true
	}
	if r.Received == 0 {
		return
	}
	if h.received == r.Received || r.RTTMin < h.min {
		h.min = r.RTTMin
	}
	h.max = math.Max(h.max, r.RTTMax)
	h.sum += r.RTTAvg * float64(r.Received)
}

// write prints each host's line as fping's -c, -l and -Q summaries do:
// "host : xmt/rcv/%loss = 5/4/20%, min/avg/max = 0.03/0.05/0.08".
func (t *loopTotals) write(w io.Writer) {
	width := 0
	for _, h := range t.hosts {
		width = max(width, len(h))
	}
	for i, h := range t.hosts {
		st := t.stats[i]
		loss := 0
		if st.sent > 0 {
			loss = int(math.Round(aggregator.LossPct(st.sent, st.received)))
		}
		line := fmt.Sprintf("%-*s : xmt/rcv/%%loss = %d/%d/%d%%", width, h, st.sent, st.received, loss)
		if st.received > 0 {
			line += fmt.Sprintf(", min/avg/max = %s/%s/%s", report.HumanMs(st.min), report.HumanMs(st.sum/float64(st.received)), report.HumanMs(st.max))
		}
		fmt.Fprintln(w, line)
	}
}

// code is the loop's exit code, as fping's: 0 if every host answered at
// least once, 2 if some name never resolved, else 1.
func (t *loopTotals) code() int {
	code := ExitOK
	for _, st := range t.stats {
		switch {
		case st.received > 0:
		case st.unresolved && st.sent == 0:
			return ExitUnresolved
		default:
			code = ExitDown
		}
	}
	return code
}
