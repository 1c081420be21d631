package api

import (
	"errors"
	"net/http"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/notify"
)

// cancelBatch answers DELETE /v1/batches/{id}: 200 with the batch once it
// is cancelled (again, if it already was), 404 for an unknown batch, 409
// for one that ended otherwise.
func (s *Server) cancelBatch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sum, err := s.cfg.Canceller.Cancel(r.Context(), id)
	var final *notify.FinalError
	switch {
	case errors.Is(err, aggregator.ErrNotFound):
		writeError(w, http.StatusNotFound, "batch "+id+" not found")
	case errors.As(err, &final):
		writeError(w, http.StatusConflict, final.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, withProgress(sum))
	}
}
