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
	"strings"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
)

// ResultWriter streams results in one output format (table, csv, json or
// ndjson), so that a batch of any size is written without holding it in
// memory.
type ResultWriter struct {
	format string
	stamp  func(time.Time) string // the table's time column, if any
	stampW int                    // its width
	bw     *bufio.Writer
	tw     io.Writer // the table's rows
	cw     *csv.Writer
	n      int
	err    error
}

// Options are how a ResultWriter writes besides the format.
type Options struct {
	// Timestamps, in the table, puts first on each row the time its host's
	// ping ended, as fping -D does: "unix" (seconds since 1970, as fping's
	// [1764612345.678]), "iso" (local time, 2026-12-01T17:24:11+01:00),
	// "rfc3339" (UTC, to the millisecond) or "ctime" (Tue Dec  1 17:24:11 2026);
	// "" for none. JSON and CSV always hold the start and end times.
	Timestamps string
}

// TimestampFormats are the values Options.Timestamps takes, "" aside.
var TimestampFormats = []string{"unix", "iso", "rfc3339", "ctime"}

// stamper returns the formatter of a time column in format, nil for none.
func stamper(format string) (func(time.Time) string, error) {
	var f func(time.Time) string
	switch format {
	case "":
		return nil, nil
	case "unix":
		f = func(t time.Time) string { return fmt.Sprintf("[%d.%03d]", t.Unix(), t.Nanosecond()/1e6) }
	case "iso":
		f = func(t time.Time) string { return t.Local().Format("2006-01-02T15:04:05-07:00") }
	case "rfc3339":
		f = func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }
	case "ctime":
		f = func(t time.Time) string { return t.Local().Format(time.ANSIC) }
	default:
		return nil, fmt.Errorf("timestamps %q: use %s", format, strings.Join(TimestampFormats, ", "))
	}
	return func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return f(t)
	}, nil
}

// CheckOptions returns an error naming what is wrong in o.
func CheckOptions(o Options) error {
	_, err := stamper(o.Timestamps)
	return err
}

// NewResultWriter starts a list of results in format on w; call Close to
// end it.
func NewResultWriter(w io.Writer, format string, o Options) *ResultWriter {
	rw := &ResultWriter{format: format, bw: bufio.NewWriter(w)}
	switch format {
	case "table":
		rw.tw = &trimWriter{w: rw.bw}
		if rw.stamp, rw.err = stamper(o.Timestamps); rw.err != nil {
			return rw
		}
		if rw.stamp != nil {
			rw.stampW = len(rw.stamp(time.Unix(1796145853, 0))) // every time's, in this century
			_, rw.err = fmt.Fprintf(rw.tw, "%-*s  ", rw.stampW, "TIME")
		}
		_, rw.err = fmt.Fprintf(rw.tw, tableRow, "HOST", "IP", "STATUS", "SENT", "RECV", "LOSS", "MIN ms", "AVG ms", "MAX ms", "SD ms", "TTL", "ERROR")
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
	"attempts", "worker", "started", "finished", "rtts_ms", "name"}

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
			return HumanMs(v)
		}
		loss, ttl := "-", "-"
		if r.Sent > 0 {
			loss = FormatPct(r.LossPct)
		}
		if r.Received > 0 {
			ttl = strconv.Itoa(r.ReplyTTL)
		}
		errText := r.Error
		if r.RTTs != nil { // each request's, as fping -C prints them
			errText = strings.TrimSpace("each " + rttList(r.RTTs, HumanMs) + "  " + errText)
		}
		if rw.stamp != nil {
			_, rw.err = fmt.Fprintf(rw.tw, "%-*s  ", rw.stampW, rw.stamp(r.Finished))
		}
		host := r.Host
		if r.Name != "" { // as fping -n: the address's name stands for it
			host = r.Name
		}
		_, rw.err = fmt.Fprintf(rw.tw, tableRow, host, dash(r.IP), r.Status, strconv.Itoa(r.Sent), strconv.Itoa(r.Received), loss,
			rtt(r.RTTMin), rtt(r.RTTAvg), rtt(r.RTTMax), rtt(r.RTTStdev), ttl, errText)
	case "csv":
		// Empty, not 0, where there is no figure: no request sent, no reply.
		loss, ttl := "", ""
		rtt := [4]string{}
		if r.Sent > 0 {
			loss = FormatFloat(r.LossPct)
		}
		if r.Received > 0 {
			rtt = [4]string{FormatFloat(r.RTTMin), FormatFloat(r.RTTAvg), FormatFloat(r.RTTMax), FormatFloat(r.RTTStdev)}
			ttl = strconv.Itoa(r.ReplyTTL)
		}
		rw.err = rw.cw.Write([]string{r.Host, r.IP, string(r.Status), strconv.Itoa(r.Sent),
			strconv.Itoa(r.Received), loss, rtt[0], rtt[1], rtt[2], rtt[3], ttl, r.Error,
			strconv.Itoa(r.Attempts), r.Worker, FormatTime(r.Started), FormatTime(r.Finished), rttList(r.RTTs, FormatFloat), r.Name})
	case "json":
		var b []byte
		if b, rw.err = json.Marshal(r); rw.err == nil {
			if rw.n > 0 {
				_ = rw.bw.WriteByte(',') // bufio.Writer keeps the first error for Flush
			}
			_, _ = rw.bw.WriteString("\n  ")
			_, rw.err = rw.bw.Write(b)
		}
	default: // ndjson
		rw.err = json.NewEncoder(rw.bw).Encode(r)
	}
	rw.n++
	return rw.err
}

