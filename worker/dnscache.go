package worker

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// DefaultDNSCacheMaxAge is how long a worker reuses a name's addresses.
const DefaultDNSCacheMaxAge = time.Minute

// CachingResolver remembers what another Resolver answered, for at most
// MaxAge, so that a batch naming the same host many times (or batches
// every minute) does not ask DNS each time. Concurrent lookups of one name
// share one query. Failures are not cached: the next task asks again.
type CachingResolver struct {
	next   Resolver
	maxAge time.Duration
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]cacheEntry
	group   singleflight.Group
}

type cacheEntry struct {
	addrs   []netip.Addr
	expires time.Time
}

// NewCachingResolver returns a resolver that caches next's answers for
// maxAge (DefaultDNSCacheMaxAge if zero).
func NewCachingResolver(next Resolver, maxAge time.Duration) *CachingResolver {
	if maxAge <= 0 {
		maxAge = DefaultDNSCacheMaxAge
	}
	return &CachingResolver{next: next, maxAge: maxAge, now: time.Now, entries: map[string]cacheEntry{}}
}

// LookupNetIP implements Resolver.
func (c *CachingResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	key := network + "/" + host
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[key]
	if ok && now.After(e.expires) {
		delete(c.entries, key)
		ok = false
	}
	c.mu.Unlock()
	if ok {
		return e.addrs, nil
	}
	v, err, _ := c.group.Do(key, func() (any, error) {
		addrs, err := c.next.LookupNetIP(ctx, network, host)
		if err != nil {
			return nil, err
		}
		c.store(key, addrs)
		return addrs, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]netip.Addr), nil
}

// LookupAddr implements Resolver: reverse lookups are asked for by few
// batches and are not cached.
func (c *CachingResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	return c.next.LookupAddr(ctx, addr)
}

// maxCacheEntries bounds the cache: past it, expired entries are swept,
// and if that is not enough, the cache starts over.
const maxCacheEntries = 100000

func (c *CachingResolver) store(key string, addrs []netip.Addr) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCacheEntries {
		for k, e := range c.entries {
			if now.After(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxCacheEntries {
			clear(c.entries)
		}
	}
	c.entries[key] = cacheEntry{addrs: addrs, expires: now.Add(c.maxAge)}
}
