package enqueuer_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/pingfleet/pingfleet/enqueuer"
)

// v4Hosts returns prefix+"from" .. prefix+"to", e.g. 10.0.0.1 .. 10.0.0.254.
func v4Hosts(prefix string, from, to int) []string {
	var hosts []string
	for i := from; i <= to; i++ {
		hosts = append(hosts, fmt.Sprintf("%s%d", prefix, i))
	}
	return hosts
}

func errorTexts(errs enqueuer.ErrorList) []string {
	var texts []string
	for _, e := range errs {
		texts = append(texts, e.Error())
	}
	return texts
}

const tooLargeHint = " per entry; split it or raise the limit (--max-expand)"

func TestParseHosts(t *testing.T) {
	t.Parallel()
	label63 := strings.Repeat("a", 63)
	name253 := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".")
	tests := []struct {
		desc     string
		args     []string
		lim      enqueuer.Limits
		want     []string
		wantErrs []string
	}{
		{
			desc: "IPv4",
			args: []string{"10.0.0.1", "192.0.2.255"},
			want: []string{"10.0.0.1", "192.0.2.255"},
		},
		{
			desc: "IPv6 in canonical form",
			args: []string{"2001:DB8::0001", "2001:0db8:0000:0000:0000:0000:0000:0002", "::1"},
			want: []string{"2001:db8::1", "2001:db8::2", "::1"},
		},
		{
			desc: "IPv4-mapped IPv6 stays IPv6",
			args: []string{"::FFFF:10.0.0.1", "10.0.0.1"},
			want: []string{"::ffff:10.0.0.1", "10.0.0.1"},
		},
		{
			desc: "IPv6 with zone",
			args: []string{"fe80::1%eth0", "FE80::1%br-lan", "fe80::1%eth0.100"},
			want: []string{"fe80::1%eth0", "fe80::1%br-lan", "fe80::1%eth0.100"},
		},
		{
			desc: "CIDR /24 skips network and broadcast",
			args: []string{"10.0.0.0/24"},
			want: v4Hosts("10.0.0.", 1, 254),
		},
		{
			desc: "CIDR /30",
			args: []string{"10.0.0.0/30"},
			want: []string{"10.0.0.1", "10.0.0.2"},
		},
		{
			desc: "CIDR /31 has two hosts",
			args: []string{"10.0.0.4/31"},
			want: []string{"10.0.0.4", "10.0.0.5"},
		},
		{
			desc: "CIDR /32 is one host",
			args: []string{"10.0.0.7/32"},
			want: []string{"10.0.0.7"},
		},
		{
			desc: "non-canonical CIDR is masked",
			args: []string{"10.0.0.3/30"},
			want: []string{"10.0.0.1", "10.0.0.2"},
		},
		{
			desc: "IPv6 /126 has every address",
			args: []string{"2001:DB8::/126"},
			want: []string{"2001:db8::", "2001:db8::1", "2001:db8::2", "2001:db8::3"},
		},
		{
			desc: "IPv6 /128",
			args: []string{"2001:db8::5/128"},
			want: []string{"2001:db8::5"},
		},
		{
			desc: "non-canonical IPv6 CIDR is masked",
			args: []string{"2001:db8::7/127"},
			want: []string{"2001:db8::6", "2001:db8::7"},
		},
		{
			desc: "CIDR at the expansion limit",
			args: []string{"10.0.0.0/29"},
			lim:  enqueuer.Limits{MaxExpand: 6},
			want: v4Hosts("10.0.0.", 1, 6),
		},
		{
			desc: "full IPv4 range",
			args: []string{"10.0.0.1-10.0.0.3"},
			want: []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"},
		},
		{
			desc: "full IPv4 range across an octet",
			args: []string{"10.0.0.254-10.0.1.1"},
			want: []string{"10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"},
		},
		{
			desc: "short IPv4 range",
			args: []string{"10.0.0.250-255"},
			want: v4Hosts("10.0.0.", 250, 255),
		},
		{
			desc: "one-address ranges",
			args: []string{"10.0.0.5-5", "10.0.0.6-10.0.0.6"},
			want: []string{"10.0.0.5", "10.0.0.6"},
		},
		{
			desc: "IPv6 range",
			args: []string{"2001:db8::ff-2001:DB8::101"},
			want: []string{"2001:db8::ff", "2001:db8::100", "2001:db8::101"},
		},
		{
			desc: "range at the expansion limit",
			args: []string{"10.0.0.1-6"},
			lim:  enqueuer.Limits{MaxExpand: 6},
			want: v4Hosts("10.0.0.", 1, 6),
		},
		{
			desc: "dedup keeps first-seen order across entries",
			args: []string{"10.0.0.2", "10.0.0.0/30", "10.0.0.1-3", "10.0.0.2"},
			want: []string{"10.0.0.2", "10.0.0.1", "10.0.0.3"},
		},
		{
			desc: "dedup after normalisation",
			args: []string{"Host.Example.", "host.example", "2001:db8::1", "2001:DB8:0::1/128", "2001:db8::1-2001:db8::2"},
			want: []string{"host.example", "2001:db8::1", "2001:db8::2"},
		},
		{
			desc: "valid hostnames",
			args: []string{"localhost", "LOCALHOST.", "foo.invalid", "a_b.example", "_srv.example", "xn--bcher-kva.example", "3com.example", "1-800-flowers.com", "a1", label63 + ".example", name253},
			want: []string{"localhost", "foo.invalid", "a_b.example", "_srv.example", "xn--bcher-kva.example", "3com.example", "1-800-flowers.com", "a1", label63 + ".example", name253},
		},
		{
			desc: "invalid hostnames",
			args: []string{
				"bad_host!",
				"host:80",
				"-foo.example",
				"foo-.example",
				"a..b",
				".",
				"foo.example..",
				"foo.123",
				"bücher.example",
				strings.Repeat("a", 64) + ".example",
				name253 + "cc",
			},
			wantErrs: []string{
				`argument 1: "bad_host!": invalid host: '!' is not allowed in a hostname (letters, digits, '-', '_' and '.' are)`,
				`argument 2: "host:80": invalid host: not a valid IPv6 address`,
				`argument 3: "-foo.example": invalid host: label "-foo" starts or ends with '-'`,
				`argument 4: "foo-.example": invalid host: label "foo-" starts or ends with '-'`,
				`argument 5: "a..b": invalid host: empty label`,
				`argument 6: ".": invalid host: empty label`,
				`argument 7: "foo.example..": invalid host: empty label`,
				`argument 8: "foo.123": invalid host: last label "123" is all digits`,
				`argument 9: "bücher.example": invalid host: 'ü' is not allowed in a hostname (letters, digits, '-', '_' and '.' are)`,
				`argument 10: "` + strings.Repeat("a", 64) + `.example": invalid host: label "` + strings.Repeat("a", 64) + `" is 64 characters, more than 63`,
				`argument 11: "` + name253 + `cc": invalid host: hostname is 255 characters, more than 253`,
			},
		},
		{
			desc: "invalid addresses",
			args: []string{"10.0.0.300", "1.2.3", "1.2.3.4.5", "010.0.0.1", "12345", "1.2.3.4.", "2001:db8::g", "10.0.0.1%eth0", "fe80::1%a b", "fe80::1%" + strings.Repeat("z", 250)},
			wantErrs: []string{
				`argument 1: "10.0.0.300": invalid host: not a valid IPv4 address`,
				`argument 2: "1.2.3": invalid host: not a valid IPv4 address`,
				`argument 3: "1.2.3.4.5": invalid host: not a valid IPv4 address`,
				`argument 4: "010.0.0.1": invalid host: not a valid IPv4 address`,
				`argument 5: "12345": invalid host: not a valid IPv4 address`,
				`argument 6: "1.2.3.4.": invalid host: not a valid IPv4 address`,
				`argument 7: "2001:db8::g": invalid host: not a valid IPv6 address`,
				`argument 8: "10.0.0.1%eth0": invalid host: '%' is not allowed in a hostname (letters, digits, '-', '_' and '.' are)`,
				`argument 9: "fe80::1%a b": invalid host: zone "a b" is not an interface name`,
				// It would pass here and fail at task creation, leaving a
				// batch half-created.
				`argument 10: "fe80::1%` + strings.Repeat("z", 250) + `": invalid host: zone "` + strings.Repeat("z", 250) + `" is not an interface name`,
			},
		},
		{
			desc: "invalid CIDRs",
			args: []string{"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/08", "10.0.0.0/x", "2001:db8::/129", "10.0.0.300/24", "10/8", "fe80::%eth0/64"},
			wantErrs: []string{
				`argument 1: "10.0.0.0/33": invalid CIDR: prefix length "33" is not a number from 0 to 32`,
				`argument 2: "10.0.0.0/": invalid CIDR: prefix length "" is not a number from 0 to 32`,
				`argument 3: "10.0.0.0/08": invalid CIDR: prefix length "08" is not a number from 0 to 32`,
				`argument 4: "10.0.0.0/x": invalid CIDR: prefix length "x" is not a number from 0 to 32`,
				`argument 5: "2001:db8::/129": invalid CIDR: prefix length "129" is not a number from 0 to 128`,
				`argument 6: "10.0.0.300/24": invalid CIDR: "10.0.0.300" is not an IP address`,
				`argument 7: "10/8": invalid CIDR: "10" is not an IP address`,
				`argument 8: "fe80::%eth0/64": invalid CIDR: a prefix cannot have a zone`,
			},
		},
		{
			desc: "invalid ranges",
			args: []string{
				"10.0.0.1-300",
				"10.0.0.1-050",
				"10.0.0.10-5",
				"10.0.0.10-10.0.0.5",
				"2001:db8::2-2001:db8::1",
				"10.0.0.1-2001:db8::1",
				"::ffff:10.0.0.1-10.0.0.5",
				"10.0.0.1-foo",
				"10.0.0.1-",
				"10.0.0.300-10.0.0.5",
				"2001:db8::1-5",
				"fe80::1%eth0-fe80::5",
				"fe80::1-fe80::5%eth0",
			},
			wantErrs: []string{
				`argument 1: "10.0.0.1-300": invalid range: end 300 is not an IPv4 octet (0-255)`,
				`argument 2: "10.0.0.1-050": invalid range: end 050 is not an IPv4 octet (0-255)`,
				`argument 3: "10.0.0.10-5": invalid range: end 10.0.0.5 is before start 10.0.0.10`,
				`argument 4: "10.0.0.10-10.0.0.5": invalid range: end 10.0.0.5 is before start 10.0.0.10`,
				`argument 5: "2001:db8::2-2001:db8::1": invalid range: end 2001:db8::1 is before start 2001:db8::2`,
				`argument 6: "10.0.0.1-2001:db8::1": invalid range: start and end are not both IPv4 or both IPv6`,
				`argument 7: "::ffff:10.0.0.1-10.0.0.5": invalid range: start and end are not both IPv4 or both IPv6`,
				`argument 8: "10.0.0.1-foo": invalid range: end "foo" is not an IP address`,
				`argument 9: "10.0.0.1-": invalid range: end "" is not an IP address`,
				`argument 10: "10.0.0.300-10.0.0.5": invalid range: start "10.0.0.300" is not an IP address`,
				`argument 11: "2001:db8::1-5": invalid range: end 5 is a last octet, which needs an IPv4 start; write the full end address`,
				`argument 12: "fe80::1%eth0-fe80::5": invalid range: a range cannot have a zone`,
				`argument 13: "fe80::1-fe80::5%eth0": invalid range: a range cannot have a zone`,
			},
		},
		{
			desc: "entries larger than the expansion limit",
			args: []string{
				"10.0.0.0/8",
				"0.0.0.0/0",
				"0.0.0.0-255.255.255.255",
				"2001:db8::/66",
				"2001:db8::/65",
				"2001:db8::/64",
				"::/0",
				"::-::7fff:ffff:ffff:fffe",
				"::-::7fff:ffff:ffff:ffff",
				"::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
			},
			wantErrs: []string{
				`argument 1: "10.0.0.0/8": too large: expands to 16777214 hosts, more than the limit of 65536` + tooLargeHint,
				`argument 2: "0.0.0.0/0": too large: expands to 4294967294 hosts, more than the limit of 65536` + tooLargeHint,
				`argument 3: "0.0.0.0-255.255.255.255": too large: expands to 4294967296 hosts, more than the limit of 65536` + tooLargeHint,
				`argument 4: "2001:db8::/66": too large: expands to 4611686018427387904 hosts, more than the limit of 65536` + tooLargeHint,
				`argument 5: "2001:db8::/65": too large: expands to 2^63 hosts, more than the limit of 65536` + tooLargeHint,
				`argument 6: "2001:db8::/64": too large: expands to 2^64 hosts, more than the limit of 65536` + tooLargeHint,
				`argument 7: "::/0": too large: expands to 2^128 hosts, more than the limit of 65536` + tooLargeHint,
				`argument 8: "::-::7fff:ffff:ffff:fffe": too large: expands to 9223372036854775807 hosts, more than the limit of 65536` + tooLargeHint,
				`argument 9: "::-::7fff:ffff:ffff:ffff": too large: expands to 2^63 or more hosts, more than the limit of 65536` + tooLargeHint,
				`argument 10: "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff": too large: expands to 2^63 or more hosts, more than the limit of 65536` + tooLargeHint,
			},
		},
		{
			desc: "entries just over a small expansion limit",
			args: []string{"10.0.0.0/29", "10.0.0.1-7", "2001:db8::/125"},
			lim:  enqueuer.Limits{MaxExpand: 5},
			wantErrs: []string{
				`argument 1: "10.0.0.0/29": too large: expands to 6 hosts, more than the limit of 5` + tooLargeHint,
				`argument 2: "10.0.0.1-7": too large: expands to 7 hosts, more than the limit of 5` + tooLargeHint,
				`argument 3: "2001:db8::/125": too large: expands to 8 hosts, more than the limit of 5` + tooLargeHint,
			},
		},
		{
			desc: "duplicates do not count towards the host limit",
			args: []string{"10.0.0.1", "10.0.0.1", "10.0.0.0/30", "10.0.0.3"},
			lim:  enqueuer.Limits{MaxHosts: 3},
			want: []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"},
		},
		{
			desc: "host limit drops the crossing entry and stops",
			args: []string{"bad!", "10.0.0.1", "10.0.0.0/29", "10.0.0.9", "also-bad!"},
			lim:  enqueuer.Limits{MaxHosts: 5},
			want: []string{"10.0.0.1"},
			wantErrs: []string{
				`argument 1: "bad!": invalid host: '!' is not allowed in a hostname (letters, digits, '-', '_' and '.' are)`,
				`argument 3: "10.0.0.0/29": too large: batch would exceed the limit of 5 hosts`,
			},
		},
		{
			desc: "valid entries are kept around invalid ones",
			args: []string{"10.0.0.1", "10.0.0.300", "host.example"},
			want: []string{"10.0.0.1", "host.example"},
			wantErrs: []string{
				`argument 2: "10.0.0.300": invalid host: not a valid IPv4 address`,
			},
		},
		{
			desc: "no entries",
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			hosts, errs := enqueuer.ParseHosts(enqueuer.ArgEntries(tt.args), tt.lim)
			if diff := cmp.Diff(tt.want, hosts); diff != "" {
				t.Errorf("ParseHosts(%q) hosts mismatch (-want +got):\n%s", tt.args, diff)
			}
			if diff := cmp.Diff(tt.wantErrs, errorTexts(errs)); diff != "" {
				t.Errorf("ParseHosts(%q) errors mismatch (-want +got):\n%s", tt.args, diff)
			}
			if len(tt.wantErrs) == 0 && errs != nil {
				t.Errorf("ParseHosts(%q) errs = %#v, want nil", tt.args, errs)
			}
		})
	}
}

