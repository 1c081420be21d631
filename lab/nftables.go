package lab

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// nftTable is the nftables table that drops requests for Range.KernelLoss,
// in the lab's namespace (so it touches no other table on the machine).
const nftTable = "pingfleet_lab"

// kernelLoss reports whether any range drops requests in the kernel.
func kernelLoss(ranges []Range) bool {
	return slices.ContainsFunc(ranges, func(r Range) bool { return r.KernelLoss > 0 })
}

// nftRuleset returns the nftables script that drops, on their way out to
// the TUN device, the echo requests of each range with KernelLoss. Rules
// go from the longest prefix to the shortest and each range ends with an
// accept, so an address follows its most specific range, as the
// responder's do.
func nftRuleset(device string, ranges []Range) string {
	sorted := slices.Clone(ranges)
	slices.SortStableFunc(sorted, func(a, b Range) int { return cmp.Compare(b.Prefix.Bits(), a.Prefix.Bits()) })
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n\tchain requests {\n\t\ttype filter hook output priority filter; policy accept;\n", nftTable)
	for _, r := range sorted {
		match := fmt.Sprintf("oifname %q ip daddr %s icmp type echo-request", device, r.Prefix)
		switch n := int(r.KernelLoss*1e6 + 0.5); {
		case n >= 1e6:
			fmt.Fprintf(&b, "\t\t%s counter drop\n", match)
		case r.KernelLoss > 0:
			fmt.Fprintf(&b, "\t\t%s numgen random mod 1000000 < %d counter drop\n", match, n)
		}
		fmt.Fprintf(&b, "\t\t%s accept\n", match)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// setupKernelLoss loads the drop rules into the lab's namespace.
func (l *Lab) setupKernelLoss(ctx context.Context, device string, ranges []Range) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("Range.KernelLoss needs the nft command (package nftables): %w", err)
	}
	if err := ip(ctx, strings.NewReader(nftRuleset(device, ranges)), "netns", "exec", l.ns, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("load nftables rules for kernel loss: %w", err)
	}
	return nil
}

// KernelDropped returns how many echo requests the kernel has dropped for
// Range.KernelLoss so far, from the nftables counters. It is 0 when no
// range has KernelLoss.
func (l *Lab) KernelDropped(ctx context.Context) (uint64, error) {
	if !l.kernelLoss {
		return 0, nil
	}
	out, err := l.Exec(ctx, "nft", "-j", "list", "table", "ip", nftTable).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return 0, fmt.Errorf("read nftables counters: %w", err)
	}
	return sumCounters(out)
}

// sumCounters adds up the packet counters in nft's JSON listing.
func sumCounters(listing []byte) (uint64, error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Expr []struct {
					Counter *struct {
						Packets uint64 `json:"packets"`
					} `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(listing, &doc); err != nil {
		return 0, fmt.Errorf("parse nft -j output: %w", err)
	}
	var n uint64
	for _, obj := range doc.Nftables {
		if obj.Rule == nil {
			continue
		}
		for _, e := range obj.Rule.Expr {
			if e.Counter != nil {
				n += e.Counter.Packets
			}
		}
	}
	return n, nil
}
