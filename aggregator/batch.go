package aggregator

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/pingfleet/pingfleet/tasks"
)

// State is the lifecycle stage of a batch.
type State string

// Batch states.
const (
	// StateEnqueuing: the record exists, tasks are being enqueued.
	StateEnqueuing State = "enqueuing"
	// StateRunning: every task is enqueued; results are arriving.
	StateRunning State = "running"
	// StateComplete: every host has a result.
	StateComplete State = "complete"
	// StateCancelled: cancelled; hosts not pinged by then are "cancelled".
	StateCancelled State = "cancelled"
	// StateExpired: its deadline passed; hosts still pending are "expired".
	StateExpired State = "expired"
)

// Final reports whether s is a state a batch never leaves.
func (s State) Final() bool {
	return s == StateComplete || s == StateCancelled || s == StateExpired
}

// Status is the outcome of pinging one host.
type Status string

// Host statuses. Pending is never recorded; it is what Results reports for a
// host without a result yet.
const (
	StatusUp        Status = "up"        // at least one reply
	StatusDown      Status = "down"      // no reply
	StatusError     Status = "error"     // could not be pinged: name not resolved, socket refused...
	StatusPending   Status = "pending"   // no result yet
	StatusCancelled Status = "cancelled" // not pinged: the batch was cancelled
	StatusExpired   Status = "expired"   // not pinged before the batch's deadline
)

// Batch describes a batch: what the enqueuer submits and Create records.
type Batch struct {
	// ID names the batch. If empty, the enqueuer gives it a new ULID
	// (sorts by creation time). Giving the ID of an existing batch with
	// the same hosts and options resumes its enqueue.
	ID      string
	Hosts   []string
	Options tasks.PingOptions
	Labels  map[string]string
	// CallbackURL is POSTed the summary once the batch is final.
	CallbackURL string
	// Priority is the batch's claim on the fleet against other batches
	// (tasks.Priority); if empty, tasks.PriorityNormal.
	Priority tasks.Priority
	// MaxInFlight is the most of its hosts pinged at once across the
	// fleet; 0 for no cap of its own (tasks.Lane.InFlight).
	MaxInFlight int
	// Tenant is who submitted it through the API (tasks.ValidTenant), ""
	// for no tenant; TenantRate is the tenant's limit in pings per second
	// (0: none), given to its lane and not stored with the batch.
	Tenant     string
	TenantRate int
	// Deadline is when hosts still pending expire. If zero, the batch gets
	// DefaultDeadline, which follows its progress: each result moves it to
	// IdleTimeout after that result, so only a batch whose results stopped
	// coming (its workers are gone) expires.
	Deadline time.Time
}

// IdleTimeout is how long a batch without a deadline of its own may go
// without a result before it expires: five minutes and one host's ping
// time.
func IdleTimeout(opts tasks.PingOptions) time.Duration {
	return 5*time.Minute + opts.Normalize().RunTime()
}

// DefaultDeadline is the first deadline of a batch that has none: generous for
// its size (five minutes, plus one ping time per 1,000 hosts), so only a
// batch whose workers are gone reaches it.
func DefaultDeadline(created time.Time, hosts int, opts tasks.PingOptions) time.Time {
	per := opts.Normalize().RunTime()
	return created.Add(5*time.Minute + per*time.Duration(hosts/1000+1))
}

// Result is what one ping of one host found.
type Result struct {
	Host string `json:"host"`
	IP   string `json:"ip,omitempty"`
	// Name is the IP's name by reverse DNS, when the batch asked for names
	// (PingOptions.Names) and one was found.
	Name     string  `json:"name,omitempty"`
	Status   Status  `json:"status"`
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	LossPct  float64 `json:"loss_pct"`
	RTTMin   float64 `json:"rtt_min_ms"`
	RTTAvg   float64 `json:"rtt_avg_ms"`
	RTTMax   float64 `json:"rtt_max_ms"`
	RTTStdev float64 `json:"rtt_stddev_ms"`
	// RTTs is each request's RTT in ms, in the order sent, -1 for one that
	// got no reply: only when the batch's options asked (fping -C).
	RTTs []float64 `json:"rtts_ms,omitempty"`
	// ReplyTTL is the IP TTL (hop limit) of the last reply, 0 if none.
	ReplyTTL int       `json:"reply_ttl,omitempty"`
	Error    string    `json:"error,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
	Worker   string    `json:"worker,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
}

