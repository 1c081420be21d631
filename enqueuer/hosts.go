package enqueuer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
)

// Entry is one host expression as the user wrote it, with where it came
// from, so that an error can point at it.
type Entry struct {
	Text   string // e.g. "10.0.0.0/30", "host.example", "10.0.0.1-50"
	Source string // "argument" for command-line args, a file name, or "stdin", or "request"
	Line   int    // 1-based line number in the file, or 1-based position among arguments
}

// sourceArgument is the Source of entries from ArgEntries; errors name
// them by position ("argument 3") rather than as a file line.
const sourceArgument = "argument"

// ArgEntries turns command-line arguments into entries with Source
// "argument" and Line the argument's position, 1..n. Whitespace-only
// arguments are skipped but still count, so positions match what the user
// typed.
func ArgEntries(args []string) []Entry {
	var entries []Entry
	for i, a := range args {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		entries = append(entries, Entry{Text: a, Source: sourceArgument, Line: i + 1})
	}
	return entries
}

// maxLine bounds one line of a host list; a longer line is almost surely a
// file given by mistake, not hosts.
const maxLine = 1 << 20

// ReadEntries reads host expressions from r, like fping -f: text after '#'
// is a comment, blank lines are skipped, and a line may hold several
// whitespace-separated expressions, each reported with that line's number.
// Lines may be up to 1 MiB long. Invalid expressions are not an error here
// (ParseHosts reports them); the error is for reading only.
func ReadEntries(r io.Reader, source string) ([]Entry, error) {
	sc := bufio.NewScanner(r)
	// Room for a maximal line plus its "\r\n".
	sc.Buffer(make([]byte, 0, 64*1024), maxLine+2)
	var entries []Entry
	n := 0
	for sc.Scan() {
		n++
		if len(sc.Bytes()) > maxLine {
			return nil, fmt.Errorf("read %s: line %d is longer than 1 MiB", source, n)
		}
		line := sc.Text()
		if n == 1 {
			// Windows editors may start the file with a byte order mark.
			line = strings.TrimPrefix(line, "\uFEFF")
		}
		line, _, _ = strings.Cut(line, "#")
		for _, f := range strings.Fields(line) {
			entries = append(entries, Entry{Text: f, Source: source, Line: n})
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("read %s: line %d is longer than 1 MiB", source, n+1)
		}
		return nil, fmt.Errorf("read %s: %w", source, err)
	}
	return entries, nil
}

// Default limits, used when a Limits field is zero.
const (
	DefaultMaxExpand = 65536
	DefaultMaxHosts  = 1_000_000
)

// Limits bounds expansion, so that a typo such as /8 for /24 is an error
// rather than millions of tasks. Zero (or negative) fields mean the
// defaults.
type Limits struct {
	MaxExpand int // max hosts one CIDR or range may expand to; default DefaultMaxExpand
	MaxHosts  int // max hosts in the whole list after dedup; default DefaultMaxHosts
}

func (l Limits) withDefaults() Limits {
	if l.MaxExpand <= 0 {
		l.MaxExpand = DefaultMaxExpand
	}
	if l.MaxHosts <= 0 {
		l.MaxHosts = DefaultMaxHosts
	}
	return l
}

// Errors wrapped by HostError.Err. They let callers tell malformed input
// from input that is only too big for the limits.
var (
	// ErrInvalidHost is a malformed IP address or hostname.
	ErrInvalidHost = errors.New("invalid host")
	// ErrInvalidRange is a malformed start-end address range.
	ErrInvalidRange = errors.New("invalid range")
	// ErrInvalidCIDR is a malformed address/length prefix.
	ErrInvalidCIDR = errors.New("invalid CIDR")
	// ErrTooLarge is an entry or a list that exceeds Limits.
	ErrTooLarge = errors.New("too large")
)

// HostLimitError is the error of the entry that would take a list past
// Limits.MaxHosts (the list, not the entry, is too large). It wraps
// ErrTooLarge.
type HostLimitError struct{ MaxHosts int }

