// Package tasks is the contract between the enqueuer and the workers: the
// task type names, the queues they travel on, the versioned payloads of
// ping and callback tasks (with their validation, encoder and decoder), and
// the target policy both sides enforce.
package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// TypePingHost is the asynq task type of "ping one host for one batch".
const TypePingHost = "ping:host"

// PayloadVersion is the version of PingPayload this code writes and reads.
// A worker refuses payloads of another version (permanently: retrying
// cannot help), so bump it only with a migration plan.
const PayloadVersion = 1

// DefaultShards is the number of queues ping tasks are spread over. Every
// asynq queue has one active list whose acknowledgement cost grows with the
// tasks in flight on it, and in Redis Cluster one queue lives on one node;
// several queues keep both small. Enqueuers and workers must agree on it.
const DefaultShards = 8

// QueuePrefix starts the name of every ping queue.
const QueuePrefix = "pingfleet-"

// Queue returns the queue that host's task goes to when tasks are spread
// over shards queues. The choice is a hash of the host, so a re-run enqueue
// puts a host's task on the same queue (where its task ID is checked).
func Queue(host string, shards int) string {
	if shards <= 1 {
		return QueuePrefix + "0"
	}
	h := fnv.New32a()
	h.Write([]byte(host))
	return QueuePrefix + strconv.Itoa(int(h.Sum32()%uint32(shards)))
}

// AsynqKeys is what every Redis key asynq (v0.26, internal/base) keeps
// for queue starts with: then ":pending", ":active", ":lease", ":t:<task
// ID>"... Those of pingfleet's packages that write asynq's tasks
// themselves (the enqueuer, the workers' recoverer, a cancel's clean-up)
// take it from here.
func AsynqKeys(queue string) string { return "asynq:{" + queue + "}" }

// WakeChannel is the Redis channel an enqueuer publishes on when it has put
// tasks in the queues, the batch's ID as the message ("" from older
// enqueuers: any queue). An idle worker looks at its queues only every
// --task-check-interval; one that hears this looks at once.
const WakeChannel = "pingfleet:wake"

// Queues returns the names of all shards queues, each with weight 1, in the
// form asynq.Config.Queues takes.
func Queues(shards int) map[string]int {
	shards = max(shards, 1)
	q := make(map[string]int, shards)
	for i := range shards {
		q[QueuePrefix+strconv.Itoa(i)] = 1
	}
	return q
}

// TaskID returns the asynq task ID of host's task in batch batchID. It is
// derived, not random, so enqueuing the same batch twice adds no task.
func TaskID(batchID, host string) string {
	return batchID + "/" + host
}

// Defaults and bounds of PingOptions. They follow fping where it has an
// equivalent: without a count, fping's reachability mode (one request,
// retried 3 times, each wait 1.5 times the one before, from 500 ms, until
// the first reply); 1 s between packets to one host (fping's -p default),
// 56 data bytes.
const (
	DefaultCount    = 1
	DefaultRetries  = 3
	DefaultBackoff  = 1.5
	DefaultInterval = time.Second
	DefaultTimeout  = 500 * time.Millisecond
	DefaultSize     = 56

	MaxRetries = 20
	MinBackoff = 1.0
	MaxBackoff = 5.0

	MaxCount    = 10000
	MinInterval = time.Millisecond
	MaxTimeout  = time.Minute
	// MinSize is what pro-bing needs in each packet for its timestamp and
	// tracker.
	MinSize = 24
	MaxSize = 65500
)

// Network selects the address family used to resolve and ping a host.
const (
	NetworkIP  = "ip"  // IPv4 first, then IPv6
	NetworkIP4 = "ip4" // IPv4 only
	NetworkIP6 = "ip6" // IPv6 only
)

