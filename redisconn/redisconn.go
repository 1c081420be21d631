// Package redisconn turns one Redis URL into a client, whatever the
// deployment: a standalone server (redis://, rediss:// for TLS), a Redis
// Cluster (redis-cluster://, rediss-cluster://) or a Sentinel-managed
// master (redis-sentinel://, rediss-sentinel://). Both asynq and the
// aggregator use the client it returns, so one flag or variable configures
// every connection of a process.
//
//	redis://[user:password@]host:6379/0
//	redis-cluster://[user:password@]host1:7000?addr=host2:7001&addr=host3:7002
//	redis-sentinel://[user:password@]sentinel1:26379/0?master_name=mymaster&addr=sentinel2:26379
//
// Query parameters set go-redis options (dial_timeout=3s, pool_size=100...);
// for Sentinel, sentinel_password is the password of the sentinels.
package redisconn

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrScheme is returned for a URL of an unknown scheme.
var ErrScheme = errors.New("unknown Redis URL scheme: use redis, rediss, redis-cluster, rediss-cluster, redis-sentinel or rediss-sentinel")

// MinPoolSize is the smallest connection pool per node: a worker runs many
// tasks (and a few blocking reads) at once.
const MinPoolSize = 64

// Open returns a client for rawURL. It does not connect: the first command
// does.
func Open(rawURL string) (redis.UniversalClient, error) {
	return OpenPool(rawURL, MinPoolSize)
}

// OpenPool is Open with a pool of at least pool connections per node (the
// URL's pool_size, if larger, wins): for a client whose users each hold a
// connection, in blocking reads.
func OpenPool(rawURL string, pool int) (redis.UniversalClient, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, fmt.Errorf("redis URL %s: %w", Redact(rawURL), ErrScheme)
	}
	base, kind, _ := strings.Cut(scheme, "-")
	if base != "redis" && base != "rediss" {
		return nil, fmt.Errorf("redis URL %s: %w", Redact(rawURL), ErrScheme)
	}
	plain := base + "://" + rest
	switch kind {
	case "":
		opt, err := redis.ParseURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis URL %s: %w", Redact(rawURL), err)
		}
		opt.PoolSize = max(opt.PoolSize, pool)
		return redis.NewClient(opt), nil
	case "cluster":
		opt, err := redis.ParseClusterURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis cluster URL %s: %w", Redact(rawURL), err)
		}
		opt.PoolSize = max(opt.PoolSize, pool)
		return redis.NewClusterClient(opt), nil
	case "sentinel":
		opt, err := redis.ParseFailoverURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis sentinel URL %s: %w", Redact(rawURL), err)
		}
		if opt.MasterName == "" {
			return nil, fmt.Errorf("redis sentinel URL %s: master_name is required", Redact(rawURL))
		}
		opt.PoolSize = max(opt.PoolSize, pool)
		return redis.NewFailoverClient(opt), nil
	}
	return nil, fmt.Errorf("redis URL %s: %w", Redact(rawURL), ErrScheme)
}

// Redact returns rawURL with any password replaced by "xxxxx", for logs
// and error messages.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	q := u.Query()
	for _, k := range []string{"password", "sentinel_password"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}
