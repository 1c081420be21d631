package api

import (
	"cmp"
	"errors"
	"net/http"
	"strings"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/report"
)

func (s *Server) results(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := cmp.Or(q.Get("format"), "json")
	switch format {
	case "json", "ndjson", "csv":
	default:
		writeError(w, http.StatusBadRequest, "format must be json, ndjson or csv", Detail{Field: "format", Value: format, Reason: "unknown format"})
		return
	}
	var only []aggregator.Status
	for _, st := range q["status"] {
		for _, one := range strings.Split(st, ",") {
			switch v := aggregator.Status(one); v {
			case aggregator.StatusUp, aggregator.StatusDown, aggregator.StatusError, aggregator.StatusPending, aggregator.StatusCancelled, aggregator.StatusExpired:
				only = append(only, v)
			default:
				writeError(w, http.StatusBadRequest, "unknown status "+one, Detail{Field: "status", Value: one, Reason: "use up, down, error, pending, cancelled or expired"})
				return
			}
		}
	}
	id := r.PathValue("id")
	ct := map[string]string{"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}[format]
	w.Header().Set("Content-Type", ct)
	rw := report.NewResultWriter(w, format, report.Options{}) // buffers until the first result
	started := false
	err := s.cfg.Aggregator.Results(r.Context(), id, func(res aggregator.Result) error {
		started = true
		return rw.Write(res)
	}, only...)
	switch {
	case err == nil:
		_ = rw.Close()
	case started:
		// Streamed: a failure after the first byte can only cut the body short.
		s.cfg.Logger.Warn("results stream cut", "batch", id, "error", err)
	case errors.Is(err, aggregator.ErrNotFound):
		writeError(w, http.StatusNotFound, "batch "+id+" not found")
	default:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	}
}