func (e *HostLimitError) Error() string {
	return fmt.Sprintf("%v: batch would exceed the limit of %d hosts", ErrTooLarge, e.MaxHosts)
}

// Unwrap returns ErrTooLarge.
func (e *HostLimitError) Unwrap() error { return ErrTooLarge }

// HostError says which entry is wrong and why.
type HostError struct {
	Entry Entry
	Err   error
}

// Error returns `<source>:<line>: "<text>": <reason>`, or
// `argument <n>: "<text>": <reason>` for command-line arguments.
func (e *HostError) Error() string {
	var loc string
	switch {
	case e.Entry.Source == sourceArgument:
		loc = fmt.Sprintf("argument %d: ", e.Entry.Line)
	case e.Entry.Source != "" && e.Entry.Line > 0:
		loc = fmt.Sprintf("%s:%d: ", e.Entry.Source, e.Entry.Line)
	case e.Entry.Source != "":
		loc = e.Entry.Source + ": "
	}
	return fmt.Sprintf("%s%q: %v", loc, e.Entry.Text, e.Err)
}

// Unwrap returns the reason, which wraps one of the ErrXxx sentinels.
func (e *HostError) Unwrap() error { return e.Err }

// maxListed is how many entries ErrorList.Error spells out; past that a
// user needs the count, not a wall of text.
const maxListed = 20

// ErrorList is every invalid entry of one parse, in input order.
type ErrorList []*HostError

// Error returns one line per entry, the first 20 only, then how many more
// there are.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i == maxListed {
			more := len(l) - maxListed
			noun := "entries"
			if more == 1 {
				noun = "entry"
			}
			fmt.Fprintf(&b, "\n... and %d more invalid %s", more, noun)
			break
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the entries' errors, so errors.Is and errors.As see
// through the list.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// ParseHosts expands entries (IP addresses, hostnames, CIDR prefixes and
// address ranges) to a de-duplicated host list in first-seen order. Hosts
// from valid entries are always returned; errs lists each invalid entry in
// input order, and is nil when there is none, so that the caller can decide
// whether to go on without them. Test len(errs) before returning errs as an
// error: a nil ErrorList in an error interface is not a nil error.
//
// When the list would exceed lim.MaxHosts, the entry that crosses the limit
// is reported, none of its hosts are kept, and later entries are not read.
func ParseHosts(entries []Entry, lim Limits) (hosts []string, errs ErrorList) {
	lim = lim.withDefaults()
	seen := make(map[string]struct{})
	for _, e := range entries {
		seq, err := expand(e.Text, lim.MaxExpand)
		if err != nil {
			errs = append(errs, &HostError{Entry: e, Err: err})
			continue
		}
		mark := len(hosts)
		full := false
		for h := range seq {
			if _, dup := seen[h]; dup {
				continue
			}
			if len(hosts) == lim.MaxHosts {
				full = true
				break
			}
			seen[h] = struct{}{}
			hosts = append(hosts, h)
		}
		if full {
			// Half an entry would be a batch nobody asked for.
			hosts = hosts[:mark]
			errs = append(errs, &HostError{
				Entry: e,
				Err:   &HostLimitError{MaxHosts: lim.MaxHosts},
			})
			break
		}
	}
	return hosts, errs
}

