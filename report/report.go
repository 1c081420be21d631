// Package report writes batch results in the formats people and programs
// read: an aligned table, CSV, a JSON array or newline-delimited JSON. The
// CLI and the HTTP API stream through it.
package report

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
)

// ResultWriter streams results in one output format (table, csv, json or
// ndjson), so that a batch of any size is written without holding it in
// memory.
type ResultWriter struct {
	format string
	bw     *bufio.Writer
	tw     *tabwriter.Writer
	cw     *csv.Writer
	n      int
	err    error
}

// NewResultWriter starts a list of results in format on w; call Close to
// end it.
func NewResultWriter(w io.Writer, format string) *ResultWriter {
	rw := &ResultWriter{format: format, bw: bufio.NewWriter(w)}
	switch format {
	case "table":
		rw.tw = tabwriter.NewWriter(&trimWriter{w: rw.bw}, 0, 0, 2, ' ', 0)
		fmt.Fprintln(rw.tw, "HOST\tIP\tSTATUS\tSENT\tRECV\tLOSS\tMIN\tAVG\tMAX\tSTDDEV\tERROR")
	case "csv":
		rw.cw = csv.NewWriter(rw.bw)
		rw.err = rw.cw.Write(CSVHeader)
	case "json":
		_, rw.err = rw.bw.WriteString("[")
	}
	return rw
}

// CSVHeader is the header row of results in CSV.
var CSVHeader = []string{"host", "ip", "status", "sent", "received", "loss_pct",
	"rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "rtt_stddev_ms", "reply_ttl", "error",
	"attempts", "worker", "started", "finished"}

// Write adds one result.
func (rw *ResultWriter) Write(r aggregator.Result) error {
	if rw.err != nil {
		return rw.err
	}
	switch rw.format {
	case "table":
		rtt := func(v float64) string {
			if r.Received == 0 {
				return "-"
			}
			return FormatMs(v)
		}
		_, rw.err = fmt.Fprintf(rw.tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Host, dash(r.IP), r.Status, r.Sent, r.Received, FormatPct(r.LossPct),
			rtt(r.RTTMin), rtt(r.RTTAvg), rtt(r.RTTMax), rtt(r.RTTStdev), r.Error)
	case "csv":
		rw.err = rw.cw.Write([]string{r.Host, r.IP, string(r.Status), strconv.Itoa(r.Sent),
			strconv.Itoa(r.Received), FormatFloat(r.LossPct), FormatFloat(r.RTTMin), FormatFloat(r.RTTAvg),
			FormatFloat(r.RTTMax), FormatFloat(r.RTTStdev), strconv.Itoa(r.ReplyTTL), r.Error,
			strconv.Itoa(r.Attempts), r.Worker, FormatTime(r.Started), FormatTime(r.Finished)})
	case "json":
		if rw.n > 0 {
			_ = rw.bw.WriteByte(',') // bufio.Writer keeps the first error for Flush
		}
		_, _ = rw.bw.WriteString("\n  ")
		rw.err = json.NewEncoder(rw.bw).Encode(r)
	default: // ndjson
		rw.err = json.NewEncoder(rw.bw).Encode(r)
	}
	rw.n++
	return rw.err
}

// Close ends the list and flushes it.
func (rw *ResultWriter) Close() error {
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

// FormatMs formats milliseconds with 3 decimals.
func FormatMs(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

// FormatPct formats a percentage with 1 decimal.
func FormatPct(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + "%" }

// FormatFloat formats v with as many digits as it needs.
func FormatFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// FormatTime formats t as RFC 3339 in UTC, or "" when zero.
func FormatTime(t time.Time) string {
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
