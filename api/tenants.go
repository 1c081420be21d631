package api

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

// Tenant is a client of the API with tokens of its own. The batches it
// submits are its own: its tokens see no other batch (another's is "not
// found"), the fleet is shared between tenants before their batches
// (tasks.Lane.Tenant), and its Quota bounds what it has open.
type Tenant struct {
	Name   string // tasks.ValidTenant
	Tokens []string
	Quota  Quota
}

// Quota bounds a tenant's use of the fleet; a zero field is no bound.
type Quota struct {
	// Batches is the most batches it has open (not final) at once, and
	// Hosts the most hosts of those not done yet: a batch past either is
	// refused with 429 and a Retry-After; one larger than Hosts alone,
	// with 422.
	Batches, Hosts int
	// Rate is the most pings per second of all its batches together,
	// across the fleet: its tasks wait, unfetched, for their share.
	Rate int
}

// ParseTenants reads tenants, one a line: a name, its tokens separated by
// commas, then any of batches=N, hosts=N and rate=N. Blank lines and those
// starting with # are skipped. Errors name the line.
//
//	# name    tokens           quota
//	deploys   tok-a1,tok-a2    batches=20 hosts=5000
//	nightly   tok-n1           rate=20000
func ParseTenants(r io.Reader) ([]Tenant, error) {
	var out []Tenant
	seen := map[string]bool{}
	tokens := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("tenants line %d: %s", n, fmt.Sprintf(format, a...))
		}
		if len(f) < 2 {
			return nil, bad("want a name, its tokens and any of batches=N, hosts=N, rate=N")
		}
		t := Tenant{Name: f[0]}
		switch {
		case !tasks.ValidTenant(t.Name):
			return nil, bad("tenant %q: a name is 1 to 64 letters, digits, '.', '_' or '-'", t.Name)
		case seen[t.Name]:
			return nil, bad("tenant %s named twice (give its tokens on one line, separated by commas)", t.Name)
		}
		seen[t.Name] = true
		for _, tok := range strings.Split(f[1], ",") {
			if tok == "" || tokens[tok] {
				return nil, bad("tenant %s: an empty or repeated token", t.Name)
			}
			tokens[tok] = true
			t.Tokens = append(t.Tokens, tok)
		}
		for _, kv := range f[2:] {
			k, v, _ := strings.Cut(kv, "=")
			var dst *int
			switch k {
			case "batches":
				dst = &t.Quota.Batches
			case "hosts":
				dst = &t.Quota.Hosts
			case "rate":
				dst = &t.Quota.Rate
			default:
				return nil, bad("tenant %s: %q is not batches=N, hosts=N or rate=N", t.Name, kv)
			}
			x, err := strconv.Atoi(v)
			if err != nil || x < 1 {
				return nil, bad("tenant %s: %s must be a whole number above 0", t.Name, k)
			}
			*dst = x
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tenants: %w", err)
	}
	return out, nil
}

// caller is who made a request: an operator (a Config.Tokens token, or
// anyone when the API has no tokens), or a tenant.
type caller struct {
	tenant *Tenant // nil for an operator
	token  [sha256.Size]byte
}

type callerKey struct{}

// callerOf returns the caller of a request that went through auth.
func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// name is the caller's tenant's name, "" for an operator.
func (c caller) name() string {
	if c.tenant == nil {
		return ""
	}
	return c.tenant.Name
}

// sees reports whether the caller may see a batch of tenant: an operator
// sees every batch, a tenant its own.
func (c caller) sees(tenant string) bool { return c.tenant == nil || c.tenant.Name == tenant }

// openKey is the sorted set of a tenant's open batches, each scored with
// its hosts not done yet (as last counted).
func openKey(tenant string) string { return "pingfleet:tenant:{" + tenant + "}:open" }

