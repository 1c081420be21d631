package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
)

// resultWriter streams results in one output format, so that a batch of any
// size is printed without holding it in memory.
type resultWriter struct {
	format string
	bw     *bufio.Writer
	tw     *tabwriter.Writer
	cw     *csv.Writer
	n      int
	err    error
}

func newResultWriter(w io.Writer, format string) *resultWriter {
	rw := &resultWriter{format: format, bw: bufio.NewWriter(w)}
	switch format {
	case "table":
		rw.tw = tabwriter.NewWriter(rw.bw, 0, 0, 2, ' ', 0)
		fmt.Fprintln(rw.tw, "HOST\tIP\tSTATUS\tSENT\tRECV\tLOSS\tMIN\tAVG\tMAX\tSTDDEV\tERROR")
	case "csv":
		rw.cw = csv.NewWriter(rw.bw)
		rw.err = rw.cw.Write(csvHeader)
	case "json":
		_, rw.err = rw.bw.WriteString("[")
	}
	return rw
}

var csvHeader = []string{"host", "ip", "status", "sent", "received", "loss_pct",
	"rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "rtt_stddev_ms", "reply_ttl", "error",
	"attempts", "worker", "started", "finished"}

func (rw *resultWriter) write(r aggregator.Result) error {
	if rw.err != nil {
		return rw.err
	}
	switch rw.format {
	case "table":
		rtt := func(v float64) string {
			if r.Received == 0 {
				return "-"
			}
			return fmtMs(v)
		}
		_, rw.err = fmt.Fprintf(rw.tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Host, dash(r.IP), r.Status, r.Sent, r.Received, fmtPct(r.LossPct),
			rtt(r.RTTMin), rtt(r.RTTAvg), rtt(r.RTTMax), rtt(r.RTTStdev), r.Error)
	case "csv":
		rw.err = rw.cw.Write([]string{r.Host, r.IP, string(r.Status), strconv.Itoa(r.Sent),
			strconv.Itoa(r.Received), fmtFloat(r.LossPct), fmtFloat(r.RTTMin), fmtFloat(r.RTTAvg),
			fmtFloat(r.RTTMax), fmtFloat(r.RTTStdev), strconv.Itoa(r.ReplyTTL), r.Error,
			strconv.Itoa(r.Attempts), r.Worker, fmtTime(r.Started), fmtTime(r.Finished)})
	case "json":
		if rw.n > 0 {
			rw.bw.WriteString(",")
		}
		rw.bw.WriteString("\n  ")
		rw.err = json.NewEncoder(rw.bw).Encode(r)
	default: // ndjson
		rw.err = json.NewEncoder(rw.bw).Encode(r)
	}
	rw.n++
	return rw.err
}

// close ends the list and flushes it.
func (rw *resultWriter) close() error {
	if rw.err != nil {
		return rw.err
	}
	switch rw.format {
	case "table":
		rw.err = rw.tw.Flush()
	case "csv":
		rw.cw.Flush()
		rw.err = rw.cw.Error()
	case "json":
		_, rw.err = rw.bw.WriteString("]\n")
	}
	if rw.err != nil {
		return rw.err
	}
	return rw.bw.Flush()
}

// writeReport prints a finished batch: each result (unless quiet), then the
// summary. In json it is one object {"results": [...], "summary": {...}};
// in ndjson the summary is a last line {"summary": {...}}; csv holds the
// results only, and the summary goes to errw as text.
func writeReport(ctx context.Context, w, errw io.Writer, format string, agg resultSource, s aggregator.Summary, quiet bool) error {
	if format == "json" {
		if _, err := io.WriteString(w, `{"results": `); err != nil {
			return err
		}
		if quiet {
			io.WriteString(w, "[]\n")
		} else if err := streamResults(ctx, w, format, agg, s.ID); err != nil {
			return err
		}
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, `, "summary": %s}`+"\n", b)
		return err
	}
	if !quiet {
		if err := streamResults(ctx, w, format, agg, s.ID); err != nil {
			return err
		}
	}
	switch format {
	case "table":
		if !quiet {
			fmt.Fprintln(w)
		}
		return writeSummary(w, format, s)
	case "ndjson":
		return json.NewEncoder(w).Encode(map[string]any{"summary": s})
	default: // csv
		return writeSummary(errw, "table", s)
	}
}

