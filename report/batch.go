package report

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

// BatchOptions say how WriteBatch prints a batch.
type BatchOptions struct {
	Format string // table, csv, json or ndjson
	Quiet  bool   // the summary only
	// Only, if not empty, prints only the results of these statuses.
	Only []aggregator.Status
	Options
}

// WriteBatch prints a finished batch, as run, enqueue --wait and wait do:
// each result (unless quiet), then the summary. In json it is one object
// {"results": [...], "summary": {...}}; in ndjson the summary is a last
// line {"summary": {...}}; csv holds the results only, and the summary goes
// to errw as text.
func WriteBatch(ctx context.Context, w, errw io.Writer, agg ResultSource, s aggregator.Summary, o BatchOptions) error {
	return WriteBatchThen(ctx, w, errw, agg, s.ID, func() (aggregator.Summary, error) { return s, nil }, o)
}

// WriteBatchThen is WriteBatch for batch id, whose summary comes once
// its results are written: from summary, for a source that gives them
// while the batch runs (see Follow).
func WriteBatchThen(ctx context.Context, w, errw io.Writer, agg ResultSource, id string, summary func() (aggregator.Summary, error), o BatchOptions) error {
	if o.Format == "json" {
		if _, err := io.WriteString(w, `{"results": `); err != nil {
			return err
		}
		if o.Quiet {
			if _, err := io.WriteString(w, "[]\n"); err != nil {
				return err
			}
		} else if err := writeResults(ctx, w, agg, id, o); err != nil {
			return err
		}
		s, err := summary()
		if err != nil {
			return err
		}
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, `, "summary": %s}`+"\n", b)
		return err
	}
	if !o.Quiet {
		if err := writeResults(ctx, w, agg, id, o); err != nil {
			return err
		}
	}
	s, err := summary()
	if err != nil {
		return err
	}
	switch o.Format {
	case "table":
		if !o.Quiet {
			fmt.Fprintln(w)
		}
		return WriteSummary(w, o.Format, s)
	case "ndjson":
		return json.NewEncoder(w).Encode(map[string]any{"summary": s})
	default: // csv
		return WriteSummary(errw, "table", s)
	}
}

// ResultSource lists a batch's results in submission order, as
// aggregator.Aggregator does.
type ResultSource interface {
	Results(ctx context.Context, id string, fn func(aggregator.Result) error, only ...aggregator.Status) error
}

func writeResults(ctx context.Context, w io.Writer, agg ResultSource, id string, o BatchOptions) error {
	rw := NewResultWriter(w, o.Format, o.Options)
	if err := agg.Results(ctx, id, rw.Write, o.Only...); err != nil {
		return err
	}
	return rw.Close()
}

// WriteSummary prints one batch summary in format: table (aligned
// name/value lines), csv (SummaryCSVHeader and one row), json or ndjson.
func WriteSummary(w io.Writer, format string, s aggregator.Summary) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	case "ndjson":
		return json.NewEncoder(w).Encode(s)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(SummaryCSVHeader) // csv.Writer keeps the first error for Error
		_ = cw.Write(summaryRow(s))
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(&trimWriter{w: w}, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "batch\t%s\n", s.ID)
	fmt.Fprintf(tw, "state\t%s\n", s.State)
	fmt.Fprintf(tw, "hosts\t%d total, %d done, %d pending: %d up, %d down, %d error, %d cancelled, %d expired\n",
		s.Total, s.Done, s.Pending, s.Up, s.Down, s.Error, s.Cancelled, s.Expired)
	fmt.Fprintf(tw, "packets\t%d sent, %d received, %s loss\n", s.Sent, s.Received, summaryLoss(s))
	if s.Up > 0 {
		fmt.Fprintf(tw, "rtt (per-host avg)\tp50 %s ms, p90 %s ms, p99 %s ms, max %s ms\n",
			FormatMs(s.RTTP50), FormatMs(s.RTTP90), FormatMs(s.RTTP99), FormatMs(s.RTTMax))
	}
	fmt.Fprintf(tw, "options\t%s\n", optionsText(s.Options))
	if len(s.Labels) > 0 {
		fmt.Fprintf(tw, "labels\t%s\n", labelsText(s.Labels))
	}
	if s.CallbackURL != "" {
		fmt.Fprintf(tw, "callback\t%s\n", s.CallbackURL)
	}
	fmt.Fprintf(tw, "created\t%s\n", FormatTime(s.Created))
	if !s.Started.IsZero() {
		fmt.Fprintf(tw, "started\t%s (first ping)\n", FormatTime(s.Started))
	}
	if !s.Finished.IsZero() {
		fmt.Fprintf(tw, "finished\t%s\n", FormatTime(s.Finished))
	}
	if !s.State.Final() && !s.Deadline.IsZero() {
		fmt.Fprintf(tw, "deadline\t%s\n", FormatTime(s.Deadline))
	}
	fmt.Fprintf(tw, "duration\t%.3fs\n", s.DurationSec)
	return tw.Flush()
}