// admitScript admits a batch into its tenant's open set if the quota lets
// it: fewer than the most batches open, and the hosts not done of those
// and the new batch's within the most hosts. A batch already admitted (a
// repeated request) is admitted again.
//
// KEYS[1] -> the tenant's open set (openKey)
// --
// ARGV[1] -> batch ID
// ARGV[2] -> its hosts
// ARGV[3] -> most batches, 0 for any number
// ARGV[4] -> most hosts, 0 for any number
// ARGV[5] -> how long the set lives, ms (the batches' retention)
//
// Returns 1 when admitted, -1 when over the batches, -2 over the hosts.
var admitScript = redis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
local most, hosts = tonumber(ARGV[3]), tonumber(ARGV[4])
if most > 0 and redis.call('ZCARD', KEYS[1]) >= most then return -1 end
if hosts > 0 then
  local sum = tonumber(ARGV[2])
  local open = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 2, #open, 2 do sum = sum + tonumber(open[i]) end
  if sum > hosts then return -2 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`)

// errOverQuota is a batch refused for its tenant's quota; retry says when
// asking again may succeed.
type errOverQuota struct {
	msg   string
	retry time.Duration
}

func (e *errOverQuota) Error() string { return e.msg }

// admit reserves a place in tenant t's quota for batch id of hosts hosts,
// or says why not (an *errOverQuota). It first forgets the tenant's
// batches that ended and counts again the hosts the others have left, so
// that the quota is of what is open now.
func (s *Server) admit(ctx context.Context, t *Tenant, id string, hosts int) error {
	q := t.Quota
	if q.Batches == 0 && q.Hosts == 0 {
		return nil
	}
	key := openKey(t.Name)
	ids, err := s.cfg.Redis.ZRange(ctx, key, 0, -1).Result()
	if err != nil {
		return fmt.Errorf("open batches of tenant %s: %w", t.Name, err)
	}
	now := time.Now()
	var left []float64 // seconds until each open batch is done, by its pace so far (+Inf: no pace yet)
	var remaining int
	var pace float64 // hosts per second of its open batches
	var ended []any
	counts := make([]redis.Z, 0, len(ids))
	for _, b := range ids {
		sum, err := s.cfg.Aggregator.Progress(ctx, b)
		switch {
		case errors.Is(err, aggregator.ErrNotFound) || err == nil && sum.Completed():
			ended = append(ended, b)
			continue
		case err != nil:
			return err
		}
		n := sum.Total - sum.Done
		remaining += n
		counts = append(counts, redis.Z{Score: float64(n), Member: b})
		est := math.Inf(1)
		if el := now.Sub(sum.Started).Seconds(); !sum.Started.IsZero() && sum.Done > 0 && el > 0 {
			r := float64(sum.Done) / el
			pace += r
			est = float64(n) / r
		}
		left = append(left, est)
	}
	_, err = s.cfg.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(ended) > 0 {
			p.ZRem(ctx, key, ended...)
		}
		if len(counts) > 0 {
			p.ZAddXX(ctx, key, counts...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("open batches of tenant %s: %w", t.Name, err)
	}
	res, err := admitScript.Run(ctx, s.cfg.Redis, []string{key}, id, hosts, q.Batches, q.Hosts, s.cfg.Retention.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("admit a batch of tenant %s: %w", t.Name, err)
	}
	switch res {
	case -1:
		soonest := math.Inf(1)
		for _, l := range left {
			soonest = min(soonest, l)
		}
		return &errOverQuota{fmt.Sprintf("tenant %s has %d batches open, its most: try again once one ends", t.Name, len(left)), retryAfter(soonest)}
	case -2:
		wait := math.Inf(1)
		if pace > 0 {
			wait = float64(remaining+hosts-q.Hosts) / pace
		}
		return &errOverQuota{fmt.Sprintf("tenant %s has %d hosts of open batches not done, and %d more would pass its most of %d: try again once enough are done", t.Name, remaining, hosts, q.Hosts), retryAfter(wait)}
	}
	return nil
}

// Bounds of the Retry-After of an answer over a quota, and the value
// when the open batches have no pace yet.
const (
	minRetryAfter     = time.Second
	maxRetryAfter     = time.Hour
	unknownRetryAfter = 5 * time.Second
)

// retryAfter rounds an estimate in seconds up to a whole second within
// the bounds; +Inf (no estimate) is unknownRetryAfter.
func retryAfter(sec float64) time.Duration {
	if math.IsInf(sec, 1) || math.IsNaN(sec) {
		return unknownRetryAfter
	}
	d := time.Duration(math.Ceil(sec)) * time.Second
	return min(max(d, minRetryAfter), maxRetryAfter)
}
