package main

import (
	"net/netip"

	"github.com/spf13/pflag"

	"github.com/pingfleet/pingfleet/tasks"
)

// policyFlags are the --allow and --deny flags of the target policy, which
// serve checks on submitted IP literals and workers on every address they
// are about to ping.
type policyFlags struct {
	allow, deny []string
}

func (p *policyFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&p.allow, "allow", nil, "only allow targets in this `CIDR` (repeatable)")
	fs.StringArrayVar(&p.deny, "deny", nil, "deny targets in this `CIDR`, besides multicast, broadcast and 0.0.0.0/8 (repeatable)")
}

// policy returns the policy the flags describe, or a usage error naming
// the flag and the value that is not a CIDR.
func (p *policyFlags) policy() (tasks.Policy, error) {
	policy := tasks.Policy{Deny: append([]netip.Prefix(nil), tasks.DefaultDeny...)}
	for _, list := range []struct {
		flag string
		in   []string
		out  *[]netip.Prefix
	}{{"--allow", p.allow, &policy.Allow}, {"--deny", p.deny, &policy.Deny}} {
		for _, c := range list.in {
			prefix, err := netip.ParsePrefix(c)
			if err != nil {
				return tasks.Policy{}, usageErr("%s %q: %v", list.flag, c, err)
			}
			*list.out = append(*list.out, prefix.Masked())
		}
	}
	return policy, nil
}