// Summary is the state of a batch and its figures across hosts.
type Summary struct {
	ID      string `json:"id"`
	State   State  `json:"state"`
	Total   int    `json:"total"`
	Done    int    `json:"done"`
	Pending int    `json:"pending"`
	Up      int    `json:"up"`
	Down    int    `json:"down"`
	Error   int    `json:"error"`
	// Cancelled and Expired count hosts never pinged because the batch was
	// cancelled or hit its deadline. Up+Down+Error+Cancelled+Expired = Done.
	Cancelled int `json:"cancelled"`
	Expired   int `json:"expired"`
	Sent      int `json:"sent"`
	Received  int `json:"received"`
	// LossPct is the share of all requests sent in the batch that got no reply.
	LossPct float64 `json:"loss_pct"`
	// RTT percentiles are over the average RTT of each host that is up
	// (nearest-rank method), in milliseconds, read from a histogram whose
	// buckets are 1 % wide: a percentile is within 0.5 % of the exact
	// value. RTTMax is exact.
	RTTP50 float64 `json:"rtt_p50_ms"`
	RTTP90 float64 `json:"rtt_p90_ms"`
	RTTP99 float64 `json:"rtt_p99_ms"`
	RTTMax float64 `json:"rtt_max_ms"`
	// Created is when the batch record was written, Started when its first
	// ping went out (the earliest start among its results), Finished when
	// its last result landed.
	Created  time.Time `json:"created"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// WaitSec is Started-Created: how long the batch waited for the fleet
	// (queued behind other batches, or for a free worker); absent until
	// its first result.
	WaitSec float64 `json:"wait_s,omitempty"`
	// DurationSec is Finished-Created, or the time since Created so far.
	DurationSec float64 `json:"duration_s"`
	// Priority is the batch's level against other batches (tasks.Priority).
	Priority tasks.Priority `json:"priority"`
	// MaxInFlight is its cap on hosts pinged at once, if any.
	MaxInFlight int `json:"max_in_flight,omitempty"`
	// Tenant is the API tenant that submitted it, if any.
	Tenant      string            `json:"tenant,omitempty"`
	Deadline    time.Time         `json:"deadline,omitzero"`
	Options     tasks.PingOptions `json:"options"`
	Labels      map[string]string `json:"labels,omitempty"`
	CallbackURL string            `json:"callback_url,omitempty"`
	// Cleaning says the tasks still queued of a cancelled or expired batch
	// are being deleted (see CleanedUp): workers skip them meanwhile.
	Cleaning bool `json:"cleaning,omitempty"`
}

// MarshalJSON writes s with a null loss when no request was sent and null
// RTT percentiles when no host is up: a 0 there would read as a figure.
// summaryJSON is Summary with those five as pointers, in the same order.
func (s Summary) MarshalJSON() ([]byte, error) {
	v := summaryJSON{s.ID, s.State, s.Total, s.Done, s.Pending, s.Up, s.Down, s.Error, s.Cancelled, s.Expired,
		s.Sent, s.Received, nil, nil, nil, nil, nil, s.Created, s.Started, s.Finished, s.WaitSec, s.DurationSec,
		s.Priority, s.MaxInFlight, s.Tenant, s.Deadline, s.Options, s.Labels, s.CallbackURL, s.Cleaning}
	if s.Sent > 0 {
		v.LossPct = &s.LossPct
	}
	if s.Up > 0 {
		v.RTTP50, v.RTTP90, v.RTTP99, v.RTTMax = &s.RTTP50, &s.RTTP90, &s.RTTP99, &s.RTTMax
	}
	return json.Marshal(v)
}

type summaryJSON struct {
	ID          string            `json:"id"`
	State       State             `json:"state"`
	Total       int               `json:"total"`
	Done        int               `json:"done"`
	Pending     int               `json:"pending"`
	Up          int               `json:"up"`
	Down        int               `json:"down"`
	Error       int               `json:"error"`
	Cancelled   int               `json:"cancelled"`
	Expired     int               `json:"expired"`
	Sent        int               `json:"sent"`
	Received    int               `json:"received"`
	LossPct     *float64          `json:"loss_pct"`
	RTTP50      *float64          `json:"rtt_p50_ms"`
	RTTP90      *float64          `json:"rtt_p90_ms"`
	RTTP99      *float64          `json:"rtt_p99_ms"`
	RTTMax      *float64          `json:"rtt_max_ms"`
	Created     time.Time         `json:"created"`
	Started     time.Time         `json:"started,omitzero"`
	Finished    time.Time         `json:"finished,omitzero"`
	WaitSec     float64           `json:"wait_s,omitempty"`
	DurationSec float64           `json:"duration_s"`
	Priority    tasks.Priority    `json:"priority"`
	MaxInFlight int               `json:"max_in_flight,omitempty"`
	Tenant      string            `json:"tenant,omitempty"`
	Deadline    time.Time         `json:"deadline,omitzero"`
	Options     tasks.PingOptions `json:"options"`
	Labels      map[string]string `json:"labels,omitempty"`
	CallbackURL string            `json:"callback_url,omitempty"`
	Cleaning    bool              `json:"cleaning,omitempty"`
}

// Completed reports whether the batch has reached a final state.
func (s Summary) Completed() bool { return s.State.Final() }

// Outcome is what Record did with a result.
type Outcome int

// Record outcomes.
const (
	// Duplicate: the host already had a result, or is not in the batch,
	// or the batch is final; nothing changed.
	Duplicate Outcome = iota
	// Counted: the result was stored and counted.
	Counted
	// Completed: the result was counted and was the batch's last. Exactly
	// one Record call per batch returns Completed.
	Completed
)

// LossPct is the share of sent requests that got no reply, in percent,
// rounded to a thousandth of a percent (33.333, not 33.33333333333333); 0
// when none was sent.
func LossPct(sent, received int) float64 {
	if sent <= 0 {
		return 0
	}
	return math.Round(float64(sent-received)/float64(sent)*100_000) / 1000
}

// MarshalJSON writes r with null RTTs when no reply came back, and a null
// loss when no request was sent: a 0 there would read as a figure (and
// skew an average taken over the column).
func (r Result) MarshalJSON() ([]byte, error) {
	var loss *float64
	if r.Sent > 0 {
		loss = &r.LossPct
	}
	var rtts [4]*float64
	if r.Received > 0 {
		rtts = [4]*float64{&r.RTTMin, &r.RTTAvg, &r.RTTMax, &r.RTTStdev}
	}
	return json.Marshal(struct {
		Host     string     `json:"host"`
		IP       string     `json:"ip,omitempty"`
		Name     string     `json:"name,omitempty"`
		Status   Status     `json:"status"`
		Sent     int        `json:"sent"`
		Received int        `json:"received"`
		LossPct  *float64   `json:"loss_pct"`
		RTTMin   *float64   `json:"rtt_min_ms"`
		RTTAvg   *float64   `json:"rtt_avg_ms"`
		RTTMax   *float64   `json:"rtt_max_ms"`
		RTTStdev *float64   `json:"rtt_stddev_ms"`
		RTTs     []*float64 `json:"rtts_ms,omitempty"`
		ReplyTTL int        `json:"reply_ttl,omitempty"`
		Error    string     `json:"error,omitempty"`
		Attempts int        `json:"attempts,omitempty"`
		Worker   string     `json:"worker,omitempty"`
		Started  time.Time  `json:"started,omitzero"`
		Finished time.Time  `json:"finished,omitzero"`
	}{r.Host, r.IP, r.Name, r.Status, r.Sent, r.Received, loss, rtts[0], rtts[1], rtts[2], rtts[3], perRequest(r.RTTs),
		r.ReplyTTL, r.Error, r.Attempts, r.Worker, r.Started, r.Finished})
}

// perRequest returns rtts with nil, a JSON null, for the requests lost.
func perRequest(rtts []float64) []*float64 {
	if rtts == nil {
		return nil
	}
	out := make([]*float64, len(rtts))
	for i := range rtts {
		if rtts[i] >= 0 {
			out[i] = &rtts[i]
		}
	}
	return out
}

// UnmarshalJSON reads what MarshalJSON writes: a null RTT is a lost
// request's.
func (r *Result) UnmarshalJSON(b []byte) error {
	type plain Result // without these methods
	var v struct {
		plain
		RTTs []*float64 `json:"rtts_ms"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Result(v.plain)
	if v.RTTs != nil {
		r.RTTs = make([]float64, len(v.RTTs))
		for i, p := range v.RTTs {
			r.RTTs[i] = -1
			if p != nil {
				r.RTTs[i] = *p
			}
		}
	}
	return nil
}

