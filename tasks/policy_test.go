package tasks_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/pingfleet/pingfleet/tasks"
)

func TestPolicy(t *testing.T) {
	t.Parallel()
	lab := tasks.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Deny: append([]netip.Prefix{netip.MustParsePrefix("127.0.9.0/24")}, tasks.DefaultDeny...)}
	tests := []struct {
		desc   string
		policy tasks.Policy
		host   string
		denied bool
	}{
		{"plain address", tasks.Policy{}, "192.0.2.1", false},
		{"name passes", tasks.Policy{}, "db.example", false},
		{"this network", tasks.Policy{}, "0.1.2.3", true},
		{"broadcast", tasks.Policy{}, "255.255.255.255", true},
		{"multicast", tasks.Policy{}, "224.0.0.251", true},
		{"IPv6 multicast", tasks.Policy{}, "ff02::1", true},
		{"mapped multicast", tasks.Policy{}, "::ffff:239.1.1.1", true},
		{"allowed range", lab, "127.0.0.5", false},
		{"outside allowed", lab, "192.0.2.1", true},
		{"denied inside allowed", lab, "127.0.9.9", true},
	}
	for _, tc := range tests {
		err := tc.policy.Check(tc.host)
		if (err != nil) != tc.denied || (err != nil && !errors.Is(err, tasks.ErrDenied)) {
			t.Errorf("%s: Check(%s) = %v; want denied %v", tc.desc, tc.host, err, tc.denied)
		}
	}
	// CheckAddr is what workers use on resolved addresses.
	for _, tc := range []struct {
		addr   string
		policy tasks.Policy
		want   string
	}{
		{"224.0.0.251", tasks.Policy{}, "denied by target policy: 224.0.0.251 is in denied range 224.0.0.0/4"},
		{"::ffff:255.255.255.255", tasks.Policy{}, "denied by target policy: 255.255.255.255 is in denied range 255.255.255.255/32"},
		{"192.0.2.1", lab, "denied by target policy: 192.0.2.1 is outside the allowed ranges"},
		{"127.0.0.5", lab, ""},
		{"fe80::1%eth0", tasks.Policy{}, ""},
	} {
		got := ""
		if err := tc.policy.CheckAddr(netip.MustParseAddr(tc.addr)); err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("CheckAddr(%s) = %q; want %q", tc.addr, got, tc.want)
		}
	}
	allowed, denied := tasks.Policy{}.Filter([]string{"127.0.0.1", "224.0.0.1", "::1"})
	if len(allowed) != 2 || len(denied) != 1 {
		t.Errorf("Filter = %v, %v", allowed, denied)
	}
}
