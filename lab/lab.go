// Package lab is a network of fake hosts with controlled latency, jitter,
// loss and dead ranges, for tests and benchmarks of ping tools without any
// tc/netem support in the kernel.
//
// The hosts live in 198.18.0.0/15 (RFC 2544, the benchmarking range) and
// exist only inside a network namespace the lab creates: it holds only lo
// and a TUN device, with a route for 198.18.0.0/15 to the TUN and no default
// route, so no lab packet can leave the machine. A [Responder] reads the
// IPv4 packets routed to the TUN and answers ICMP echo requests after the
// delay of the most specific [Range] that holds the destination. Everything
// else (other ICMP types, TCP, UDP, IPv6) is ignored.
//
// [DefaultRanges] is the standard lab:
//
//	198.18.0.0/24    fast      answers at once
//	198.18.1.0/24    delay50   50 ms delay, ±5 ms jitter
//	198.18.2.0/24    loss20    20 % loss
//	198.18.3.0/24    loss50    50 % loss
//	198.18.4.0/24    dead      never answers
//	198.18.16.0/20   latency   50 ms delay, no jitter (4,096 hosts for latency benchmarks)
//	198.19.0.0/16    scale     answers at once (65,536 hosts for scale benchmarks)
//
// Other addresses of 198.18.0.0/15 answer at once, except [LocalAddr],
// the namespace's own address (the source of every ping sent from inside
// it), which the kernel answers itself.
//
// [Start] needs root on Linux. Programs run inside the lab with
// [Lab.Exec] (ip netns exec) or, in-process, with [Lab.Do]. Tests should
// use package labtest, which skips them with a reason where a lab cannot
// run.
package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

const (
	// Network is the address range of the lab; every Range lies within it.
	Network = "198.18.0.0/15"
	// LocalAddr is the address of the lab namespace itself: pings sent from
	// inside the namespace come from it, and the kernel, not the responder,
	// answers pings to it.
	LocalAddr = "198.18.255.254"
	// DefaultDevice is the name of the TUN device when Config.Device is empty.
	DefaultDevice = "tun0"
)

var network = netip.MustParsePrefix(Network)

// Range is how the hosts of one prefix of the lab behave. An address
// follows the Range with the longest prefix that holds it.
type Range struct {
	// Name is a label for listings; it does not change behaviour.
	Name string
	// Prefix is the IPv4 prefix of the range, within Network.
	Prefix netip.Prefix
	// Delay is how long a host waits before it answers an echo request.
	Delay time.Duration
	// Jitter spreads each delay uniformly over Delay±Jitter, never below 0.
	Jitter time.Duration
	// Loss is the probability, from 0 to 1, that the responder drops a
	// request, independently of every other.
	Loss float64
	// KernelLoss is the probability, from 0 to 1, that the kernel drops a
	// request before the responder sees it: an nftables rule with a random
	// number in the lab's namespace (Start needs the nft command then). It
	// combines with Loss: a request survives both with (1-Loss)(1-KernelLoss).
	KernelLoss float64
	// Dead hosts never answer.
	Dead bool
}

// String describes r in one line, as "198.18.1.0/24 delay50: delay 50ms ±5ms".
func (r Range) String() string {
	s := r.Prefix.String()
	if r.Name != "" {
		s += " " + r.Name
	}
	if r.Dead {
		return s + ": dead"
	}
	s += ": delay " + r.Delay.String()
	if r.Jitter > 0 {
		s += " ±" + r.Jitter.String()
	}
	if r.Loss > 0 {
		s += fmt.Sprintf(", loss %g%%", r.Loss*100)
	}
	if r.KernelLoss > 0 {
		s += fmt.Sprintf(", kernel loss %g%% (nftables)", r.KernelLoss*100)
	}
	return s
}

