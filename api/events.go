package api

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
)

// keepAlive is how often an idle event stream gets a comment line, so that
// proxies keep it open.
const keepAlive = 15 * time.Second

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	last := cmp.Or(r.Header.Get("Last-Event-ID"), r.URL.Query().Get("last_event_id"))
	if _, _, _, err := aggregator.ParseEventID(last); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), Detail{Field: "Last-Event-ID", Value: last, Reason: "not an event ID this API sent"})
		return
	}
	if _, ok := s.summary(w, r); !ok {
		return
	}
	flusher, _ := w.(http.Flusher)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	for {
		sent := 0
		next, final, err := s.cfg.Aggregator.Events(r.Context(), id, last, keepAlive, func(e aggregator.Event) error {
			sent++
			if e.Type == "result" {
				b, err := json.Marshal(e.Result)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "id: %s\nevent: result\ndata: %s\n\n", e.ID, b)
				if sent%eventsPerFlush == 0 {
					flush()
				}
				return nil
			}
			// The batch is final: send its summary and end the stream.
			final, err := s.cfg.Aggregator.Summary(r.Context(), id)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(final)
			fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", e.ID, "complete", b)
			return nil
		})
		if r.Context().Err() != nil {
			return
		}
		if err != nil {
			fmt.Fprintf(w, "event: error\ndata: %s\n\n", jsonString(err.Error()))
			flush()
			return
		}
		if sent == 0 && !final {
			fmt.Fprint(w, ": keep-alive\n\n")
		}
		flush()
		if final {
			return
		}
		last = next
	}
}

// eventsPerFlush is how many events of a long replay go out per flush.
const eventsPerFlush = 500

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