// resultSource is the part of the aggregator that lists results.
type resultSource interface {
	Results(ctx context.Context, id string, fn func(aggregator.Result) error, only ...aggregator.Status) error
}

func streamResults(ctx context.Context, w io.Writer, format string, agg resultSource, id string) error {
	rw := newResultWriter(w, format)
	if err := agg.Results(ctx, id, rw.write); err != nil {
		return err
	}
	return rw.close()
}

// writeSummary prints one batch summary.
func writeSummary(w io.Writer, format string, s aggregator.Summary) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	case "ndjson":
		return json.NewEncoder(w).Encode(s)
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write(summaryHeader)
		cw.Write(summaryRow(s))
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "batch\t%s\n", s.ID)
	fmt.Fprintf(tw, "state\t%s\n", s.State)
	fmt.Fprintf(tw, "hosts\t%d total, %d done, %d pending: %d up, %d down, %d error\n",
		s.Total, s.Done, s.Pending, s.Up, s.Down, s.Error)
	fmt.Fprintf(tw, "packets\t%d sent, %d received, %s loss\n", s.Sent, s.Received, fmtPct(s.LossPct))
	if s.Up > 0 {
		fmt.Fprintf(tw, "rtt (per-host avg)\tp50 %s ms, p90 %s ms, p99 %s ms, max %s ms\n",
			fmtMs(s.RTTP50), fmtMs(s.RTTP90), fmtMs(s.RTTP99), fmtMs(s.RTTMax))
	}
	fmt.Fprintf(tw, "created\t%s\n", fmtTime(s.Created))
	if !s.Finished.IsZero() {
		fmt.Fprintf(tw, "finished\t%s\n", fmtTime(s.Finished))
	}
	fmt.Fprintf(tw, "duration\t%.3fs\n", s.DurationSec)
	return tw.Flush()
}

var summaryHeader = []string{"id", "state", "total", "done", "pending", "up", "down", "error",
	"sent", "received", "loss_pct", "rtt_p50_ms", "rtt_p90_ms", "rtt_p99_ms", "rtt_max_ms",
	"created", "started", "finished", "duration_s"}

func summaryRow(s aggregator.Summary) []string {
	return []string{s.ID, string(s.State), strconv.Itoa(s.Total), strconv.Itoa(s.Done),
		strconv.Itoa(s.Pending), strconv.Itoa(s.Up), strconv.Itoa(s.Down), strconv.Itoa(s.Error),
		strconv.Itoa(s.Sent), strconv.Itoa(s.Received), fmtFloat(s.LossPct), fmtFloat(s.RTTP50),
		fmtFloat(s.RTTP90), fmtFloat(s.RTTP99), fmtFloat(s.RTTMax), fmtTime(s.Created),
		fmtTime(s.Started), fmtTime(s.Finished), fmtFloat(s.DurationSec)}
}

// writeBatches prints a list of batch summaries.
func writeBatches(w io.Writer, format string, list []aggregator.Summary) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if list == nil {
			list = []aggregator.Summary{}
		}
		return enc.Encode(list)
	case "ndjson":
		enc := json.NewEncoder(w)
		for _, s := range list {
			if err := enc.Encode(s); err != nil {
				return err
			}
		}
		return nil
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write(summaryHeader)
		for _, s := range list {
			cw.Write(summaryRow(s))
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tSTATE\tCREATED\tHOSTS\tDONE\tUP\tDOWN\tERROR\tLOSS\tDURATION")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%.1fs\n", s.ID, s.State, fmtTime(s.Created),
			s.Total, s.Done, s.Up, s.Down, s.Error, fmtPct(s.LossPct), s.DurationSec)
	}
	return tw.Flush()
}

func fmtMs(v float64) string    { return strconv.FormatFloat(v, 'f', 3, 64) }
func fmtPct(v float64) string   { return strconv.FormatFloat(v, 'f', 1, 64) + "%" }
func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