// DefaultRanges returns the standard lab described in the package comment.
func DefaultRanges() []Range {
	p := netip.MustParsePrefix
	return []Range{
		{Name: "fast", Prefix: p("198.18.0.0/24")},
		{Name: "delay50", Prefix: p("198.18.1.0/24"), Delay: 50 * time.Millisecond, Jitter: 5 * time.Millisecond},
		{Name: "loss20", Prefix: p("198.18.2.0/24"), Loss: 0.2},
		{Name: "loss50", Prefix: p("198.18.3.0/24"), Loss: 0.5},
		{Name: "dead", Prefix: p("198.18.4.0/24"), Dead: true},
		{Name: "latency", Prefix: p("198.18.16.0/20"), Delay: 50 * time.Millisecond},
		{Name: "scale", Prefix: p("198.19.0.0/16")},
	}
}

// KernelLossRanges returns two ranges that lose requests in the kernel
// (Range.KernelLoss, nftables) rather than in the responder, to add to
// DefaultRanges where the nft command exists:
//
//	198.18.5.0/24    kloss20   20 % loss by nftables
//	198.18.6.0/24    kloss50   50 % loss by nftables
func KernelLossRanges() []Range {
	p := netip.MustParsePrefix
	return []Range{
		{Name: "kloss20", Prefix: p("198.18.5.0/24"), KernelLoss: 0.2},
		{Name: "kloss50", Prefix: p("198.18.6.0/24"), KernelLoss: 0.5},
	}
}

// Config configures a lab and its Responder.
type Config struct {
	// Ranges are the behaviours of the lab's hosts. If nil, DefaultRanges();
	// an empty, non-nil slice makes every address answer at once.
	Ranges []Range
	// Namespace is the name of the network namespace to create; it must not
	// exist yet. If empty, "pflab-<pid>-<n>".
	Namespace string
	// Device is the name of the TUN device in the namespace. If empty,
	// DefaultDevice.
	Device string
	// Seed seeds the random choices of loss and jitter: the same seed and
	// the same sequence of requests give the same answers. Zero is a seed
	// like any other.
	Seed uint64
}

// withDefaults returns cfg with its empty fields filled in.
func (cfg Config) withDefaults() Config {
	if cfg.Ranges == nil {
		cfg.Ranges = DefaultRanges()
	}
	if cfg.Device == "" {
		cfg.Device = DefaultDevice
	}
	return cfg
}

// validate reports the first field of cfg that cannot work.
func (cfg Config) validate() error {
	seen := make(map[netip.Prefix]bool, len(cfg.Ranges))
	for i, r := range cfg.Ranges {
		where := fmt.Sprintf("range %d (%s)", i, r.Prefix)
		switch {
		case !r.Prefix.IsValid():
			return fmt.Errorf("range %d: no prefix", i)
		case !r.Prefix.Addr().Is4():
			return fmt.Errorf("%s: not IPv4; the lab is %s", where, Network)
		case r.Prefix != r.Prefix.Masked():
			return fmt.Errorf("%s: host bits set; did you mean %s?", where, r.Prefix.Masked())
		case r.Prefix.Bits() < network.Bits() || !network.Contains(r.Prefix.Addr()):
			return fmt.Errorf("%s: outside the lab network %s", where, Network)
		case seen[r.Prefix]:
			return fmt.Errorf("%s: prefix given twice", where)
		case r.Delay < 0 || r.Jitter < 0:
			return fmt.Errorf("%s: negative delay or jitter", where)
		case !(r.Loss >= 0 && r.Loss <= 1):
			return fmt.Errorf("%s: loss %g not within [0, 1]", where, r.Loss)
		case !(r.KernelLoss >= 0 && r.KernelLoss <= 1):
			return fmt.Errorf("%s: kernel loss %g not within [0, 1]", where, r.KernelLoss)
		}
		seen[r.Prefix] = true
	}
	if len(cfg.Device) >= 16 || strings.ContainsRune(cfg.Device, '/') {
		return fmt.Errorf("device %q: not a valid interface name (at most 15 bytes, no '/')", cfg.Device)
	}
	return nil
}
