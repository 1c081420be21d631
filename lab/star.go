package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// A Star is network namespaces joined to one hub namespace by a veth link
// each, for tests of a fleet whose processes talk to each other over real
// interfaces rather than loopback: Redis in the hub, say, and a worker in
// each spoke. Links can be cut and restored (Cut, Restore).
//
// The hub has the address HubAddr on its loopback, which every spoke
// reaches through its own link; spoke i's link is 10.254.<i+1>.0/30, the
// hub's end .1 and the spoke's .2 (Spoke.Addr). There is no other route
// in any of them: no packet of a star leaves its namespaces. Each has its
// loopback up, so 127.0.0.0/8 answers pings inside each, and allows
// unprivileged ICMP sockets to every group (net.ipv4.ping_group_range), as
// most distributions do.
type Star struct {
	// Hub is the name of the hub's namespace, as ip netns knows it.
	Hub string
	// Spokes are the spokes, in order.
	Spokes []Spoke
}

// A Spoke is one namespace of a Star.
type Spoke struct {
	// Namespace is its name, as ip netns knows it.
	Namespace string
	// Addr is its address on its link to the hub.
	Addr netip.Addr
	// link is the hub's end of the link.
	link string
}

// HubAddr is the hub's address, reached from every spoke.
var HubAddr = netip.MustParseAddr("10.254.0.1")

// maxSpokes bounds a Star: one /30 per spoke in 10.254.1-250.0.
const maxSpokes = 250

// StartStar creates a Star of spokes spokes. It needs root and the ip
// command. ctx bounds the setup only; Close removes the namespaces. If
// StartStar fails, it leaves nothing behind.
func StartStar(ctx context.Context, spokes int) (_ *Star, err error) {
	if spokes < 1 || spokes > maxSpokes {
		return nil, fmt.Errorf("a star of %d spokes: want 1 to %d", spokes, maxSpokes)
	}
	name := fmt.Sprintf("pfstar-%d-%d", os.Getpid(), namespaces.Add(1))
	s := &Star{Hub: name + "-hub"}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if err := ip(ctx, nil, "netns", "add", s.Hub); err != nil {
		return nil, fmt.Errorf("create network namespace %s: %w", s.Hub, err)
	}
	hub := fmt.Sprintf("link set lo up\naddress add %s/32 dev lo\n", HubAddr)
	for i := range spokes {
		sp := Spoke{
			Namespace: fmt.Sprintf("%s-s%d", name, i),
			Addr:      netip.AddrFrom4([4]byte{10, 254, byte(i + 1), 2}),
			link:      fmt.Sprintf("s%d", i),
		}
		hubEnd := netip.AddrFrom4([4]byte{10, 254, byte(i + 1), 1})
		if err := ip(ctx, nil, "netns", "add", sp.Namespace); err != nil {
			return nil, fmt.Errorf("create network namespace %s: %w", sp.Namespace, err)
		}
		s.Spokes = append(s.Spokes, sp)
		if err := ip(ctx, nil, "link", "add", sp.link, "netns", s.Hub, "type", "veth", "peer", "name", "hub", "netns", sp.Namespace); err != nil {
			return nil, fmt.Errorf("link %s to the hub: %w", sp.Namespace, err)
		}
		hub += fmt.Sprintf("address add %s/30 dev %s\nlink set %[2]s up\n", hubEnd, sp.link)
		script := fmt.Sprintf("link set lo up\naddress add %s/30 dev hub\nlink set hub up\nroute add %s/32 via %s dev hub\n", sp.Addr, HubAddr, hubEnd)
		if err := ip(ctx, strings.NewReader(script), "-n", sp.Namespace, "-batch", "-"); err != nil {
			return nil, fmt.Errorf("configure network namespace %s: %w", sp.Namespace, err)
		}
		if err := DoIn(sp.Namespace, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0)
		}); err != nil {
			return nil, fmt.Errorf("sysctl net.ipv4.ping_group_range in %s: %w", sp.Namespace, err)
		}
	}
	if err := ip(ctx, strings.NewReader(hub), "-n", s.Hub, "-batch", "-"); err != nil {
		return nil, fmt.Errorf("configure network namespace %s: %w", s.Hub, err)
	}
	return s, nil
}

// Command returns a command that runs name with args inside the network
// namespace ns (ip netns exec), as exec.CommandContext would. ip netns exec
// replaces itself with the program, so the command's process is the
// program's.
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// cutTable is the nftables table, in the hub, that cuts spoke's link.
func cutTable(sp Spoke) string { return "pingfleet_cut_" + sp.link }

// Cut cuts spoke i's link: from now on the hub drops every packet that
// comes in from it or would go out on it, silently, as a pulled cable or a
// dead switch would (connections hang, and time out by their own timers).
// It needs the nft command.
func (s *Star) Cut(ctx context.Context, i int) error {
	sp := s.Spokes[i]
	rules := fmt.Sprintf("table inet %s {\n"+
		"\tchain in { type filter hook input priority filter; policy accept; iifname %q drop; }\n"+
		"\tchain out { type filter hook output priority filter; policy accept; oifname %[2]q drop; }\n"+
		"}\n", cutTable(sp), sp.link)
	if err := ip(ctx, strings.NewReader(rules), "netns", "exec", s.Hub, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("cut the link of %s: %w", sp.Namespace, err)
	}
	return nil
}

// Restore undoes Cut of spoke i's link.
func (s *Star) Restore(ctx context.Context, i int) error {
	sp := s.Spokes[i]
	if err := ip(ctx, nil, "netns", "exec", s.Hub, "nft", "delete", "table", "inet", cutTable(sp)); err != nil {
		return fmt.Errorf("restore the link of %s: %w", sp.Namespace, err)
	}
	return nil
}

// Close deletes the star's namespaces, and their links with them.
func (s *Star) Close() error {
	var errs []error
	for _, ns := range append([]string{s.Hub}, spokeNames(s.Spokes)...) {
		if _, err := os.Stat(netnsDir + "/" + ns); err != nil {
			continue // never created
		}
		if err := ip(context.Background(), nil, "netns", "del", ns); err != nil {
			errs = append(errs, fmt.Errorf("delete network namespace %s: %w", ns, err))
		}
	}
	return errors.Join(errs...)
}

func spokeNames(spokes []Spoke) []string {
	names := make([]string, len(spokes))
	for i, sp := range spokes {
		names[i] = sp.Namespace
	}
	return names
}