func TestParseHostsSentinels(t *testing.T) {
	t.Parallel()
	sentinels := []error{enqueuer.ErrInvalidHost, enqueuer.ErrInvalidRange, enqueuer.ErrInvalidCIDR, enqueuer.ErrTooLarge}
	tests := []struct {
		desc    string
		entries []enqueuer.Entry
		lim     enqueuer.Limits
		want    error
	}{
		{desc: "empty text", entries: []enqueuer.Entry{{Source: "request", Line: 1}}, want: enqueuer.ErrInvalidHost},
		{desc: "bad hostname", entries: []enqueuer.Entry{{Text: "bad_host!"}}, want: enqueuer.ErrInvalidHost},
		{desc: "bad IPv4", entries: []enqueuer.Entry{{Text: "10.0.0.300"}}, want: enqueuer.ErrInvalidHost},
		{desc: "bad range end", entries: []enqueuer.Entry{{Text: "10.0.0.1-300"}}, want: enqueuer.ErrInvalidRange},
		{desc: "mixed range", entries: []enqueuer.Entry{{Text: "10.0.0.1-::1"}}, want: enqueuer.ErrInvalidRange},
		{desc: "bad prefix length", entries: []enqueuer.Entry{{Text: "10.0.0.0/33"}}, want: enqueuer.ErrInvalidCIDR},
		{desc: "big CIDR", entries: []enqueuer.Entry{{Text: "10.0.0.0/8"}}, want: enqueuer.ErrTooLarge},
		{desc: "big range", entries: []enqueuer.Entry{{Text: "10.0.0.0-10.1.0.0"}}, want: enqueuer.ErrTooLarge},
		{
			desc:    "host limit",
			entries: []enqueuer.Entry{{Text: "10.0.0.1"}, {Text: "10.0.0.2"}},
			lim:     enqueuer.Limits{MaxHosts: 1},
			want:    enqueuer.ErrTooLarge,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			_, errs := enqueuer.ParseHosts(tt.entries, tt.lim)
			if len(errs) != 1 {
				t.Fatalf("ParseHosts() = %d errors (%v), want 1", len(errs), errs)
			}
			for _, s := range sentinels {
				if got, want := errors.Is(errs[0], s), errors.Is(s, tt.want); got != want {
					t.Errorf("errors.Is(%q, %q) = %v, want %v", errs[0], s, got, want)
				}
			}
			if !errors.Is(errs, tt.want) {
				t.Errorf("errors.Is(ErrorList, %q) = false, want true", tt.want)
			}
			var he *enqueuer.HostError
			if !errors.As(errs, &he) || he.Entry != tt.entries[len(tt.entries)-1] {
				t.Errorf("errors.As(ErrorList) = %v, want the entry %+v", he, tt.entries[len(tt.entries)-1])
			}
		})
	}
}

