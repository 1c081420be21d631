package worker

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type countingResolver struct {
	calls atomic.Int32
	fail  bool
}

func (r *countingResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.calls.Add(1)
	time.Sleep(10 * time.Millisecond) // lets concurrent lookups overlap
	if r.fail {
		return nil, errors.New("no such host")
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.7")}, nil
}

func (r *countingResolver) LookupAddr(context.Context, string) ([]string, error) {
	return nil, errors.New("no reverse names here")
}

func TestCachingResolver(t *testing.T) {
	t.Parallel()
	next := &countingResolver{}
	c := NewCachingResolver(next, time.Minute)
	now := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	c.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	lookup := func() {
		t.Helper()
		addrs, err := c.LookupNetIP(context.Background(), "ip", "db.test")
		if err != nil || len(addrs) != 1 {
			t.Fatalf("lookup = %v, %v", addrs, err)
		}
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(lookup)
	}
	wg.Wait()
	if n := next.calls.Load(); n != 1 {
		t.Errorf("20 concurrent lookups made %d queries; want 1", n)
	}
	clockMu.Lock()
	now = now.Add(59 * time.Second)
	clockMu.Unlock()
	lookup()
	if n := next.calls.Load(); n != 1 {
		t.Errorf("lookup within max age made a query (%d in all)", n)
	}
	clockMu.Lock()
	now = now.Add(2 * time.Second)
	clockMu.Unlock()
	lookup()
	if n := next.calls.Load(); n != 2 {
		t.Errorf("lookup past max age: %d queries in all; want 2", n)
	}

	failing := NewCachingResolver(&countingResolver{fail: true}, time.Minute)
	for range 2 {
		if _, err := failing.LookupNetIP(context.Background(), "ip", "gone.test"); err == nil {
			t.Fatal("lookup of a failing name succeeded")
		}
	}
	if n := failing.next.(*countingResolver).calls.Load(); n != 2 {
		t.Errorf("failures were cached: %d queries for 2 lookups", n)
	}
}