// SummaryCSVHeader names the columns of a summary in CSV.
var SummaryCSVHeader = []string{"id", "state", "total", "done", "pending", "up", "down", "error",
	"cancelled", "expired", "sent", "received", "loss_pct", "rtt_p50_ms", "rtt_p90_ms", "rtt_p99_ms", "rtt_max_ms",
	"created", "started", "finished", "duration_s"}

func summaryRow(s aggregator.Summary) []string {
	return []string{s.ID, string(s.State), strconv.Itoa(s.Total), strconv.Itoa(s.Done),
		strconv.Itoa(s.Pending), strconv.Itoa(s.Up), strconv.Itoa(s.Down), strconv.Itoa(s.Error),
		strconv.Itoa(s.Cancelled), strconv.Itoa(s.Expired), strconv.Itoa(s.Sent), strconv.Itoa(s.Received), csvIf(s.Sent > 0, s.LossPct),
		csvIf(s.Up > 0, s.RTTP50), csvIf(s.Up > 0, s.RTTP90), csvIf(s.Up > 0, s.RTTP99), csvIf(s.Up > 0, s.RTTMax), FormatTime(s.Created),
		FormatTime(s.Started), FormatTime(s.Finished), FormatFloat(s.DurationSec)}
}

// csvIf is v's field, or an empty one when it means nothing (no request
// sent, no host up), as JSON has null.
func csvIf(ok bool, v float64) string {
	if !ok {
		return ""
	}
	return FormatFloat(v)
}

// summaryLoss is s's loss for the table, "-" when nothing was sent.
func summaryLoss(s aggregator.Summary) string {
	if s.Sent == 0 {
		return "-"
	}
	return FormatPct(s.LossPct)
}

// WriteBatches prints a list of batch summaries: a table with one line
// per batch, csv, a JSON array, or one JSON object per line.
func WriteBatches(w io.Writer, format string, list []aggregator.Summary) error {
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
		_ = cw.Write(SummaryCSVHeader) // csv.Writer keeps the first error for Error
		for _, s := range list {
			_ = cw.Write(summaryRow(s))
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(&trimWriter{w: w}, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tSTATE\tCREATED\tHOSTS\tDONE\tUP\tDOWN\tERROR\tCANCELLED\tEXPIRED\tLOSS\tDURATION")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%.1fs\n", s.ID, s.State, FormatTime(s.Created),
			s.Total, s.Done, s.Up, s.Down, s.Error, s.Cancelled, s.Expired, summaryLoss(s), s.DurationSec)
	}
	return tw.Flush()
}

// optionsText says how a batch pings, as its flags would: "count 3,
// interval 1s, timeout 500ms, size 56, ttl 64", then any option set.
func optionsText(o tasks.PingOptions) string {
	o = o.Normalize()
	parts := []string{fmt.Sprintf("count %d, interval %s, timeout %s, size %d, ttl %d", o.Count, o.Interval.D(), o.Timeout.D(), o.Size, o.TTL)}
	if o.Retries > 0 {
		parts[0] = fmt.Sprintf("%d retries (backoff %g) until the first reply, timeout %s, size %d, ttl %d", o.Retries, o.Backoff, o.Timeout.D(), o.Size, o.TTL)
	}
	if o.Network != tasks.NetworkIP {
		parts = append(parts, "network "+o.Network)
	}
	if o.TOS != 0 {
		parts = append(parts, fmt.Sprintf("tos %#x", o.TOS))
	}
	if o.DontFragment {
		parts = append(parts, "don't fragment")
	}
	if o.Source != "" {
		parts = append(parts, "source "+o.Source)
	}
	if o.Interface != "" {
		parts = append(parts, "interface "+o.Interface)
	}
	if o.Mark != 0 {
		parts = append(parts, fmt.Sprintf("mark %d", o.Mark))
	}
	if o.Names {
		parts = append(parts, "reverse names")
	}
	if o.BatchRate != 0 {
		parts = append(parts, fmt.Sprintf("batch rate %d/s", o.BatchRate))
	}
	return strings.Join(parts, ", ")
}

// labelsText lists labels as key=value, sorted by key.
func labelsText(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ", ")
}
