// Package exporter exposes the fleet's state to Prometheus: queue sizes and
// latency (read with asynq's Inspector) and the batches still open, plus
// the HTTP handler that serves a registry. `pingfleet serve` runs it.
package exporter

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

var (
	queueTasks   = prometheus.NewDesc("pingfleet_queue_tasks", "Tasks in a queue, by state.", []string{"queue", "state"}, nil)
	queueLat     = prometheus.NewDesc("pingfleet_queue_latency_seconds", "Age of the oldest pending task of a queue.", []string{"queue"}, nil)
	openByState  = prometheus.NewDesc("pingfleet_open_batches", "Batches not closed yet (running, or final with a callback still to hand over), by state.", []string{"state"}, nil)
	hostsPending = prometheus.NewDesc("pingfleet_hosts_pending", "Hosts without a result, across open batches.", nil, nil)
	scrapeErrors = prometheus.NewDesc("pingfleet_exporter_errors", "1 when the last scrape could not read Redis.", nil, nil)
)

// Collector reads queue and batch state at each scrape. GetQueueInfo samples
// memory usage in Redis: scrape every 15 s or slower.
type Collector struct {
	ins    *asynq.Inspector
	agg    *aggregator.Aggregator
	queues []string
	logger *slog.Logger
}

// NewCollector returns a Collector of the ping queues (shards of them) and
// the callback queue.
func NewCollector(ins *asynq.Inspector, agg *aggregator.Aggregator, shards int, logger *slog.Logger) *Collector {
	var qs []string
	for i := range max(shards, 1) {
		qs = append(qs, tasks.QueuePrefix+strconv.Itoa(i))
	}
	qs = append(qs, tasks.CallbackQueue)
	return &Collector{ins: ins, agg: agg, queues: qs, logger: logger}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueTasks, queueLat, openByState, hostsPending, scrapeErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	failed := 0.0
	for _, q := range c.queues {
		info, err := c.ins.GetQueueInfo(q)
		if err != nil {
			continue // a queue that never had a task does not exist yet
		}
		for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed} {
			ch <- prometheus.MustNewConstMetric(queueTasks, prometheus.GaugeValue, float64(n), q, state)
		}
		ch <- prometheus.MustNewConstMetric(queueLat, prometheus.GaugeValue, info.Latency.Seconds(), q)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	open, err := c.agg.OpenBatches(ctx, 1000)
	if err != nil {
		c.logger.Warn("metrics: open batches", "error", err)
		failed = 1
	}
	counts := map[aggregator.State]int{aggregator.StateEnqueuing: 0, aggregator.StateRunning: 0,
		aggregator.StateComplete: 0, aggregator.StateCancelled: 0, aggregator.StateExpired: 0}
	pending := 0
	for _, b := range open {
		if b.Gone {
			continue
		}
		counts[b.State]++
		if !b.State.Final() {
			if s, err := c.agg.Summary(ctx, b.ID); err == nil {
				pending += s.Pending
			}
		}
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(openByState, prometheus.GaugeValue, float64(n), string(st))
	}
	ch <- prometheus.MustNewConstMetric(hostsPending, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(scrapeErrors, prometheus.GaugeValue, failed)
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg in the Prometheus text format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// HTTPMetrics counts and times API requests by route pattern (never by
// path: batch IDs would make the label set unbounded).
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewHTTPMetrics registers the API request metrics on reg.
func NewHTTPMetrics(reg prometheus.Registerer) (*HTTPMetrics, error) {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "pingfleet", Name: "api_requests_total",
			Help: "API requests, by route and status code."}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "pingfleet", Name: "api_request_duration_seconds",
			Help: "API request latency by route (event streams last as long as the client stays).", Buckets: prometheus.DefBuckets}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Wrap instruments next.
func (m *HTTPMetrics) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern // set by http.ServeMux when a route matched
		if route == "" {
			route = "unmatched"
		}
		m.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// Flush keeps event streams working through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