// Flush writes out what is buffered, so that a reader sees the rows so far.
func (rw *ResultWriter) Flush() error {
	if rw.err != nil {
		return rw.err
	}
	if rw.cw != nil {
		rw.cw.Flush()
		if rw.err = rw.cw.Error(); rw.err != nil {
			return rw.err
		}
	}
	rw.err = rw.bw.Flush()
	return rw.err
}

// Close ends the list and flushes it.
func (rw *ResultWriter) Close() error {
	if rw.err != nil {
		return rw.err
	}
	switch rw.format {
	case "csv":
		rw.cw.Flush()
		rw.err = rw.cw.Error()
	case "json":
		end := "\n]\n"
		if rw.n == 0 {
			end = "]\n"
		}
		_, rw.err = rw.bw.WriteString(end)
	}
	if rw.err != nil {
		return rw.err
	}
	return rw.bw.Flush()
}

// tableRow lays out a row of the results table in fixed columns, so that
// rows go out as they come, whatever the batch's size: a host name or
// address longer than its column pushes the rest of its row along.
const tableRow = "%-22s  %-15s  %-9s  %4s  %4s  %6s  %7s  %7s  %7s  %7s  %3s  %s\n"

// HumanMs formats milliseconds to about four significant digits, for
// people: 0.412, 51.23, 152.1, 1523.
func HumanMs(v float64) string {
	switch {
	case v < 10:
		return strconv.FormatFloat(v, 'f', 3, 64)
	case v < 100:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 1000:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// FormatMs formats milliseconds with 3 decimals.
func FormatMs(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

// FormatPct formats a percentage with 1 decimal.
func FormatPct(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + "%" }

// FormatFloat formats v with as many digits as it needs.
func FormatFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// FormatTime formats t as RFC 3339 in UTC with milliseconds, the
// precision batches keep, always three digits so columns line up; "" when
// zero.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// rttList writes each request's RTT with format, "-" for a lost one,
// space-separated as fping -C does.
func rttList(rtts []float64, format func(float64) string) string {
	parts := make([]string, len(rtts))
	for i, v := range rtts {
		parts[i] = "-"
		if v >= 0 {
			parts[i] = format(v)
		}
	}
	return strings.Join(parts, " ")
}