// Bounds of a batch's labels: they are stored with the batch and sent
// back in every listing and callback.
const (
	MaxLabels     = 20
	MaxLabelKey   = 64
	MaxLabelValue = 256
)

// LabelError says which label is wrong and why.
type LabelError struct {
	Key, Reason string
}

func (e *LabelError) Error() string { return fmt.Sprintf("label %q: %s", e.Key, e.Reason) }

// CheckLabels returns what is wrong with labels, if anything: more than
// MaxLabels, a key that is empty, longer than MaxLabelKey or holds a
// control character, '=' or a space, a value longer than MaxLabelValue or
// with a control character. Keys come out in sorted order.
func CheckLabels(labels map[string]string) []error {
	var errs []error
	if len(labels) > MaxLabels {
		errs = append(errs, fmt.Errorf("%d labels: at most %d", len(labels), MaxLabels))
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		switch {
		case k == "" || len(k) > MaxLabelKey:
			errs = append(errs, &LabelError{k, fmt.Sprintf("keys are 1 to %d characters", MaxLabelKey)})
		case strings.ContainsFunc(k, func(r rune) bool { return unicode.IsControl(r) || r == '=' || unicode.IsSpace(r) }):
			errs = append(errs, &LabelError{k, "keys hold no control character, space or '='"})
		case len(v) > MaxLabelValue:
			errs = append(errs, &LabelError{k, fmt.Sprintf("values are at most %d characters", MaxLabelValue)})
		case strings.ContainsFunc(v, unicode.IsControl):
			errs = append(errs, &LabelError{k, "values hold no control character"})
		}
	}
	return errs
}
