package tasks

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrDenied is wrapped by the errors of targets a Policy refuses.
var ErrDenied = errors.New("denied by target policy")

// DefaultDeny lists the prefixes no batch may target: "this network"
// (0.0.0.0/8), limited broadcast, multicast (both families) and the
// unspecified IPv6 address. Pinging them either makes no sense or floods a
// whole segment.
var DefaultDeny = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("ff00::/8"),
	netip.MustParsePrefix("::/128"),
}

// Policy says which IP targets may be pinged. The API checks the IP
// literals of a submission with Check; a name passes there, and the worker
// checks the address it resolves to with CheckAddr (and every literal too,
// whatever submitted it).
type Policy struct {
	// Deny lists refused prefixes; DefaultDeny when nil.
	Deny []netip.Prefix
	// Allow, when not empty, is the only space targets may come from.
	Allow []netip.Prefix
}

// Check returns an error wrapping ErrDenied when host is an IP the policy
// refuses.
func (p Policy) Check(host string) error {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil //nolint:nilerr // a name: checked once resolved (CheckAddr)
	}
	return p.CheckAddr(ip)
}

// CheckAddr returns an error wrapping ErrDenied when the policy refuses ip.
func (p Policy) CheckAddr(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	deny := p.Deny
	if deny == nil {
		deny = DefaultDeny
	}
	for _, d := range deny {
		if d.Contains(ip) {
			return fmt.Errorf("%w: %s is in denied range %s", ErrDenied, ip, d)
		}
	}
	if len(p.Allow) == 0 {
		return nil
	}
	for _, a := range p.Allow {
		if a.Contains(ip) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s is outside the allowed ranges", ErrDenied, ip)
}

// Filter splits hosts into those the policy allows and an error for each
// refused one, in order.
func (p Policy) Filter(hosts []string) (allowed []string, denied []error) {
	allowed = hosts[:0:0]
	for _, h := range hosts {
		if err := p.Check(h); err != nil {
			denied = append(denied, err)
			continue
		}
		allowed = append(allowed, h)
	}
	return allowed, denied
}
