package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/pingfleet/pingfleet/aggregator"
)

// token is an accepted bearer token's digest and whose it is (nil: an
// operator's).
type token struct {
	sum    [sha256.Size]byte
	tenant *Tenant
}

// auth checks the bearer token in constant time (against every token, so
// the time does not tell which one nearly matched), and gives the request
// its caller. A tenant's request naming a batch of another tenant is
// answered as if there were no such batch.
func (s *Server) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		c := caller{token: sha256.Sum256([]byte(got))}
		if len(s.tokens) > 0 {
			match := 0
			for _, t := range s.tokens {
				m := subtle.ConstantTimeCompare(c.token[:], t.sum[:])
				if m == 1 {
					c.tenant = t.tenant
				}
				match |= m
			}
			if !ok || match != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pingfleet"`)
				writeError(w, http.StatusUnauthorized, "missing or invalid bearer token")
				return
			}
		}
		if id := r.PathValue("id"); id != "" && c.tenant != nil {
			tenant, err := s.cfg.Aggregator.Tenant(r.Context(), id)
			switch {
			case errors.Is(err, aggregator.ErrNotFound) || err == nil && !c.sees(tenant):
				writeError(w, http.StatusNotFound, "batch "+id+" not found")
				return
			case err != nil:
				writeError(w, http.StatusServiceUnavailable, err.Error())
				return
			}
		}
		next(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	}
}
