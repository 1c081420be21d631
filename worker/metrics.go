package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/ping"
)

// Metrics are a worker's Prometheus metrics. Labels stay bounded: never a
// host or a batch ID.
type Metrics struct {
	pingsSent     prometheus.Counter
	pingsReceived prometheus.Counter
	tasks         *prometheus.CounterVec
	rtt           prometheus.Histogram
	taskDuration  prometheus.Histogram
	inFlight      prometheus.Gauge
	dnsFailures   prometheus.Counter
	sendErrors    prometheus.Counter
	refused       prometheus.Counter
	denied        prometheus.Counter
}

// Task outcomes counted by pingfleet_tasks_total.
const (
	OutcomeUp        = "up"
	OutcomeDown      = "down"
	OutcomeError     = "error"
	OutcomeRetried   = "retried"   // the task failed and asynq will run it again
	OutcomeDuplicate = "duplicate" // the host already had a result
	OutcomeCancelled = "cancelled" // dropped: its batch was cancelled
)

// NewMetrics creates the worker metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		pingsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pingfleet", Name: "pings_sent_total", Help: "ICMP echo requests sent.",
		}),
		pingsReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pingfleet", Name: "pings_received_total", Help: "ICMP echo replies received in time.",
		}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "pingfleet", Name: "tasks_total", Help: "Ping tasks run, by outcome (up, down, error, retried, duplicate, cancelled).",
		}, []string{"outcome"}),
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "pingfleet", Name: "rtt_seconds", Help: "Average round-trip time of each host that answered.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 0.1 ms to 3.3 s
		}),
		taskDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "pingfleet", Name: "task_duration_seconds", Help: "Time to run one ping task: resolve, ping, record.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1 ms to 33 s
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "pingfleet", Name: "pings_in_flight", Help: "Ping tasks running now.",
		}),
		dnsFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pingfleet", Name: "dns_failures_total", Help: "Host names that could not be resolved.",
		}),
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pingfleet", Name: "send_errors_total", Help: "Pings that could not be sent at all (socket or send errors).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pingfleet", Name: "requests_refused_total",
			Help: "Echo requests the local network stack refused to send (a firewall rule, no route); counted as sent and lost.",
		}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "pingfleet", Name: "targets_denied_total",
			Help: "Hosts not pinged because their address is denied by the target policy (--deny, --allow).",
		}),
	}
	for _, o := range []string{OutcomeUp, OutcomeDown, OutcomeError, OutcomeRetried, OutcomeDuplicate, OutcomeCancelled} {
		m.tasks.WithLabelValues(o) // export every outcome from the start
	}
	for _, c := range []prometheus.Collector{m.pingsSent, m.pingsReceived, m.tasks, m.rtt, m.taskDuration, m.inFlight, m.dnsFailures, m.sendErrors, m.refused, m.denied} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// RegisterEngine exports e's receive errors as
// pingfleet_receive_errors_total on reg.
func RegisterEngine(reg prometheus.Registerer, e *ping.Engine) error {
	return reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "pingfleet", Name: "receive_errors_total", Help: "Failed reads on the ping engine's ICMP sockets.",
	}, func() float64 { return float64(e.ReadErrors()) }))
}

// The methods accept a nil *Metrics, so that the handler needs no checks.

func (m *Metrics) start() time.Time {
	if m != nil {
		m.inFlight.Inc()
	}
	return time.Now()
}

func (m *Metrics) finish(start time.Time, outcome string) {
	if m == nil {
		return
	}
	m.inFlight.Dec()
	m.taskDuration.Observe(time.Since(start).Seconds())
	m.tasks.WithLabelValues(outcome).Inc()
}

func (m *Metrics) result(r aggregator.Result, notes pingNotes) {
	if m == nil {
		return
	}
	m.refused.Add(float64(notes.refused))
	m.pingsSent.Add(float64(r.Sent))
	m.pingsReceived.Add(float64(r.Received))
	switch {
	case r.Status == aggregator.StatusUp:
		m.rtt.Observe(r.RTTAvg / 1000)
	case notes.resolveFailed:
		m.dnsFailures.Inc()
	case notes.denied:
		m.denied.Inc()
	case r.Status == aggregator.StatusError:
		m.sendErrors.Inc()
	}
}