// PingOptions say how one host is pinged. The zero value of a field means
// its default; Normalize fills them in.
type PingOptions struct {
	// Count is the number of echo requests sent, as fping -c. Without one
	// (0), fping's reachability mode: one request, and up to Retries more
	// until the first reply.
	Count int `json:"count,omitempty"`
	// Retries is how many more requests a host that has not answered gets,
	// each after waiting Backoff times longer than the one before (fping
	// -r, -B); only with a Count of 1. Default 3 when no Count is given, 0
	// with one.
	Retries int `json:"retries,omitempty"`
	// Backoff multiplies the wait before each retry (fping -B). Default 1.5.
	Backoff float64 `json:"backoff,omitempty"`
	// Interval is the time between two requests to the same host. Default 1s.
	Interval Duration `json:"interval,omitempty"`
	// Timeout is how long to wait for the reply to the last request (and
	// to each request, as every reply arrives within it). Default 500ms.
	Timeout Duration `json:"timeout,omitempty"`
	// Size is the number of ICMP data bytes. Default 56.
	Size int `json:"size,omitempty"`
	// TTL is the IP time to live (hop limit) of requests. Default 64.
	TTL int `json:"ttl,omitempty"`
	// Network is "ip" (default), "ip4" or "ip6".
	Network string `json:"network,omitempty"`
	// TOS is the IPv4 type of service (IPv6 traffic class) byte. Default 0.
	TOS int `json:"tos,omitempty"`
	// DontFragment sets the don't-fragment bit (IPv6: no fragmentation).
	DontFragment bool `json:"df,omitempty"`
	// RTTs records every request's RTT, a lost one as lost (fping -C). It
	// sits in DontFragment's padding: the options travel by value down to
	// the engine, and each byte of them is on the stack of every waiting
	// ping (see worker.Handler.ProcessTask).
	RTTs bool `json:"rtts,omitempty"`
	// Names asks for the name of each address pinged, by a reverse DNS
	// lookup from the worker (fping -n); a result then holds it. In the
	// same padding as RTTs.
	Names bool `json:"names,omitempty"`
	// Source is the source address of requests; empty: the kernel picks.
	Source string `json:"source,omitempty"`
	// Interface binds the requests to a network device.
	Interface string `json:"iface,omitempty"`
	// Mark is the socket mark (SO_MARK) for policy routing; needs CAP_NET_ADMIN.
	Mark uint32 `json:"mark,omitempty"`
	// BatchRate is the most pings per second of the whole batch across the
	// fleet; 0 means no limit of its own.
	BatchRate int `json:"batch_rate,omitempty"`
}

// Normalize returns o with defaults filled in.
func (o PingOptions) Normalize() PingOptions {
	if o.Count == 0 {
		o.Count = DefaultCount
		if o.Retries == 0 {
			o.Retries = DefaultRetries
		}
	}
	if o.Retries > 0 && o.Backoff == 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Interval == 0 {
		o.Interval = Duration(DefaultInterval)
	}
	if o.Timeout == 0 {
		o.Timeout = Duration(DefaultTimeout)
	}
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.TTL == 0 {
		o.TTL = 64
	}
	if o.Network == "" {
		o.Network = NetworkIP
	}
	return o
}

