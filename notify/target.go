package notify

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// A callback URL is chosen by whoever submits a batch, and the POST goes
// out from inside the fleet's network: left open, it lets a client reach
// what only the fleet can (a cloud's metadata service, Redis itself, an
// admin page on loopback). So callbacks go only to public addresses unless
// an operator allows more (CallbackPolicy.Allow, --callback-allow).

// CallbackDeny are the ranges a callback may not reach by default, each
// with the reason given when one is refused.
var CallbackDeny = []struct {
	Prefix netip.Prefix
	Why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "an unspecified address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (cloud metadata services live there)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking network"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("::/128"), "an unspecified address"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fc00::/7"), "private (unique local; AWS's metadata service is fd00:ec2::254)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
}

// CallbackPolicy says which addresses callbacks may reach: any address
// outside CallbackDeny, and those inside Allow.
type CallbackPolicy struct {
	Allow []netip.Prefix
}

// ErrCallbackDenied is the error of a callback target the policy refuses.
var ErrCallbackDenied = errors.New("callback target refused")

// CheckAddr returns why a callback may not go to ip, or nil.
func (p CallbackPolicy) CheckAddr(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	for _, a := range p.Allow {
		if a.Contains(ip) {
			return nil
		}
	}
	for _, d := range CallbackDeny {
		if d.Prefix.Contains(ip) {
			return fmt.Errorf("%w: %s is %s (an operator can open it with --callback-allow %s)", ErrCallbackDenied, ip, d.Why, d.Prefix)
		}
	}
	return nil
}

// CheckURL returns why u cannot be a batch's callback URL, or nil: it must
// be an absolute http:// or https:// URL with a host, and a host that is
// an IP literal must be one the policy lets callbacks reach. A name is
// checked when the callback is sent, against what it resolves to then.
func (p CallbackPolicy) CheckURL(u string) error {
	if err := CheckCallbackURL(u); err != nil {
		return err
	}
	parsed, _ := url.Parse(u)
	host := parsed.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		return p.CheckAddr(ip)
	}
	if name := strings.ToLower(strings.TrimSuffix(host, ".")); name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return p.CheckAddr(netip.IPv6Loopback()) // RFC 6761: always loopback
	}
	return nil
}

// CallbackTimeout bounds one callback request, connection included.
const CallbackTimeout = 10 * time.Second

// NewCallbackClient returns the HTTP client that sends callbacks: every
// connection it opens is checked against the policy once the name is
// resolved, at the address actually dialled (so a name that resolves, or
// is re-pointed, to an internal address is refused too), redirects are
// not followed (a 3xx is an answer that is not a success), and no proxy
// from the environment is used.
func NewCallbackClient(p CallbackPolicy) *http.Client {
	dialer := &net.Dialer{
		Timeout: 5 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return fmt.Errorf("%w: dialling %q, not an address", ErrCallbackDenied, address)
			}
			return p.CheckAddr(ip)
		},
	}
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConns:        16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{
		Timeout:   CallbackTimeout,
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