func TestHostsHostErrorText(t *testing.T) {
	t.Parallel()
	reason := fmt.Errorf("%w: end 300 is not an IPv4 octet (0-255)", enqueuer.ErrInvalidRange)
	tests := []struct {
		desc  string
		entry enqueuer.Entry
		want  string
	}{
		{
			desc:  "file",
			entry: enqueuer.Entry{Text: "10.0.0.1-300", Source: "hosts.txt", Line: 12},
			want:  `hosts.txt:12: "10.0.0.1-300": invalid range: end 300 is not an IPv4 octet (0-255)`,
		},
		{
			desc:  "stdin",
			entry: enqueuer.Entry{Text: "10.0.0.1-300", Source: "stdin", Line: 2},
			want:  `stdin:2: "10.0.0.1-300": invalid range: end 300 is not an IPv4 octet (0-255)`,
		},
		{
			desc:  "argument",
			entry: enqueuer.Entry{Text: "10.0.0.1-300", Source: "argument", Line: 3},
			want:  `argument 3: "10.0.0.1-300": invalid range: end 300 is not an IPv4 octet (0-255)`,
		},
		{
			desc:  "source without line",
			entry: enqueuer.Entry{Text: "10.0.0.1-300", Source: "request"},
			want:  `request: "10.0.0.1-300": invalid range: end 300 is not an IPv4 octet (0-255)`,
		},
		{
			desc:  "no source",
			entry: enqueuer.Entry{Text: "10.0.0.1-300"},
			want:  `"10.0.0.1-300": invalid range: end 300 is not an IPv4 octet (0-255)`,
		},
		{
			desc:  "text is quoted",
			entry: enqueuer.Entry{Text: "a\tb\"", Source: "argument", Line: 1},
			want:  `argument 1: "a\tb\"": invalid range: end 300 is not an IPv4 octet (0-255)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			err := &enqueuer.HostError{Entry: tt.entry, Err: reason}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("Error() mismatch (-want +got):\n%s", diff)
			}
			if !errors.Is(err, enqueuer.ErrInvalidRange) {
				t.Errorf("errors.Is(%q, ErrInvalidRange) = false, want true", err)
			}
		})
	}
}

func TestParseHostsFromFile(t *testing.T) {
	t.Parallel()
	entries, err := enqueuer.ReadEntries(strings.NewReader("10.0.0.1\n# web\n10.0.0.2 10.0.0.1-300\n"), "hosts.txt")
	if err != nil {
		t.Fatal(err)
	}
	hosts, errs := enqueuer.ParseHosts(entries, enqueuer.Limits{})
	if diff := cmp.Diff([]string{"10.0.0.1", "10.0.0.2"}, hosts); diff != "" {
		t.Errorf("hosts mismatch (-want +got):\n%s", diff)
	}
	want := `hosts.txt:3: "10.0.0.1-300": invalid range: end 300 is not an IPv4 octet (0-255)`
	if diff := cmp.Diff(want, errs.Error()); diff != "" {
		t.Errorf("ErrorList.Error() mismatch (-want +got):\n%s", diff)
	}
}

func TestHostsErrorListText(t *testing.T) {
	t.Parallel()
	list := func(n int) enqueuer.ErrorList {
		var l enqueuer.ErrorList
		for i := range n {
			l = append(l, &enqueuer.HostError{
				Entry: enqueuer.Entry{Text: "x!", Source: "hosts.txt", Line: i + 1},
				Err:   enqueuer.ErrInvalidHost,
			})
		}
		return l
	}
	lines := func(from, to int) []string {
		var s []string
		for i := from; i <= to; i++ {
			s = append(s, fmt.Sprintf(`hosts.txt:%d: "x!": invalid host`, i))
		}
		return s
	}
	tests := []struct {
		desc string
		list enqueuer.ErrorList
		want []string
	}{
		{desc: "one", list: list(1), want: lines(1, 1)},
		{desc: "twenty", list: list(20), want: lines(1, 20)},
		{desc: "twenty-one", list: list(21), want: append(lines(1, 20), "... and 1 more invalid entry")},
		{desc: "twenty-five", list: list(25), want: append(lines(1, 20), "... and 5 more invalid entries")},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			got := strings.Split(tt.list.Error(), "\n")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Error() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestArgEntries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		args []string
		want []enqueuer.Entry
	}{
		{desc: "none"},
		{
			desc: "positions count skipped arguments",
			args: []string{"10.0.0.1", "  ", "", " host.example\t", "10.0.0.0/30"},
			want: []enqueuer.Entry{
				{Text: "10.0.0.1", Source: "argument", Line: 1},
				{Text: "host.example", Source: "argument", Line: 4},
				{Text: "10.0.0.0/30", Source: "argument", Line: 5},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, enqueuer.ArgEntries(tt.args)); diff != "" {
				t.Errorf("ArgEntries(%q) mismatch (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}

func TestReadEntries(t *testing.T) {
	t.Parallel()
	entry := func(text string, line int) enqueuer.Entry {
		return enqueuer.Entry{Text: text, Source: "hosts.txt", Line: line}
	}
	long := strings.Repeat("a", 1<<20)
	tests := []struct {
		desc string
		in   string
		want []enqueuer.Entry
	}{
		{desc: "empty"},
		{desc: "only comments and blanks", in: "# hosts\n\n   \n\t# more\n"},
		{
			desc: "one per line",
			in:   "10.0.0.1\nhost.example\n10.0.0.0/30\n",
			want: []enqueuer.Entry{entry("10.0.0.1", 1), entry("host.example", 2), entry("10.0.0.0/30", 3)},
		},
		{
			desc: "comments and blank lines keep line numbers",
			in:   "# web tier\n\n10.0.0.1 # primary\n  \n#10.0.0.2\nhost.example#inline\n",
			want: []enqueuer.Entry{entry("10.0.0.1", 3), entry("host.example", 6)},
		},
		{
			desc: "CRLF",
			in:   "10.0.0.1\r\n\r\n10.0.0.2 # x\r\n10.0.0.3",
			want: []enqueuer.Entry{entry("10.0.0.1", 1), entry("10.0.0.2", 3), entry("10.0.0.3", 4)},
		},
		{
			desc: "several per line",
			in:   "10.0.0.1 10.0.0.2\t10.0.0.3-5\n  a.example   b.example  \n",
			want: []enqueuer.Entry{
				entry("10.0.0.1", 1), entry("10.0.0.2", 1), entry("10.0.0.3-5", 1),
				entry("a.example", 2), entry("b.example", 2),
			},
		},
		{
			desc: "byte order mark",
			in:   "\uFEFF10.0.0.1\n",
			want: []enqueuer.Entry{entry("10.0.0.1", 1)},
		},
		{
			desc: "line of 1 MiB",
			in:   "10.0.0.1\n" + long + "\r\n",
			want: []enqueuer.Entry{entry("10.0.0.1", 1), entry(long, 2)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			got, err := enqueuer.ReadEntries(strings.NewReader(tt.in), "hosts.txt")
			if err != nil {
				t.Fatalf("ReadEntries() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ReadEntries(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestReadEntriesError(t *testing.T) {
	t.Parallel()
	errDisk := errors.New("disk on fire")
	tests := []struct {
		desc    string
		in      string
		readErr error
		want    string
	}{
		{
			desc: "line over 1 MiB",
			in:   "10.0.0.1\n" + strings.Repeat("a", 1<<20+1) + "\n",
			want: "read hosts.txt: line 2 is longer than 1 MiB",
		},
		{
			desc:    "read error",
			in:      "10.0.0.1\n10.0.0.2",
			readErr: errDisk,
			want:    "read hosts.txt: disk on fire",
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			var rd io.Reader = strings.NewReader(tt.in)
			if tt.readErr != nil {
				rd = io.MultiReader(rd, iotest.ErrReader(tt.readErr))
			}
			got, err := enqueuer.ReadEntries(rd, "hosts.txt")
			if err == nil {
				t.Fatalf("ReadEntries() = %d entries, no error; want error", len(got))
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("ReadEntries() error mismatch (-want +got):\n%s", diff)
			}
			if tt.readErr != nil && !errors.Is(err, tt.readErr) {
				t.Errorf("errors.Is(%q, %q) = false, want true", err, tt.readErr)
			}
		})
	}
}