// expand validates text and returns its hosts. Every check, including the
// size limit, happens before anything is yielded.
func expand(text string, maxExpand int) (iter.Seq[string], error) {
	if text == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidHost)
	}
	addr, addrErr := netip.ParseAddr(text)
	if addrErr == nil && validZone(addr.Zone()) {
		return addrs(addr, 1), nil
	}
	// A zone may hold '-' ("fe80::1%br-lan"), hence the address first; a
	// hostname may hold '-' too ("my-host"), hence the look at its start.
	if start, _, ok := strings.Cut(text, "/"); ok && (strings.Contains(start, ":") || numeric(start)) {
		return expandCIDR(text, maxExpand)
	}
	if start, end, ok := strings.Cut(text, "-"); ok && (strings.Contains(start, ":") || numeric(start) && strings.Contains(start, ".")) {
		return expandRange(start, end, maxExpand)
	}
	if addrErr == nil {
		return nil, fmt.Errorf("%w: zone %q is not an interface name", ErrInvalidHost, addr.Zone())
	}
	h, err := hostname(text)
	if err != nil {
		return nil, err
	}
	return func(yield func(string) bool) { yield(h) }, nil
}

// validZone rejects zones no interface can have, so that "fe80::1%a-fe80::2"
// is read as a range and a zone never holds the separators of a list. An
// interface name has at most 15 characters (IFNAMSIZ), an index 10 digits.
func validZone(z string) bool {
	if len(z) > maxZone {
		return false
	}
	for i := 0; i < len(z); i++ {
		if c := z[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("/:%#", c) >= 0 {
			return false
		}
	}
	return true
}

const maxZone = 15

// numeric reports whether s has only digits and dots, and some digit.
func numeric(s string) bool {
	return strings.Trim(s, "0123456789.") == "" && strings.ContainsAny(s, "0123456789")
}

// addrs yields n addresses from first on.
func addrs(first netip.Addr, n uint64) iter.Seq[string] {
	return func(yield func(string) bool) {
		a := first
		for range n {
			if !yield(a.String()) {
				return
			}
			a = a.Next()
		}
	}
}

// expandCIDR accepts host bits in the address and masks them, like fping
// -g, since "10.0.0.5/24" clearly means the 10.0.0.0/24 network.
func expandCIDR(text string, maxExpand int) (iter.Seq[string], error) {
	addrText, lenText, _ := strings.Cut(text, "/")
	addr, err := netip.ParseAddr(addrText)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not an IP address", ErrInvalidCIDR, addrText)
	}
	if addr.Zone() != "" {
		return nil, fmt.Errorf("%w: a prefix cannot have a zone", ErrInvalidCIDR)
	}
	n, ok := decimal(lenText)
	if !ok || n > addr.BitLen() {
		return nil, fmt.Errorf("%w: prefix length %q is not a number from 0 to %d", ErrInvalidCIDR, lenText, addr.BitLen())
	}
	first := netip.PrefixFrom(addr, n).Masked().Addr()
	hostBits := addr.BitLen() - n
	var count uint64
	switch {
	case addr.Is4() && hostBits <= 1:
		// /32 is one host; /31 is a point-to-point link whose two
		// addresses are both hosts (RFC 3021).
		count = 1 << hostBits
	case addr.Is4():
		// Skip the network and broadcast addresses.
		first = first.Next()
		count = 1<<hostBits - 2
	case hostBits >= 63:
		return nil, tooLarge("2^"+strconv.Itoa(hostBits), maxExpand)
	default:
		// IPv6 has no broadcast address; every address is a host.
		count = 1 << hostBits
	}
	if count > uint64(maxExpand) {
		return nil, tooLarge(strconv.FormatUint(count, 10), maxExpand)
	}
	return addrs(first, count), nil
}

