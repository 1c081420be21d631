// Package api is pingfleet's HTTP API: other systems submit batches, follow
// them (state, results, server-sent events), cancel them and are called
// back when they end. JSON in and out; /openapi.json describes it.
package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/notify"
	"github.com/pingfleet/pingfleet/report"
	"github.com/pingfleet/pingfleet/tasks"
)

// OpenAPI is the OpenAPI 3 document of this API, served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Defaults of Config.
const (
	DefaultMaxBodyBytes = 8 << 20
	DefaultMaxHosts     = 100000
)

// Config configures a Server.
type Config struct {
	Redis      redis.UniversalClient  // required: readiness, idempotency keys
	Aggregator *aggregator.Aggregator // required
	Enqueuer   *enqueuer.Enqueuer     // required
	Notifier   *notify.Notifier       // required: callbacks of cancelled batches
	Inspector  *asynq.Inspector       // required: deletes a cancelled batch's queued tasks
	// Shards must match the enqueuer's and workers'. If zero, tasks.DefaultShards.
	Shards int
	// Tokens are the accepted bearer tokens. Empty: no authentication.
	Tokens []string
	// MaxBodyBytes bounds a request body. If zero, DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxHosts bounds a batch after expansion. If zero, DefaultMaxHosts.
	MaxHosts int
	// MaxExpand bounds one CIDR or range. If zero, enqueuer.DefaultMaxExpand.
	MaxExpand int
	// Policy refuses targets. The zero Policy denies tasks.DefaultDeny.
	Policy tasks.Policy
	// Retention is how long idempotency keys live; the batches' retention.
	// If zero, aggregator.DefaultRetention.
	Retention time.Duration
	Logger    *slog.Logger // if nil, slog.Default()
}

// Server serves the API.
type Server struct {
	cfg    Config
	tokens [][sha256.Size]byte
	mux    *http.ServeMux
}

// Routes lists every route of the API (method and pattern), as registered;
// the OpenAPI document must describe exactly these.
var Routes = []string{
	"POST /v1/batches",
	"GET /v1/batches",
	"GET /v1/batches/{id}",
	"DELETE /v1/batches/{id}",
	"GET /v1/batches/{id}/results",
	"GET /v1/batches/{id}/events",
	"GET /healthz",
	"GET /readyz",
	"GET /openapi.json",
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Redis == nil || cfg.Aggregator == nil || cfg.Enqueuer == nil || cfg.Notifier == nil || cfg.Inspector == nil {
		return nil, errors.New("api: Config.Redis, Aggregator, Enqueuer, Notifier and Inspector are required")
	}
	cfg.Shards = cmp.Or(cfg.Shards, tasks.DefaultShards)
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	cfg.MaxHosts = cmp.Or(cfg.MaxHosts, DefaultMaxHosts)
	cfg.MaxExpand = cmp.Or(cfg.MaxExpand, enqueuer.DefaultMaxExpand)
	cfg.Retention = cmp.Or(cfg.Retention, aggregator.DefaultRetention)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	for _, t := range cfg.Tokens {
		if t == "" {
			return nil, errors.New("api: empty token")
		}
		s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
	}
	handlers := map[string]http.HandlerFunc{
		"POST /v1/batches":             s.auth(s.createBatch),
		"GET /v1/batches":              s.auth(s.listBatches),
		"GET /v1/batches/{id}":         s.auth(s.getBatch),
		"DELETE /v1/batches/{id}":      s.auth(s.cancelBatch),
		"GET /v1/batches/{id}/results": s.auth(s.results),
		"GET /v1/batches/{id}/events":  s.auth(s.events),
		"GET /healthz":                 s.healthz,
		"GET /readyz":                  s.readyz,
		"GET /openapi.json":            s.openapi,
	}
	for _, r := range Routes {
		s.mux.HandleFunc(r, handlers[r])
	}
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Error is the body of every error answer.
type Error struct {
	Error   string   `json:"error"`
	Details []Detail `json:"details,omitempty"`
}

// Detail names one offending host or field.
type Detail struct {
	Field    string `json:"field,omitempty"`    // e.g. "options.count", "hosts[3]"
	Value    string `json:"value,omitempty"`    // what was sent
	Position int    `json:"position,omitempty"` // 1-based index in hosts
	Reason   string `json:"reason"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string, details ...Detail) {
	writeJSON(w, code, Error{Error: msg, Details: details})
}

// auth checks the bearer token in constant time (against every token, so
// the time does not tell which one nearly matched).
func (s *Server) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(s.tokens) > 0 {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			sum := sha256.Sum256([]byte(got))
			match := 0
			for _, t := range s.tokens {
				match |= subtle.ConstantTimeCompare(sum[:], t[:])
			}
			if !ok || match != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pingfleet"`)
				writeError(w, http.StatusUnauthorized, "missing or invalid bearer token")
				return
			}
		}
		next(w, r)
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Redis.Ping(ctx).Err(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "redis unreachable: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(OpenAPI)
}

