package main

import (
	"cmp"
	"net/netip"

	"github.com/spf13/pflag"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/notify"
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

// callbackFlags are the flags of processes that deliver callbacks (serve
// and a fleet's workers): the signing secret and the ranges opened to
// callbacks.
type callbackFlags struct {
	secret string
	allow  []string
}

func (c *callbackFlags) register(fs *pflag.FlagSet, who string) {
	fs.StringVar(&c.secret, "callback-secret", "", "sign callback bodies with HMAC-SHA256 under this secret (env PINGFLEET_CALLBACK_SECRET); give "+who+" the same")
	fs.StringArrayVar(&c.allow, "callback-allow", nil, "let callbacks reach this `CIDR`, which is refused by default (loopback, private, link-local, multicast: see the README); repeatable; give serve and every worker the same")
}

// policy returns the callback targets the flags allow.
func (c *callbackFlags) policy() (notify.CallbackPolicy, error) {
	var policy notify.CallbackPolicy
	for _, v := range c.allow {
		prefix, err := netip.ParsePrefix(v)
		if err != nil {
			return policy, usageErr("--callback-allow %q: %v", v, err)
		}
		policy.Allow = append(policy.Allow, prefix.Masked())
	}
	return policy, nil
}

// sender returns the callback sender the flags describe.
func (a *app) sender(c *callbackFlags, agg *aggregator.Aggregator) (*notify.Sender, error) {
	policy, err := c.policy()
	if err != nil {
		return nil, err
	}
	s, err := notify.NewSender(notify.SenderConfig{Aggregator: agg, Policy: policy, Secret: []byte(cmp.Or(c.secret, a.getenv("PINGFLEET_CALLBACK_SECRET"))), Logger: a.logger})
	if err != nil {
		return nil, systemErr(err)
	}
	return s, nil
}
