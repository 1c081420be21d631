package enqueuer_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pingfleet/pingfleet/enqueuer"
)

// FuzzParseHosts reads arbitrary text as a host file. Whatever the input,
// the output must be a list a worker can take as is: unique hosts, each
// already in the form the parser gives it, and no more than the limit.
func FuzzParseHosts(f *testing.F) {
	for _, s := range []string{
		"10.0.0.1\n10.0.0.0/30 # comment\n",
		"2001:DB8::0001\r\nfe80::1%eth0\r\n",
		"10.0.0.250-255 10.0.0.1-10.0.0.3\n",
		"2001:db8::ff-2001:db8::101\n",
		"Host.Example. host.example a_b.example -bad.example\n",
		"10.0.0.0/8 ::/0 10.0.0.1-300 1.2.3\n",
		"10.0.0.0/22\n10.0.4.0/22\n10.0.8.0/22\n10.0.12.0/22\n10.0.16.0/22\n",
		"::ffff:10.0.0.1 10.0.0.1 fe80::1%br-lan-fe80::2\n",
	} {
		f.Add(s)
	}
	lim := enqueuer.Limits{MaxExpand: 1024, MaxHosts: 4096}
	sentinels := []error{enqueuer.ErrInvalidHost, enqueuer.ErrInvalidRange, enqueuer.ErrInvalidCIDR, enqueuer.ErrTooLarge}
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := enqueuer.ReadEntries(strings.NewReader(in), "fuzz")
		if err != nil {
			// Only a line over 1 MiB fails on a strings.Reader.
			t.Skip(err)
		}
		for _, e := range entries {
			if e.Text == "" || strings.ContainsAny(e.Text, " \t\r\n#") {
				t.Fatalf("ReadEntries() gave entry %+v", e)
			}
		}
		hosts, errs := enqueuer.ParseHosts(entries, lim)
		if len(hosts) > lim.MaxHosts {
			t.Fatalf("ParseHosts() = %d hosts, more than MaxHosts %d", len(hosts), lim.MaxHosts)
		}
		seen := make(map[string]bool)
		for _, h := range hosts {
			if seen[h] {
				t.Fatalf("ParseHosts() gave %q twice", h)
			}
			seen[h] = true
			again, errs := enqueuer.ParseHosts([]enqueuer.Entry{{Text: h, Source: "fuzz", Line: 1}}, lim)
			if len(again) != 1 || again[0] != h || errs != nil {
				t.Fatalf("ParseHosts(%q) = %q, %v; want itself", h, again, errs)
			}
		}
		for _, e := range errs {
			n := 0
			for _, s := range sentinels {
				if errors.Is(e, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %q wraps %d sentinels, want 1", e, n)
			}
		}
		_ = errs.Error()
	})
}
