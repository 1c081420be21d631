package lab

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNftRuleset(t *testing.T) {
	t.Parallel()
	p := netip.MustParsePrefix
	// A wide range with kernel loss and a narrower one inside it without:
	// the narrow one must be accepted before the wide one's drop.
	got := nftRuleset("tun0", []Range{
		{Name: "wide", Prefix: p("198.18.0.0/16"), KernelLoss: 0.25},
		{Name: "narrow", Prefix: p("198.18.7.0/24")},
		{Name: "all", Prefix: p("198.18.9.0/24"), KernelLoss: 1},
	})
	want := `table ip pingfleet_lab {
	chain requests {
		type filter hook output priority filter; policy accept;
		oifname "tun0" ip daddr 198.18.7.0/24 icmp type echo-request accept
		oifname "tun0" ip daddr 198.18.9.0/24 icmp type echo-request counter drop
		oifname "tun0" ip daddr 198.18.9.0/24 icmp type echo-request accept
		oifname "tun0" ip daddr 198.18.0.0/16 icmp type echo-request numgen random mod 1000000 < 250000 counter drop
		oifname "tun0" ip daddr 198.18.0.0/16 icmp type echo-request accept
	}
}
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestSumCounters(t *testing.T) {
	t.Parallel()
	// Trimmed from `nft -j list table ip pingfleet_lab` (nftables 1.0.6).
	listing := `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"table": {"family": "ip", "name": "pingfleet_lab", "handle": 1}},
 {"chain": {"family": "ip", "table": "pingfleet_lab", "name": "requests", "handle": 1}},
 {"rule": {"chain": "requests", "handle": 2, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "tun0"}},
   {"counter": {"packets": 41, "bytes": 3444}}, {"drop": null}]}},
 {"rule": {"chain": "requests", "handle": 3, "expr": [{"accept": null}]}},
 {"rule": {"chain": "requests", "handle": 4, "expr": [{"counter": {"packets": 1, "bytes": 84}}, {"drop": null}]}}]}`
	n, err := sumCounters([]byte(listing))
	if err != nil || n != 42 {
		t.Errorf("sumCounters = %d, %v; want 42", n, err)
	}
	if _, err := sumCounters([]byte("table ip x {}")); err == nil {
		t.Error("sumCounters of text output: no error")
	}
}
