package main

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/enqueuer"
	"github.com/pingfleet/pingfleet/tasks"
)

// batchFlags are the flags of commands that submit a batch.
type batchFlags struct {
	files       []string
	skipInvalid bool
	maxExpand   int
	maxHosts    int
	batchID     string
	labels      []string
	deadline    time.Duration
	callbackURL string
	callbacks   callbackFlags // --callback-allow, with --callback-url
	priority    string
	maxInFlight int

	count    int
	perReq   int // -C: count, each request's RTT kept
	retries  int
	backoff  float64
	fs       *pflag.FlagSet // to tell a flag given from its default
	interval time.Duration
	timeout  time.Duration
	size     int
	ttl      int
	ipv4     bool
	ipv6     bool
	network  string
	tos      int
	df       bool
	names    bool
	source   string
	iface    string
	mark     uint32
	rate     int
}

func (b *batchFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVarP(&b.files, "file", "f", nil, "read hosts from `FILE` (one or more per line, # comments); - for stdin; repeatable")
	fs.BoolVar(&b.skipInvalid, "skip-invalid", false, "report invalid hosts but submit the valid ones")
	fs.IntVar(&b.maxExpand, "max-expand", enqueuer.DefaultMaxExpand, "most hosts one CIDR or range may expand to")
	fs.IntVar(&b.maxHosts, "max-hosts", enqueuer.DefaultMaxHosts, "most hosts in one batch")
	fs.StringVar(&b.batchID, "batch-id", "", "batch ID (default: a new ULID); the ID of an interrupted batch resumes it, that of an ended one pings nothing again")
	fs.StringArrayVar(&b.labels, "label", nil, "label the batch with `KEY=VALUE`; repeatable")
	fs.DurationVar(&b.deadline, "deadline", 0, "expire the hosts not pinged this long after submission (default: once no result came for 5 minutes)")
	fs.IntVar(&b.maxInFlight, "max-in-flight", 0, "most hosts of this batch pinged at once across the fleet, its cap on the fleet's share (0: none of its own)")
	fs.StringVar(&b.priority, "priority", string(tasks.PriorityNormal), "the batch's share of the fleet against other batches: low, normal, high (weights 1, 3, 9) or urgent (served before all others, for a few hosts)")

	b.fs = fs
	fs.IntVarP(&b.count, "count", "c", 0, "echo requests per host, as fping -c (default: fping's reachability check: one request, retried until the first reply, see --retries)")
	fs.IntVarP(&b.perReq, "vcount", "C", 0, "as -c, and keep each request's RTT (lost ones as such), as fping -C")
	fs.IntVarP(&b.retries, "retries", "r", tasks.DefaultRetries, "without --count: more requests to a host that has not answered, as fping -r")
	fs.Float64VarP(&b.backoff, "backoff", "B", tasks.DefaultBackoff, "without --count: each retry waits this many times longer than the one before, as fping -B")
	b.interval, b.timeout = tasks.DefaultInterval, tasks.DefaultTimeout
	fs.VarP(msDuration{&b.interval}, "interval", "p", "time between requests to one host; a bare number is milliseconds, as fping -p's")
	fs.VarP(msDuration{&b.timeout}, "timeout", "t", "how long to wait for a reply; a bare number is milliseconds, as fping -t's")
	fs.IntVarP(&b.size, "size", "b", tasks.DefaultSize, "ICMP data bytes per request")
	fs.IntVar(&b.ttl, "ttl", 64, "IP time to live of requests")
	fs.BoolVarP(&b.ipv4, "ipv4", "4", false, "resolve and ping IPv4 only")
	fs.BoolVarP(&b.ipv6, "ipv6", "6", false, "resolve and ping IPv6 only")
	fs.StringVar(&b.network, "network", tasks.NetworkIP, "address family: ip (IPv4 first, then IPv6), ip4 or ip6")
	fs.IntVar(&b.tos, "tos", 0, "IPv4 TOS / IPv6 traffic class byte of requests")
	fs.BoolVar(&b.df, "dont-fragment", false, "set the don't-fragment bit")
	fs.BoolVarP(&b.names, "name", "n", false, "look up each address's name by reverse DNS (on the worker) and show it for the host, as fping -n")
	fs.StringVar(&b.source, "source", "", "source `ADDRESS` of requests (needs -4 or -6)")
	fs.StringVarP(&b.iface, "interface", "I", "", "send requests through network `DEVICE`")
	fs.IntVar(&b.rate, "batch-rate", 0, "most pings per second of this batch across the fleet (0: no limit of its own)")
	fs.Uint32Var(&b.mark, "mark", 0, "socket mark (SO_MARK) of requests, for policy routing")
}

// flagOf names the flag of the options whose JSON name is not the flag's.
var flagOf = map[string]string{"iface": "interface", "batch_rate": "batch-rate", "df": "dont-fragment"}