// expandRange reads "start-end" with two full addresses, or the short IPv4
// form "10.0.0.1-50" whose end is a last octet.
func expandRange(startText, endText string, maxExpand int) (iter.Seq[string], error) {
	start, err := netip.ParseAddr(startText)
	if err != nil {
		return nil, fmt.Errorf("%w: start %q is not an IP address", ErrInvalidRange, startText)
	}
	if start.Zone() != "" {
		return nil, fmt.Errorf("%w: a range cannot have a zone", ErrInvalidRange)
	}
	var end netip.Addr
	if endText != "" && strings.Trim(endText, "0123456789") == "" {
		if !start.Is4() {
			return nil, fmt.Errorf("%w: end %s is a last octet, which needs an IPv4 start; write the full end address", ErrInvalidRange, endText)
		}
		octet, ok := decimal(endText)
		if !ok || octet > 255 {
			return nil, fmt.Errorf("%w: end %s is not an IPv4 octet (0-255)", ErrInvalidRange, endText)
		}
		b := start.As4()
		b[3] = byte(octet)
		end = netip.AddrFrom4(b)
	} else {
		end, err = netip.ParseAddr(endText)
		if err != nil {
			return nil, fmt.Errorf("%w: end %q is not an IP address", ErrInvalidRange, endText)
		}
		if end.Zone() != "" {
			return nil, fmt.Errorf("%w: a range cannot have a zone", ErrInvalidRange)
		}
		if start.Is4() != end.Is4() {
			return nil, fmt.Errorf("%w: start and end are not both IPv4 or both IPv6", ErrInvalidRange)
		}
	}
	if end.Less(start) {
		return nil, fmt.Errorf("%w: end %s is before start %s", ErrInvalidRange, end, start)
	}
	count, ok := rangeSize(start, end)
	if !ok {
		return nil, tooLarge("2^63 or more", maxExpand)
	}
	if count > uint64(maxExpand) {
		return nil, tooLarge(strconv.FormatUint(count, 10), maxExpand)
	}
	return addrs(start, count), nil
}

// rangeSize returns the number of addresses from start to end inclusive
// (start <= end, same family), or false if it is 2^63 or more, which no
// limit allows.
func rangeSize(start, end netip.Addr) (uint64, bool) {
	s, e := start.As16(), end.As16()
	lo, borrow := bits.Sub64(be64(e[8:]), be64(s[8:]), 0)
	hi, _ := bits.Sub64(be64(e[:8]), be64(s[:8]), borrow)
	if hi != 0 || lo >= 1<<63-1 {
		return 0, false
	}
	return lo + 1, true
}

func be64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

func tooLarge(count string, maxExpand int) error {
	return fmt.Errorf("%w: expands to %s hosts, more than the limit of %d per entry; split it or raise the limit (--max-expand)", ErrTooLarge, count, maxExpand)
}

// decimal parses a prefix length or an octet: 1 to 3 digits, with no
// leading zero, which some tools read as octal.
func decimal(s string) (int, bool) {
	if s == "" || len(s) > 3 || s[0] == '0' && len(s) > 1 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// hostname validates a DNS name (RFC 1123, plus '_', which some internal
// zones use) and returns it lower-cased without its trailing dot, so that
// spellings of one name dedup to one host.
func hostname(text string) (string, error) {
	name := strings.TrimSuffix(text, ".")
	// The resolver would read these as (odd) IPv4 addresses, not names.
	if numeric(name) {
		return "", fmt.Errorf("%w: not a valid IPv4 address", ErrInvalidHost)
	}
	if strings.Contains(name, ":") {
		return "", fmt.Errorf("%w: not a valid IPv6 address", ErrInvalidHost)
	}
	for _, r := range name {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-_.", r)) {
			return "", fmt.Errorf("%w: %q is not allowed in a hostname (letters, digits, '-', '_' and '.' are)", ErrInvalidHost, r)
		}
	}
	if len(name) > 253 {
		return "", fmt.Errorf("%w: hostname is %d characters, more than 253", ErrInvalidHost, len(name))
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return "", fmt.Errorf("%w: empty label", ErrInvalidHost)
		case len(l) > 63:
			return "", fmt.Errorf("%w: label %q is %d characters, more than 63", ErrInvalidHost, l, len(l))
		case l[0] == '-' || l[len(l)-1] == '-':
			return "", fmt.Errorf("%w: label %q starts or ends with '-'", ErrInvalidHost, l)
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return "", fmt.Errorf("%w: last label %q is all digits", ErrInvalidHost, last)
	}
	return strings.ToLower(name), nil
}