// Validate reports the first field of o out of bounds, naming the field as
// the CLI and API spell it. Zero values are out of bounds: call Normalize
// first to give them their defaults.
func (o PingOptions) Validate() error {
	switch {
	case o.Count < 1 || o.Count > MaxCount:
		return &FieldError{"count", strconv.Itoa(o.Count), fmt.Sprintf("must be between 1 and %d", MaxCount)}
	case o.Retries < 0 || o.Retries > MaxRetries:
		return &FieldError{"retries", strconv.Itoa(o.Retries), fmt.Sprintf("must be between 0 and %d", MaxRetries)}
	case o.Retries > 0 && o.Count > 1:
		return &FieldError{"retries", strconv.Itoa(o.Retries), "only without a count (or a count of 1): a count of N sends N requests, as fping -c"}
	case o.Retries > 0 && (o.Backoff < MinBackoff || o.Backoff > MaxBackoff):
		return &FieldError{"backoff", strconv.FormatFloat(o.Backoff, 'f', -1, 64), fmt.Sprintf("must be between %g and %g", MinBackoff, MaxBackoff)}
	case o.Interval.D() < MinInterval:
		return &FieldError{"interval", o.Interval.String(), "must be at least 1ms"}
	case o.Timeout.D() <= 0 || o.Timeout.D() > MaxTimeout:
		return &FieldError{"timeout", o.Timeout.String(), "must be more than 0 and at most 1m"}
	case o.Size < MinSize || o.Size > MaxSize:
		return &FieldError{"size", strconv.Itoa(o.Size), fmt.Sprintf("must be between %d and %d", MinSize, MaxSize)}
	case o.TTL < 1 || o.TTL > 255:
		return &FieldError{"ttl", strconv.Itoa(o.TTL), "must be between 1 and 255"}
	case o.Network != NetworkIP && o.Network != NetworkIP4 && o.Network != NetworkIP6:
		return &FieldError{"network", o.Network, `must be "ip", "ip4" or "ip6"`}
	case o.BatchRate < 0:
		return &FieldError{"batch_rate", strconv.Itoa(o.BatchRate), "must not be negative"}
	case o.TOS < 0 || o.TOS > 255:
		return &FieldError{"tos", strconv.Itoa(o.TOS), "must be between 0 and 255"}
	case len(o.Interface) > 15 || strings.ContainsAny(o.Interface, "/ \t"):
		return &FieldError{"iface", o.Interface, "must be a network device name"}
	}
	if o.Source != "" {
		src, err := netip.ParseAddr(o.Source)
		switch {
		case err != nil:
			return &FieldError{"source", o.Source, "must be an IP address"}
		case o.Network == NetworkIP:
			// Pinning the family avoids a source of one family for a
			// host that resolves to the other.
			return &FieldError{"source", o.Source, "needs --ipv4 or --ipv6 (network ip4 or ip6)"}
		case (o.Network == NetworkIP6) != src.Unmap().Is6():
			return &FieldError{"source", o.Source, "is not an address of network " + o.Network}
		}
	}
	return nil
}

// RunTime is the longest one ping of a host with these options may take:
// the requests spread over (Count-1) intervals, then the wait for the last
// reply; with retries, the waits of every try.
func (o PingOptions) RunTime() time.Duration {
	o = o.Normalize()
	if o.Retries > 0 {
		return o.retryTime()
	}
	return time.Duration(o.Count-1)*o.Interval.D() + o.Timeout.D()
}

// retryTime is the sum of the waits of a request and its retries.
func (o PingOptions) retryTime() time.Duration {
	var sum time.Duration
	wait := float64(o.Timeout.D())
	for range o.Retries + 1 {
		sum += time.Duration(wait)
		wait *= o.Backoff
	}
	return sum
}

// PingPayload is the payload of a TypePingHost task.
type PingPayload struct {
	// V is the payload version; see PayloadVersion.
	V int `json:"v"`
	// BatchID is the batch this host belongs to.
	BatchID string `json:"batch"`
	// Host is a hostname or an IP literal, as normalized by the enqueuer.
	Host string `json:"host"`
	// Options say how to ping it.
	Options PingOptions `json:"opts"`
}

// Sentinel errors of this package.
var (
	// ErrInvalidPayload is wrapped by every error of DecodePingPayload and
	// NewPingTask: the task can never succeed as it is.
	ErrInvalidPayload = errors.New("invalid ping payload")
)