// options returns the ping options the flags describe, validated.
func (b *batchFlags) options() (tasks.PingOptions, error) {
	if b.ipv4 && b.ipv6 {
		return tasks.PingOptions{}, usageErr("--ipv4 and --ipv6 exclude each other")
	}
	rtts := false
	if b.fs.Changed("vcount") {
		if b.fs.Changed("count") {
			return tasks.PingOptions{}, usageErr("-c and -C exclude each other: -C N is -c N keeping each request's RTT")
		}
		b.count, rtts = b.perReq, true
		if b.count < 1 {
			return tasks.PingOptions{}, usageErr("--vcount %q: must be between 1 and %d", strconv.Itoa(b.count), tasks.MaxCount)
		}
	}
	if b.fs.Changed("count") && b.count < 1 {
		return tasks.PingOptions{}, usageErr("--count %q: must be between 1 and %d (without --count: one request and its retries)", strconv.Itoa(b.count), tasks.MaxCount)
	}
	retries, backoff := b.retries, b.backoff
	if b.count > 0 && !b.fs.Changed("retries") { // also with -C
		retries = 0 // -c N sends N requests and no retry, as fping's
	}
	if retries == 0 {
		backoff = 0
	}
	if retries == 0 && b.count == 0 {
		b.count = 1 // --retries 0: one request
	}
	o := tasks.PingOptions{
		Count:        b.count,
		Retries:      retries,
		Backoff:      backoff,
		RTTs:         rtts,
		Names:        b.names,
		Interval:     tasks.Duration(b.interval),
		Timeout:      tasks.Duration(b.timeout),
		Size:         b.size,
		TTL:          b.ttl,
		Network:      b.network,
		TOS:          b.tos,
		DontFragment: b.df,
		Source:       b.source,
		Interface:    b.iface,
		Mark:         b.mark,
		BatchRate:    b.rate,
	}
	if b.ipv4 {
		o.Network = tasks.NetworkIP4
	}
	if b.ipv6 {
		o.Network = tasks.NetworkIP6
	}
	if err := o.Normalize().Validate(); err != nil {
		var fe *tasks.FieldError
		if errors.As(err, &fe) { // named as in JSON: say the flag
			return o, usageErr("--%s %q: %s", cmp.Or(flagOf[fe.Field], fe.Field), fe.Value, fe.Reason)
		}
		return o, usageErr("--%v", err)
	}
	return o, nil
}

func (b *batchFlags) labelMap() (map[string]string, error) {
	m, err := parseLabels(b.labels)
	if err != nil {
		return nil, err
	}
	if errs := aggregator.CheckLabels(m); len(errs) > 0 {
		return nil, usageErr("--label: %v", errs[0])
	}
	return m, nil
}

// parseLabels reads --label KEY=VALUE flags; nil when there are none.
func parseLabels(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, l := range pairs {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, usageErr("--label %q: use KEY=VALUE", l)
		}
		m[k] = v
	}
	return m, nil
}

// hosts reads the host expressions from the arguments, the files and stdin,
// and expands them. Invalid entries are all reported; unless --skip-invalid
// is set, any of them fails the command before anything is written.
func (a *app) hosts(b *batchFlags, args []string) ([]string, error) {
	var entries []enqueuer.Entry
	readStdin := false
	read := func(name string) error {
		if name == "-" {
			if readStdin {
				return nil
			}
			readStdin = true
			es, err := enqueuer.ReadEntries(a.stdin, "stdin")
			if err != nil {
				return usageErr("read stdin: %v", err)
			}
			entries = append(entries, es...)
			return nil
		}
		f, err := os.Open(name)
		if err != nil {
			return usageErr("read hosts: %v", err)
		}
		defer f.Close()
		es, err := enqueuer.ReadEntries(f, name)
		if err != nil {
			return usageErr("read hosts from %s: %v", name, err)
		}
		entries = append(entries, es...)
		return nil
	}
	for _, e := range enqueuer.ArgEntries(args) {
		if e.Text == "-" {
			if err := read("-"); err != nil {
				return nil, err
			}
			continue
		}
		entries = append(entries, e)
	}
	for _, f := range b.files {
		if err := read(f); err != nil {
			return nil, err
		}
	}
	if len(entries) == 0 {
		return nil, usageErr("no hosts given: name them as arguments, with -f FILE, or - for stdin")
	}
	hosts, errs := enqueuer.ParseHosts(entries, enqueuer.Limits{MaxExpand: b.maxExpand, MaxHosts: b.maxHosts})
	if len(errs) > 0 {
		if !b.skipInvalid {
			return nil, usageErr("%d invalid host entries, nothing submitted (use --skip-invalid to submit the valid ones):\n%v", len(errs), errs)
		}
		fmt.Fprintf(a.stderr, "pingfleet: skipping %d invalid host entries:\n%v\n", len(errs), errs)
	}
	if len(hosts) == 0 {
		return nil, usageErr("no valid hosts to ping")
	}
	return hosts, nil
}

// msDuration is a duration flag that, like fping's -p and -t, reads a bare
// number as milliseconds ("500" is 500ms); "1.5s" and other Go durations
// work too.
type msDuration struct{ d *time.Duration }

// secDuration is msDuration for flags whose bare numbers fping reads as
// seconds (-Q).
type secDuration struct{ d *time.Duration }

func (s secDuration) String() string { return msDuration(s).String() }

func (s secDuration) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		*s.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q: use seconds (5) or a duration (1.5s)", v)
	}
	*s.d = d
	return nil
}

func (secDuration) Type() string { return "s|duration" }

func (m msDuration) String() string {
	if m.d == nil {
		return ""
	}
	return m.d.String()
}

func (m msDuration) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		*m.d = time.Duration(n * float64(time.Millisecond))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q: use milliseconds (500) or a duration (1.5s)", s)
	}
	*m.d = d
	return nil
}

func (msDuration) Type() string { return "ms|duration" }
