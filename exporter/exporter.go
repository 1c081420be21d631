// Package exporter exposes the fleet's state to Prometheus: queue sizes and
// latency (read with asynq's Inspector) and the batches still open, plus
// the HTTP handler that serves a registry. `pingfleet serve` runs it.
package exporter

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/tasks"
)

var (
	queueTasks   = prometheus.NewDesc("pingfleet_queue_tasks", "Tasks in a queue, by state.", []string{"queue", "state"}, nil)
	queueLat     = prometheus.NewDesc("pingfleet_queue_latency_seconds", "Age of the oldest pending task of a queue.", []string{"queue"}, nil)
	openByState  = prometheus.NewDesc("pingfleet_open_batches", "Batches not closed yet (running, or final with a callback still to hand over), by state.", []string{"state"}, nil)
	hostsPending = prometheus.NewDesc("pingfleet_hosts_pending", "Hosts without a result, across open batches.", nil, nil)
	scrapeErrors = prometheus.NewDesc("pingfleet_exporter_errors", "1 when the last scrape could not read Redis.", nil, nil)
	// The batches' lanes, summed by priority (never by batch: the label
	// set stays bounded).
	laneCount = prometheus.NewDesc("pingfleet_lanes", "Lanes of open batches (and of those ended a moment ago), by priority.", []string{"priority"}, nil)
	laneTasks = prometheus.NewDesc("pingfleet_lane_tasks", "Tasks in the batches' lanes, by priority and state; active is the priority's share of the fleet in flight.", []string{"priority", "state"}, nil)
	laneLat   = prometheus.NewDesc("pingfleet_lane_latency_seconds", "Age of the oldest pending task in the lanes of a priority.", []string{"priority"}, nil)
)

// Collector reads queue and batch state at each scrape. GetQueueInfo samples
// memory usage in Redis: scrape every 15 s or slower.
type Collector struct {
	rdb    redis.UniversalClient
	ins    *asynq.Inspector
	agg    *aggregator.Aggregator
	queues []string
	logger *slog.Logger
}

// NewCollector returns a Collector of the static ping queues (shards of
// them), the callback queue and the batches' lanes on rdb.
func NewCollector(rdb redis.UniversalClient, agg *aggregator.Aggregator, shards int, logger *slog.Logger) *Collector {
	var qs []string
	for i := range max(shards, 1) {
		qs = append(qs, tasks.QueuePrefix+strconv.Itoa(i))
	}
	qs = append(qs, tasks.CallbackQueue)
	return &Collector{rdb: rdb, ins: asynq.NewInspectorFromRedisClient(rdb), agg: agg, queues: qs, logger: logger}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueTasks, queueLat, openByState, hostsPending, scrapeErrors, laneCount, laneTasks, laneLat} {
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
	if err := c.collectLanes(ctx, ch, time.Now()); err != nil {
		c.logger.Warn("metrics: lanes", "error", err)
		failed = 1
	}
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

// collectLanes sends the lanes' figures, by priority: two round trips,
// whatever the number of lanes.
func (c *Collector) collectLanes(ctx context.Context, ch chan<- prometheus.Metric, now time.Time) error {
	lanes, _, err := tasks.ReadLanes(ctx, c.rdb)
	if err != nil {
		return err
	}
	type queue struct {
		prio                              tasks.Priority
		base                              string
		pending, active, scheduled, retry *redis.IntCmd
		oldest                            *redis.StringCmd
	}
	var qs []queue
	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, l := range lanes {
			for _, name := range l.Queues() {
				b := tasks.AsynqKeys(name)
				qs = append(qs, queue{l.Priority, b, p.LLen(ctx, b+":pending"), p.LLen(ctx, b+":active"),
					p.ZCard(ctx, b+":scheduled"), p.ZCard(ctx, b+":retry"), p.LIndex(ctx, b+":pending", -1)})
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	since := make([]*redis.StringCmd, len(qs))
	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range qs {
			if id := q.oldest.Val(); id != "" {
				since[i] = p.HGet(ctx, q.base+":t:"+id, "pending_since")
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	count := map[tasks.Priority]int{}
	states := map[tasks.Priority]map[string]int64{}
	latency := map[tasks.Priority]float64{}
	for _, p := range tasks.Priorities {
		states[p] = map[string]int64{"pending": 0, "active": 0, "scheduled": 0, "retry": 0}
		latency[p] = 0
	}
	for _, l := range lanes {
		count[l.Priority]++
	}
	for i, q := range qs {
		st := states[q.prio]
		st["pending"] += q.pending.Val()
		st["active"] += q.active.Val()
		st["scheduled"] += q.scheduled.Val()
		st["retry"] += q.retry.Val()
		if since[i] != nil {
			if ns, err := strconv.ParseInt(since[i].Val(), 10, 64); err == nil {
				latency[q.prio] = max(latency[q.prio], now.Sub(time.Unix(0, ns)).Seconds())
			}
		}
	}
	for _, p := range tasks.Priorities {
		ch <- prometheus.MustNewConstMetric(laneCount, prometheus.GaugeValue, float64(count[p]), string(p))
		for state, n := range states[p] {
			ch <- prometheus.MustNewConstMetric(laneTasks, prometheus.GaugeValue, float64(n), string(p), state)
		}
		ch <- prometheus.MustNewConstMetric(laneLat, prometheus.GaugeValue, latency[p], string(p))
	}
	return nil
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
