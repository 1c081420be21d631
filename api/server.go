// Package api is pingfleet's HTTP API: other systems submit batches, follow
// them (state, results, server-sent events), cancel them and are called
// back when they end. JSON in and out; /openapi.json describes it.
package api

import (
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/notify"
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
	Canceller  *notify.Canceller      // required: DELETE /v1/batches/{id}
	// Tokens are the operators' bearer tokens: they see every batch.
	// Without them and without Tenants, there is no authentication.
	Tokens []string
	// Tenants are the API's tenants (see Tenant); their tokens are
	// accepted too.
	Tenants []Tenant
	// MaxBodyBytes bounds a request body. If zero, DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxHosts bounds a batch after expansion. If zero, DefaultMaxHosts.
	MaxHosts int
	// MaxExpand bounds one CIDR or range. If zero, enqueuer.DefaultMaxExpand.
	MaxExpand int
	// Policy refuses targets. The zero Policy denies tasks.DefaultDeny.
	Policy tasks.Policy
	// CallbackPolicy refuses callback URLs whose host is an address
	// callbacks may not reach (422); the zero one refuses loopback,
	// private, link-local and multicast ones. Give it the senders' Allow.
	CallbackPolicy notify.CallbackPolicy
	// StreamAggregator reads the event streams (GET .../events): give it a
	// Redis client of its own, with a connection per stream (each waits
	// in a blocking read), so that streams never take the connections the
	// other routes need. If nil, Aggregator.
	StreamAggregator *aggregator.Aggregator
	// MaxStreams bounds the event streams open at once (429 past it); if
	// zero, DefaultMaxStreams. MaxStreamsPerToken bounds those of one
	// bearer token (all clients, without tokens); if zero,
	// DefaultMaxStreamsPerToken.
	MaxStreams, MaxStreamsPerToken int
	// StreamWriteTimeout bounds each write of an event stream; if zero,
	// DefaultStreamWriteTimeout.
	StreamWriteTimeout time.Duration
	// Retention is how long idempotency keys live; the batches' retention.
	// If zero, aggregator.DefaultRetention.
	Retention time.Duration
	Logger    *slog.Logger // if nil, slog.Default()
}

// Server serves the API.
type Server struct {
	cfg     Config
	tokens  []token
	mux     *http.ServeMux
	streams streamCount
	hubs    hubs // the batches followed by several event streams
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
	if cfg.Redis == nil || cfg.Aggregator == nil || cfg.Enqueuer == nil || cfg.Canceller == nil {
		return nil, errors.New("api: Config.Redis, Aggregator, Enqueuer and Canceller are required")
	}
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	cfg.MaxHosts = cmp.Or(cfg.MaxHosts, DefaultMaxHosts)
	cfg.MaxExpand = cmp.Or(cfg.MaxExpand, enqueuer.DefaultMaxExpand)
	cfg.Retention = cmp.Or(cfg.Retention, aggregator.DefaultRetention)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.StreamAggregator = cmp.Or(cfg.StreamAggregator, cfg.Aggregator)
	cfg.MaxStreams = cmp.Or(cfg.MaxStreams, DefaultMaxStreams)
	cfg.MaxStreamsPerToken = cmp.Or(cfg.MaxStreamsPerToken, DefaultMaxStreamsPerToken)
	cfg.StreamWriteTimeout = cmp.Or(cfg.StreamWriteTimeout, DefaultStreamWriteTimeout)
	s := &Server{cfg: cfg, mux: http.NewServeMux(), streams: streamCount{byToken: map[[sha256.Size]byte]int{}}}
	seen := map[[sha256.Size]byte]bool{}
	add := func(t string, tenant *Tenant) error {
		sum := sha256.Sum256([]byte(t))
		switch {
		case t == "":
			return errors.New("api: empty token")
		case seen[sum]:
			return errors.New("api: a token is given twice (an operator's and a tenant's, or two tenants')")
		}
		seen[sum] = true
		s.tokens = append(s.tokens, token{sum, tenant})
		return nil
	}
	for _, t := range cfg.Tokens {
		if err := add(t, nil); err != nil {
			return nil, err
		}
	}
	s.cfg.Tenants = slices.Clone(cfg.Tenants)
	for i := range s.cfg.Tenants {
		t := &s.cfg.Tenants[i]
		if !tasks.ValidTenant(t.Name) || len(t.Tokens) == 0 {
			return nil, fmt.Errorf("api: tenant %q: a name (tasks.ValidTenant) and a token are required", t.Name)
		}
		for _, tok := range t.Tokens {
			if err := add(tok, t); err != nil {
				return nil, err
			}
		}
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

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyKey is the key /readyz writes to check that Redis takes writes.
const readyKey = "pingfleet:readyz"

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Redis.Ping(ctx).Err(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "redis unreachable: "+err.Error())
		return
	}
	// Answering is not enough: a Redis out of memory, read-only or loading
	// answers PING but refuses every batch.
	if err := s.cfg.Redis.Set(ctx, readyKey, time.Now().UnixMilli(), 10*time.Second).Err(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "redis refuses writes: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(OpenAPI)
}