// FieldError names an option field and why its value is refused.
type FieldError struct {
	Field, Value, Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

// Validate checks every field of p.
func (p PingPayload) Validate() error {
	if err := p.validateIDs(); err != nil {
		return err
	}
	if err := p.Options.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	return nil
}

// validateIDs checks the fields of p other than its options.
func (p PingPayload) validateIDs() error {
	switch {
	case p.V != PayloadVersion:
		return fmt.Errorf("%w: version %d, this build reads version %d", ErrInvalidPayload, p.V, PayloadVersion)
	case p.BatchID == "" || strings.ContainsAny(p.BatchID, "{}/ "):
		return fmt.Errorf("%w: batch ID %q", ErrInvalidPayload, p.BatchID)
	case p.Host == "" || len(p.Host) > 255 || strings.ContainsAny(p.Host, " \t\r\n/"):
		return fmt.Errorf("%w: host %q", ErrInvalidPayload, p.Host)
	}
	return nil
}

// NewPingTask returns the task that pings host for batchID. opts are passed
// to asynq (queue, task ID, retries, timeout...).
func NewPingTask(p PingPayload, opts ...asynq.Option) (*asynq.Task, error) {
	if p.V == 0 {
		p.V = PayloadVersion
	}
	p.Options = p.Options.Normalize()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	return asynq.NewTask(TypePingHost, b, opts...), nil
}

// DecodePingPayload parses and validates the payload of a TypePingHost task.
// A payload of another version is refused: a newer writer's fields would be
// silently misunderstood.
func DecodePingPayload(b []byte) (PingPayload, error) {
	var p PingPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return PingPayload{}, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	if err := p.Validate(); err != nil {
		return PingPayload{}, err
	}
	p.Options = p.Options.Normalize()
	return p, nil
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("1.5s"), which people can read in Redis and write in API requests.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string such as "250ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	// Every task payload holds two durations: read the plain quoted
	// string directly rather than through a nested json.Unmarshal.
	s := string(b)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' && !strings.ContainsAny(s[1:len(s)-1], `"\\`) {
		s = s[1 : len(s)-1]
	} else if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// TypeBatchCallback is the asynq task type of "POST batch X's summary to
// its callback URL". There is at most one such task per batch (its task ID
// derives from the batch ID and it is retained after success).
const TypeBatchCallback = "batch:callback"

// CallbackQueue is the queue of TypeBatchCallback tasks.
const CallbackQueue = "pingfleet-callbacks"

// CallbackMaxRetry is how often a failed callback delivery is retried
// (with backoff up to five minutes between tries: about an hour in all).
const CallbackMaxRetry = 15

// CallbackPayload is the payload of a TypeBatchCallback task.
type CallbackPayload struct {
	V       int    `json:"v"`
	BatchID string `json:"batch"`
}

// CallbackTaskID is the asynq task ID of batch batchID's callback: one per
// batch, whoever enqueues it.
func CallbackTaskID(batchID string) string { return "callback/" + batchID }

// NewCallbackTask returns the callback task of batch batchID, kept for
// retention after it succeeds so that it can never be enqueued twice.
func NewCallbackTask(batchID string, retention time.Duration) (*asynq.Task, error) {
	p := CallbackPayload{V: PayloadVersion, BatchID: batchID}
	if batchID == "" || strings.ContainsAny(batchID, "{}/ ") {
		return nil, fmt.Errorf("%w: batch ID %q", ErrInvalidPayload, batchID)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeBatchCallback, b,
		asynq.TaskID(CallbackTaskID(batchID)),
		asynq.Queue(CallbackQueue),
		asynq.MaxRetry(CallbackMaxRetry),
		asynq.Timeout(time.Minute),
		asynq.Retention(retention),
	), nil
}

// DecodeCallbackPayload parses a TypeBatchCallback payload.
func DecodeCallbackPayload(b []byte) (CallbackPayload, error) {
	var p CallbackPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	if p.V != PayloadVersion || p.BatchID == "" {
		return p, fmt.Errorf("%w: version %d, batch %q", ErrInvalidPayload, p.V, p.BatchID)
	}
	return p, nil
}
