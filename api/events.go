package api

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
)

// StreamWriteTimeout bounds each write of an event stream: a client that
// reads nothing for that long is dropped.
const StreamWriteTimeout = 30 * time.Second

// keepAlive is how often an idle event stream gets a comment line, so that
// proxies keep it open.
const keepAlive = 15 * time.Second

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, cancelStream := context.WithCancel(r.Context())
	defer cancelStream()
	r = r.WithContext(ctx) // a failed write ends the stream
	last := cmp.Or(r.Header.Get("Last-Event-ID"), r.URL.Query().Get("last_event_id"))
	if _, _, _, err := aggregator.ParseEventID(last); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), Detail{Field: "Last-Event-ID", Value: last, Reason: "not an event ID this API sent"})
		return
	}
	if _, ok := s.summary(w, r); !ok {
		return
	}
	// A stream outlives the server's write timeout: each write gets a
	// deadline of its own instead, so a client that stops reading is
	// dropped within StreamWriteTimeout rather than held forever.
	rc := http.NewResponseController(w)
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(StreamWriteTimeout)) }
	deadline()
	flush := func() {
		deadline()
		if rc.Flush() != nil {
			cancelStream()
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
