package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
)

// DefaultStreamWriteTimeout bounds each write of an event stream: a client
// that reads nothing for that long is dropped.
const DefaultStreamWriteTimeout = 30 * time.Second

// Default bounds of the event streams one server holds open: each holds a
// Redis connection in a blocking read and a goroutine.
const (
	DefaultMaxStreams         = 1000
	DefaultMaxStreamsPerToken = 500
)

// streamRetryAfter is the Retry-After of a stream refused for the bounds.
const streamRetryAfter = "5"

// streamCount counts the open event streams, in all and per token.
type streamCount struct {
	mu      sync.Mutex
	n       int
	byToken map[[sha256.Size]byte]int
}

// acquire counts a new stream of token, or says which bound it is over.
func (c *streamCount) acquire(token [sha256.Size]byte, most, mostPerToken int) (release func(), over string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.n >= most:
		return nil, fmt.Sprintf("this server holds %d event streams, its most (--max-streams)", c.n)
	case c.byToken[token] >= mostPerToken:
		return nil, fmt.Sprintf("this token holds %d event streams on this server, its most (--max-streams-per-token)", c.byToken[token])
	}
	c.n++
	c.byToken[token]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.n--
		if c.byToken[token]--; c.byToken[token] == 0 {
			delete(c.byToken, token)
		}
	}, ""
}

// keepAlive is how often an idle event stream gets a comment line, so that
// proxies keep it open. streamPoll is how long one read waits for events:
// a stream whose client went away ends within it (a blocking Redis read
// does not end with its context).
const (
	keepAlive  = 15 * time.Second
	streamPoll = time.Second
)

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
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	release, over := s.streams.acquire(sha256.Sum256([]byte(token)), s.cfg.MaxStreams, s.cfg.MaxStreamsPerToken)
	if release == nil {
		w.Header().Set("Retry-After", streamRetryAfter)
		writeError(w, http.StatusTooManyRequests, over+": try again later, or read the results instead")
		return
	}
	defer release()
	// A stream outlives the server's write timeout: each write gets a
	// deadline of its own instead, so a client that stops reading is
	// dropped within StreamWriteTimeout rather than held forever.
	rc := http.NewResponseController(w)
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(s.cfg.StreamWriteTimeout)) }
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
	flush() // the client knows the stream is open before any event
	var done bool
	if last, done = s.follow(r.Context(), w, id, last, flush); done {
		return
	}
	// On its own: reading from further back than the hub holds, or after
	// falling behind it.
	lastWrite := time.Now()
	for {
		sent := 0
		var buf bytes.Buffer
		next, final, err := s.cfg.StreamAggregator.Events(r.Context(), id, last, streamPoll, func(e aggregator.Event) error {
			sent++
			if err := s.encodeEvent(r.Context(), &buf, id, e); err != nil {
				return err
			}
			if sent%eventsPerFlush == 0 {
				_, _ = w.Write(buf.Bytes())
				buf.Reset()
				flush()
			}
			return nil
		})
		_, _ = w.Write(buf.Bytes())
		if r.Context().Err() != nil {
			return
		}
		if err != nil {
			fmt.Fprintf(w, "event: error\ndata: %s\n\n", jsonString(err.Error()))
			flush()
			return
		}
		if sent == 0 && !final {
			if time.Since(lastWrite) < keepAlive {
				continue
			}
			fmt.Fprint(w, ": keep-alive\n\n")
		}
		lastWrite = time.Now()
		flush()
		if final {
			return
		}
		last = next
	}
}

// follow writes batch id's events after last from the batch's hub, while
// the client keeps up with it; it returns the ID of the last event written
// and whether the stream is over (the batch final, or the client gone).
func (s *Server) follow(ctx context.Context, w io.Writer, id, last string, flush func()) (string, bool) {
	if _, _, replaying, _ := aggregator.ParseEventID(last); replaying {
		return last, false // a position in the stored results: the hub is at the head
	}
	ch, leave := s.join(id, last)
	if ch == nil {
		return last, false
	}
	defer leave()
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case p, ok := <-ch:
			if !ok || p.failed != nil {
				return last, false
			}
			_, _ = w.Write(p.data)
			flush()
			last = p.last
			if p.final {
				return last, true
			}
		case <-tick.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			flush()
		case <-ctx.Done():
			return last, true
		}
	}
}

// eventsPerFlush is how many events of a long replay go out per flush.
const eventsPerFlush = 500

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
