package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/pingfleet/pingfleet/aggregator"
)

// Many clients following one running batch would each read its event
// stream from Redis and encode every result themselves: 300 of them cost
// 300 reads of each page and 300 encodings of each result. A hub reads a
// batch's events once for every client of this server that follows it
// near the head, and hands each the same encoded page. A client that
// joins further back, or falls more than a few pages behind, reads on its
// own from where it is: nothing is lost or sent twice either way.

// page is a run of encoded events, as the clients write them.
type page struct {
	data   []byte
	after  string // the ID before the page's first event
	last   string // the ID of its last event: where a reader resumes
	final  bool   // it ends with the batch's final event
	failed error  // the hub could not read on: clients go on by themselves
}

// Bounds of a hub: the pages it keeps for clients that join a little late,
// and the pages a client may fall behind before it reads on its own.
const (
	hubRing    = 64
	subscriber = 64
)

type hubs struct {
	mu  sync.Mutex
	all map[string]*hub
}

type hub struct {
	id     string
	cursor string // the ID after which the next page starts
	ring   []page // the last pages sent, oldest first
	subs   map[chan page]bool
}

// join subscribes to batch id's events after ID last: it returns the pages
// to write (those the hub already has after last, then the new ones as
// they come) and a function to leave; nil if the client must read on its
// own (it joins further back than the hub holds).
func (s *Server) join(id, last string) (<-chan page, func()) {
	hs := &s.hubs
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h := hs.all[id]
	ch := make(chan page, subscriber)
	if h == nil {
		h = &hub{id: id, cursor: last, subs: map[chan page]bool{ch: true}}
		if hs.all == nil {
			hs.all = map[string]*hub{}
		}
		hs.all[id] = h
		go s.runHub(h, last)
		return ch, s.leave(h, ch)
	}
	start := len(h.ring) // at the head: nothing to catch up
	if last != h.cursor {
		if start = slices.IndexFunc(h.ring, func(p page) bool { return p.after == last }); start < 0 {
			return nil, nil
		}
	}
	for _, p := range h.ring[start:] {
		ch <- p // fewer than subscriber: hubRing is no larger
	}
	h.subs[ch] = true
	return ch, s.leave(h, ch)
}

func (s *Server) leave(h *hub, ch chan page) func() {
	return func() {
		s.hubs.mu.Lock()
		defer s.hubs.mu.Unlock()
		delete(h.subs, ch) // the hub closes it if it still has it
	}
}

// runHub reads batch h.id's events after last until the batch is final or
// no client follows it, and sends each page to every subscriber; one that
// cannot take it is dropped (its channel closed) and reads on its own.
func (s *Server) runHub(h *hub, last string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		var buf bytes.Buffer
		next, final, err := s.cfg.StreamAggregator.Events(ctx, h.id, last, streamPoll, func(e aggregator.Event) error {
			return s.encodeEvent(ctx, &buf, h.id, e)
		})
		p := page{data: buf.Bytes(), after: last, last: next, final: final, failed: err}
		if err != nil {
			p.data = nil // clients read again on their own, from their last event
		}
		done := s.broadcast(h, p, len(p.data) > 0 || final || err != nil)
		if done {
			return
		}
		last = next
	}
}

// broadcast hands p to h's subscribers (when send) and says whether the
// hub is done: it failed, the batch is final, or no one follows it.
func (s *Server) broadcast(h *hub, p page, send bool) bool {
	s.hubs.mu.Lock()
	defer s.hubs.mu.Unlock()
	if p.failed == nil {
		h.cursor = p.last
	}
	if send {
		if p.failed == nil && !p.final {
			h.ring = append(h.ring, p)
			if len(h.ring) > hubRing {
				h.ring = slices.Delete(h.ring, 0, len(h.ring)-hubRing)
			}
		}
		for ch := range h.subs {
			select {
			case ch <- p:
			default: // too far behind: it reads on its own
				delete(h.subs, ch)
				close(ch)
			}
		}
	}
	if p.failed != nil || p.final || len(h.subs) == 0 {
		for ch := range h.subs {
			close(ch)
		}
		delete(s.hubs.all, h.id)
		return true
	}
	return false
}

// encodeEvent writes e as an event of the stream: a result, or the final
// event with the batch's summary.
func (s *Server) encodeEvent(ctx context.Context, w *bytes.Buffer, id string, e aggregator.Event) error {
	if e.Type == "result" {
		b, err := json.Marshal(e.Result)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "id: %s\nevent: result\ndata: %s\n\n", e.ID, b)
		return nil
	}
	final, err := s.cfg.Aggregator.Summary(ctx, id)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(final)
	fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", e.ID, "complete", b)
	return nil
}
