package enqueuer_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/pingfleet/pingfleet/enqueuer"
)

func TestPolicy(t *testing.T) {
	t.Parallel()
	lab := enqueuer.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Deny: append([]netip.Prefix{netip.MustParsePrefix("127.0.9.0/24")}, enqueuer.DefaultDeny...)}
	tests := []struct {
		desc   string
		policy enqueuer.Policy
		host   string
		denied bool
	}{
		{"plain address", enqueuer.Policy{}, "192.0.2.1", false},
		{"name passes", enqueuer.Policy{}, "db.example", false},
		{"this network", enqueuer.Policy{}, "0.1.2.3", true},
		{"broadcast", enqueuer.Policy{}, "255.255.255.255", true},
		{"multicast", enqueuer.Policy{}, "224.0.0.251", true},
		{"IPv6 multicast", enqueuer.Policy{}, "ff02::1", true},
		{"mapped multicast", enqueuer.Policy{}, "::ffff:239.1.1.1", true},
		{"allowed range", lab, "127.0.0.5", false},
		{"outside allowed", lab, "192.0.2.1", true},
		{"denied inside allowed", lab, "127.0.9.9", true},
	}
	for _, tc := range tests {
		err := tc.policy.Check(tc.host)
		if (err != nil) != tc.denied || (err != nil && !errors.Is(err, enqueuer.ErrDenied)) {
			t.Errorf("%s: Check(%s) = %v; want denied %v", tc.desc, tc.host, err, tc.denied)
		}
	}
	allowed, denied := enqueuer.Policy{}.Filter([]string{"127.0.0.1", "224.0.0.1", "::1"})
	if len(allowed) != 2 || len(denied) != 1 {
		t.Errorf("Filter = %v, %v", allowed, denied)
	}
}
