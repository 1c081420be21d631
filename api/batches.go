package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/tasks"
)

// CreateRequest is the body of POST /v1/batches.
type CreateRequest struct {
	Hosts       []string          `json:"hosts"`
	Options     tasks.PingOptions `json:"options"`
	CallbackURL string            `json:"callback_url,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Deadline is an RFC 3339 time or a duration from now ("15m").
	Deadline string `json:"deadline,omitempty"`
	// Priority is low, normal (the default), high or urgent
	// (tasks.Priority).
	Priority string `json:"priority,omitempty"`
	// MaxInFlight caps the batch's hosts pinged at once across the fleet
	// (0: no cap of its own).
	MaxInFlight int `json:"max_in_flight,omitempty"`
}

// CreateResponse answers POST /v1/batches.
type CreateResponse struct {
	ID        string `json:"id"`
	Total     int    `json:"total"`
	StatusURL string `json:"status_url"`
	// Existing is true when the Idempotency-Key named an earlier batch.
	Existing bool `json:"existing,omitempty"`
}

// decodeCreate parses and validates a creation request into a batch,
// without touching Redis.
func (s *Server) decodeCreate(body []byte) (enqueuer.Batch, *problem) {
	var req CreateRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return enqueuer.Batch{}, &problem{http.StatusBadRequest, "invalid JSON body: " + err.Error(), nil}
	}
	if dec.More() {
		return enqueuer.Batch{}, &problem{http.StatusBadRequest, "invalid JSON body: more than one value", nil}
	}
	if err := checkKeys(body); err != nil {
		return enqueuer.Batch{}, &problem{http.StatusBadRequest, "invalid JSON body: " + err.Error(), nil}
	}
	given := givenOptions(body)
	details := explicitZeros(given)
	if _, retries := given["retries"]; retries && req.Options.Count == 0 && req.Options.Retries == 0 {
		req.Options.Count = 1 // "retries": 0 is one request, as fping -r 0
	}
	opts := req.Options.Normalize()
	if err := opts.Validate(); err != nil && len(details) == 0 { // a zero refused above is the same problem
		var fe *tasks.FieldError
		if errors.As(err, &fe) {
			details = append(details, Detail{Field: "options." + fe.Field, Value: fe.Value, Reason: fe.Reason})
		} else {
			details = append(details, Detail{Field: "options", Reason: err.Error()})
		}
	}
	if len(req.Hosts) == 0 {
		details = append(details, Detail{Field: "hosts", Reason: "at least one host is required"})
	}
	entries := make([]enqueuer.Entry, 0, len(req.Hosts))
	for i, h := range req.Hosts {
		entries = append(entries, enqueuer.Entry{Text: strings.TrimSpace(h), Source: "request", Line: i + 1})
	}
	hosts, errs := enqueuer.ParseHosts(entries, enqueuer.Limits{MaxExpand: s.cfg.MaxExpand, MaxHosts: s.cfg.MaxHosts})
	tooMany := false
	for _, e := range errs {
		var limit *enqueuer.HostLimitError
		if errors.As(e.Err, &limit) {
			tooMany = true
		}
		details = append(details, Detail{Field: fmt.Sprintf("hosts[%d]", e.Entry.Line-1), Value: e.Entry.Text, Position: e.Entry.Line, Reason: e.Err.Error()})
	}
	for _, h := range hosts {
		if err := s.cfg.Policy.Check(h); err != nil {
			details = append(details, Detail{Field: "hosts", Value: h, Reason: err.Error()})
		}
	}
	if req.CallbackURL != "" {
		if err := s.cfg.CallbackPolicy.CheckURL(req.CallbackURL); err != nil {
			details = append(details, Detail{Field: "callback_url", Value: req.CallbackURL, Reason: err.Error()})
		}
	}
	var deadline time.Time
	if req.Deadline != "" {
		if d, err := time.ParseDuration(req.Deadline); err == nil && d > 0 {
			deadline = time.Now().Add(d)
		} else if t, err := time.Parse(time.RFC3339, req.Deadline); err == nil && t.After(time.Now()) {
			deadline = t
		} else {
			details = append(details, Detail{Field: "deadline", Value: req.Deadline, Reason: `must be a future RFC 3339 time or a positive duration such as "15m"`})
		}
		if !deadline.IsZero() && deadline.After(time.Now().Add(s.cfg.Retention)) {
			details = append(details, Detail{Field: "deadline", Value: req.Deadline, Reason: "must be within the batches' retention (" + s.cfg.Retention.String() + "): the batch would be gone before it"})
		}
	}
	prio, err := tasks.ParsePriority(req.Priority)
	if err != nil {
		details = append(details, Detail{Field: "priority", Value: truncate(req.Priority, 64), Reason: "must be low, normal, high or urgent"})
	}
	if req.MaxInFlight < 0 {
		details = append(details, Detail{Field: "max_in_flight", Value: strconv.Itoa(req.MaxInFlight), Reason: "must not be negative (0: no cap)"})
	}
	for _, err := range aggregator.CheckLabels(req.Labels) {
		var le *aggregator.LabelError
		if errors.As(err, &le) {
			details = append(details, Detail{Field: "labels", Value: truncate(le.Key, 64), Reason: le.Reason})
		} else {
			details = append(details, Detail{Field: "labels", Reason: err.Error()})
		}
	}
	if len(details) > 0 {
		code := http.StatusUnprocessableEntity
		if tooMany {
			code = http.StatusRequestEntityTooLarge
		}
		return enqueuer.Batch{}, &problem{code, fmt.Sprintf("invalid batch: %d problem(s), nothing was created", len(details)), details}
	}
	return enqueuer.Batch{Hosts: hosts, Options: opts, Labels: req.Labels, CallbackURL: req.CallbackURL, Deadline: deadline, Priority: prio, MaxInFlight: req.MaxInFlight}, nil
}

func (s *Server) createBatch(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", s.cfg.MaxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	b, p := s.decodeCreate(body)
	if p != nil {
		writeError(w, p.code, p.msg, p.details...)
		return
	}
	c := callerOf(r.Context())
	if t := c.tenant; t != nil {
		b.Tenant, b.TenantRate = t.Name, t.Quota.Rate
		if q := t.Quota.Hosts; q > 0 && len(b.Hosts) > q {
			writeError(w, http.StatusUnprocessableEntity, "invalid batch: 1 problem(s), nothing was created",
				Detail{Field: "hosts", Value: strconv.Itoa(len(b.Hosts)), Reason: fmt.Sprintf("more hosts than tenant %s may have in flight (%d)", t.Name, q)})
			return
		}
	}
	existing := false
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		// The first request with a key binds it to a new batch ID; a
		// repeat gets that batch, and Submit of the same batch adds no
		// task (it finishes an enqueue the first request could not).
		id := newID()
		got, same, err := s.claimKey(r.Context(), c.name()+"\x00"+key, body, id)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "redis: "+err.Error())
			return
		}
		if !same {
			writeError(w, http.StatusConflict, "Idempotency-Key already used with another request body")
			return
		}
		b.ID, existing = got, got != id
	}
	if t := c.tenant; t != nil {
		// A place that a batch then not created holds (Redis failed) is
		// given back by the next admission, which finds no such batch.
		b.ID = cmp.Or(b.ID, newID())
		var over *errOverQuota
		switch err := s.admit(r.Context(), t, b.ID, len(b.Hosts)); {
		case errors.As(err, &over):
			w.Header().Set("Retry-After", strconv.Itoa(int(over.retry/time.Second)))
			writeError(w, http.StatusTooManyRequests, over.msg, Detail{Field: "tenant", Value: t.Name, Reason: "over its quota"})
			return
		case err != nil:
			writeError(w, http.StatusServiceUnavailable, "redis: "+err.Error())
			return
		}
	}
	res, err := s.cfg.Enqueuer.Submit(r.Context(), b)
	switch {
	case errors.Is(err, aggregator.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		// The request was valid (decodeCreate checked all of it): what
		// failed is Redis. A PartialError says how to finish the batch.
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	w.Header().Set("Location", "/v1/batches/"+res.ID)
	writeJSON(w, http.StatusAccepted, CreateResponse{ID: res.ID, Total: res.Total, StatusURL: "/v1/batches/" + res.ID, Existing: existing})
}

func idemKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "pingfleet:idem:" + hex.EncodeToString(sum[:])
}

// claimKey binds key to batch id unless a request did before; it returns
// the batch ID the key names and whether that request had the same body.
func (s *Server) claimKey(ctx context.Context, key string, body []byte, id string) (string, bool, error) {
	digest := bodyDigest(body)
	ok, err := s.cfg.Redis.SetNX(ctx, idemKey(key), id+" "+digest, s.cfg.Retention).Result()
	if err != nil || ok {
		return id, true, err
	}
	v, err := s.cfg.Redis.Get(ctx, idemKey(key)).Result()
	if err != nil {
		return "", false, err
	}
	got, gotDigest, _ := strings.Cut(v, " ")
	return got, gotDigest == digest, nil
}

// bodyDigest identifies what a request body says, not how it is laid out:
// the same JSON re-formatted, or with its keys in another order, is the
// same request.
func bodyDigest(body []byte) string {
	sum := sha256.Sum256(canonicalJSON(body))
	return hex.EncodeToString(sum[:])
}

// newID returns a new batch ID.
var newID = enqueuer.NewBatchID

// BatchResponse answers GET /v1/batches/{id}.
type BatchResponse struct {
	aggregator.Summary
	// Progress is the share of hosts done, 0 to 1.
	Progress float64 `json:"progress"`
}

// MarshalJSON writes the summary's fields (as Summary.MarshalJSON does,
// which would otherwise stand for the whole response), then progress.
func (b BatchResponse) MarshalJSON() ([]byte, error) {
	sum, err := json.Marshal(b.Summary)
	if err != nil {
		return nil, err
	}
	p, _ := json.Marshal(b.Progress)
	return append(append(append(sum[:len(sum)-1], `,"progress":`...), p...), '}'), nil
}

func (s *Server) getBatch(w http.ResponseWriter, r *http.Request) {
	sum, ok := s.summary(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, withProgress(sum))
}

func withProgress(s aggregator.Summary) BatchResponse {
	p := 0.0
	if s.Total > 0 {
		p = float64(s.Done) / float64(s.Total)
	}
	return BatchResponse{Summary: s, Progress: p}
}

func (s *Server) summary(w http.ResponseWriter, r *http.Request) (aggregator.Summary, bool) {
	sum, err := s.cfg.Aggregator.Summary(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, aggregator.ErrNotFound):
		writeError(w, http.StatusNotFound, "batch "+r.PathValue("id")+" not found")
		return sum, false
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return sum, false
	}
	return sum, true
}

func (s *Server) listBatches(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit must be 1-1000", Detail{Field: "limit", Value: v, Reason: "not an integer from 1 to 1000"})
			return
		}
		limit = n
	}
	var before time.Time
	if v := q.Get("before"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "before must be an RFC 3339 time (the next_before of the previous page)")
			return
		}
		before = t
	}
	var labelK, labelV string
	if v := q.Get("label"); v != "" {
		var ok bool
		labelK, labelV, ok = strings.Cut(v, "=")
		if !ok {
			writeError(w, http.StatusBadRequest, "label must be KEY=VALUE")
			return
		}
	}
	c := callerOf(r.Context())
	page, next, err := s.cfg.Aggregator.Page(r.Context(), before, limit, func(sum aggregator.Summary) bool {
		return c.sees(sum.Tenant) && (labelK == "" || sum.Labels[labelK] == labelV)
	})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	resp := struct {
		Batches    []BatchResponse `json:"batches"`
		NextBefore string          `json:"next_before,omitempty"`
	}{Batches: []BatchResponse{}}
	for _, sum := range page {
		resp.Batches = append(resp.Batches, withProgress(sum))
	}
	if !next.IsZero() {
		resp.NextBefore = next.Format(time.RFC3339Nano)
	}
	writeJSON(w, http.StatusOK, resp)
}

// truncate shortens s for an error answer, which must not echo a huge input.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