// CreateRequest is the body of POST /v1/batches.
type CreateRequest struct {
	Hosts       []string          `json:"hosts"`
	Options     tasks.PingOptions `json:"options"`
	CallbackURL string            `json:"callback_url,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Deadline is an RFC 3339 time or a duration from now ("15m").
	Deadline string `json:"deadline,omitempty"`
}

// CreateResponse answers POST /v1/batches.
type CreateResponse struct {
	ID        string `json:"id"`
	Total     int    `json:"total"`
	StatusURL string `json:"status_url"`
	// Existing is true when the Idempotency-Key named an earlier batch.
	Existing bool `json:"existing,omitempty"`
}

// problem is a request refused with a status code and details.
type problem struct {
	code    int
	msg     string
	details []Detail
}

func (p *problem) Error() string { return p.msg }

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
	var details []Detail
	opts := req.Options.Normalize()
	if err := opts.Validate(); err != nil {
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
		if errors.Is(e.Err, enqueuer.ErrTooLarge) && strings.Contains(e.Err.Error(), "batch would exceed") {
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
		if !strings.HasPrefix(req.CallbackURL, "http://") && !strings.HasPrefix(req.CallbackURL, "https://") {
			details = append(details, Detail{Field: "callback_url", Value: req.CallbackURL, Reason: "must be an http:// or https:// URL"})
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
	}
	for k := range req.Labels {
		if k == "" || len(k) > 64 {
			details = append(details, Detail{Field: "labels", Value: k, Reason: "label keys are 1-64 characters"})
		}
	}
	if len(details) > 0 {
		code := http.StatusUnprocessableEntity
		if tooMany {
			code = http.StatusRequestEntityTooLarge
		}
		return enqueuer.Batch{}, &problem{code, fmt.Sprintf("invalid batch: %d problem(s), nothing was created", len(details)), details}
	}
	return enqueuer.Batch{Hosts: hosts, Options: opts, Labels: req.Labels, CallbackURL: req.CallbackURL, Deadline: deadline}, nil
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
	existing := false
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		// The first request with a key binds it to a new batch ID; a
		// repeat gets that batch, and Submit of the same batch adds no
		// task (it finishes an enqueue the first request could not).
		id := newID()
		got, same, err := s.claimKey(r.Context(), key, body, id)
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

func bodyDigest(body []byte) string {
	sum := sha256.Sum256(body)
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
	page, next, err := s.cfg.Aggregator.Page(r.Context(), before, limit, func(sum aggregator.Summary) bool {
		return labelK == "" || sum.Labels[labelK] == labelV
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
	rw := report.NewResultWriter(w, format) // buffers until the first result
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

func (s *Server) cancelBatch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx := r.Context()
	acted, err := s.cfg.Aggregator.Finalize(ctx, id, aggregator.StateCancelled)
	switch {
	case errors.Is(err, aggregator.ErrNotFound):
		writeError(w, http.StatusNotFound, "batch "+id+" not found")
		return
	case err != nil && !acted:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	sum, ok := s.summary(w, r)
	if !ok {
		return
	}
	if !acted && sum.State != aggregator.StateCancelled {
		writeError(w, http.StatusConflict, fmt.Sprintf("batch %s is already %s", id, sum.State))
		return
	}
	if acted {
		// Hosts never pinged must stay so: drop their queued tasks before
		// answering. Tasks already running finish (and are not counted).
		err := s.cfg.Aggregator.Results(ctx, id, func(res aggregator.Result) error {
			err := s.cfg.Inspector.DeleteTask(tasks.Queue(res.Host, s.cfg.Shards), tasks.TaskID(id, res.Host))
			switch {
			case err == nil, errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
				return nil
			case strings.Contains(err.Error(), "in active state"):
				// Running now (asynq has no exported error for it): the
				// worker finishes it and its result is not counted.
				return nil
			}
			return err
		}, aggregator.StatusCancelled)
		if err != nil {
			s.cfg.Logger.Warn("cancel: some queued tasks not deleted (workers will skip them)", "batch", id, "error", err)
		}
		if err := s.cfg.Notifier.Finished(ctx, id, sum.CallbackURL); err != nil {
			s.cfg.Logger.Warn("cancel: callback not handed over yet (the janitor will)", "batch", id, "error", err)
		}
	}
	writeJSON(w, http.StatusOK, withProgress(sum))
}
