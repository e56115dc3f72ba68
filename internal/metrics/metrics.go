// Package metrics holds contain's Prometheus metrics. A *Metrics value is
// made once per process and passed to every stage; tests make their own.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Label values used for the stage label.
const (
	StageCollector = "collector"
	StageEnricher  = "enricher"
	StageAnalyzer  = "analyzer"
	StageResponder = "responder"
	StageStore     = "store"
)

// Metrics is the set of contain's metrics, registered on one registry.
type Metrics struct {
	Registry *prometheus.Registry

	// EventsIn counts events a stage received, by stage.
	EventsIn *prometheus.CounterVec
	// EventsOut counts events a stage emitted or stored, by stage.
	EventsOut *prometheus.CounterVec
	// Dropped counts events or messages a stage could not pass on, by
	// stage and reason (queue_full, oversize, malformed, ...).
	Dropped *prometheus.CounterVec
	// Malformed counts NATS messages that did not decode, by stage.
	Malformed *prometheus.CounterVec
	// BatchEvents observes the number of events per published or consumed batch.
	BatchEvents *prometheus.HistogramVec
	// Errors counts errors by stage and kind (publish, insert, freeze, ...).
	Errors *prometheus.CounterVec
	// Alerts counts alerts raised, by rule.
	Alerts *prometheus.CounterVec
	// Actions counts responder actions by type and result.
	Actions *prometheus.CounterVec
	// QueueDepth is the current length of a stage's bounded queue.
	QueueDepth *prometheus.GaugeVec
	// ReaderWakeups counts the collector's ring-buffer reader waking up,
	// by cause: "kernel" (a record forced a wakeup), "timer" (a poll),
	// "inflight" (a short poll for a record being written) or "recheck" (the
	// ring moved before the idle wait parked; design 029).
	ReaderWakeups *prometheus.CounterVec
	// Refused counts messages and requests a stage refused as not
	// authorised, by stage and reason (host_mismatch, event_host_mismatch,
	// unsigned, bad_signature, unknown_key, stale, replayed, ...).
	Refused *prometheus.CounterVec

	// PublishRetries counts publish attempts that failed with a transient
	// error and were retried, by stage and reason (timeout, no_responders,
	// disconnected, ...).
	PublishRetries *prometheus.CounterVec
	// PublishFailed counts publishes given up on, by stage and reason:
	// a permanent error (max_payload, permission, no_stream, ...), or
	// the caller's context ending during transient retries (canceled).
	PublishFailed *prometheus.CounterVec
	// PublishStalled is 1 while a stage's publish has been retrying for
	// longer than a minute.
	PublishStalled *prometheus.GaugeVec
	// DeadLettered counts messages copied to CONTAIN_DLQ, by stage and
	// reason (handler_error, panic).
	DeadLettered *prometheus.CounterVec
	// Expired counts messages removed from a stream (max_age, max_bytes)
	// before a consumer received them, by stream and durable.
	Expired *prometheus.CounterVec
	// MemoryWait counts the seconds a stage's consumer held its next
	// fetch back because the process was at its memory bound (memgate).
	MemoryWait *prometheus.CounterVec
	// ConsumerLag is a consumer's num_pending: messages not yet delivered.
	ConsumerLag *prometheus.GaugeVec
	// ConsumerOldestUnacked is the age of the oldest message a consumer
	// received and has not yet acknowledged.
	ConsumerOldestUnacked *prometheus.GaugeVec

	// ExecToAlert observes, per alert published, the time from its
	// triggering event (an exec, mostly) to the alert's publication.
	ExecToAlert prometheus.Histogram
	// AlertToFrozen observes, per verified pause, the time from the
	// alert's event time to the container verified frozen.
	AlertToFrozen prometheus.Histogram
	// ExecToFrozen observes, per verified pause, the time from the
	// alert's triggering event to the container verified frozen.
	ExecToFrozen prometheus.Histogram
	// Quarantined is the number of containers this responder holds frozen.
	Quarantined prometheus.Gauge
}

// LatencyBuckets are the buckets of the _seconds latency histograms: 1 ms
// to about 33 s.
var LatencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 16)

// New makes a Metrics on a fresh registry, with Go and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: reg,
		EventsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "events_in_total", Help: "Events received by a stage.",
		}, []string{"stage"}),
		EventsOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "events_out_total", Help: "Events emitted or stored by a stage.",
		}, []string{"stage"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "dropped_total", Help: "Events or messages a stage could not pass on, by reason.",
		}, []string{"stage", "reason"}),
		Malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "malformed_messages_total", Help: "NATS messages that failed to decode.",
		}, []string{"stage"}),
		BatchEvents: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "contain", Name: "batch_events", Help: "Events per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}, []string{"stage"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "errors_total", Help: "Errors by stage and kind.",
		}, []string{"stage", "kind"}),
		Alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "alerts_total", Help: "Alerts raised, by rule.",
		}, []string{"rule"}),
		Actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "actions_total", Help: "Responder actions by type and result.",
		}, []string{"type", "result"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "contain", Name: "queue_depth", Help: "Current length of a stage's bounded queue.",
		}, []string{"stage", "queue"}),
		ReaderWakeups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Subsystem: "collector", Name: "reader_wakeups_total",
			Help: "Wakeups of the ring-buffer reader, by cause (kernel: a record forced one; timer: a poll; inflight: a short poll for a record being written; recheck: the ring moved before the idle wait parked).",
		}, []string{"cause"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "refused_total",
			Help: "Messages and requests refused as not authorised (wrong host for the subject, bad or replayed signature), by reason.",
		}, []string{"stage", "reason"}),
		PublishRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "publish_retries_total",
			Help: "Publish attempts that failed with a transient error and were retried, by reason.",
		}, []string{"stage", "reason"}),
		PublishFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "publish_failed_total",
			Help: "Publishes given up on (permanent error, or context ended while retrying), by reason.",
		}, []string{"stage", "reason"}),
		PublishStalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "contain", Name: "publish_stalled",
			Help: "1 while a stage's publish has been retrying for more than a minute.",
		}, []string{"stage"}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "dead_lettered_total",
			Help: "Messages copied to the CONTAIN_DLQ stream and terminated, by reason.",
		}, []string{"stage", "reason"}),
		Expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "expired_total",
			Help: "Messages removed from a stream (max_age, max_bytes) before the consumer received them.",
		}, []string{"stream", "durable"}),
		MemoryWait: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "memory_wait_seconds_total",
			Help: "Seconds a stage's consumer held its next fetch back while the live heap was over 90% of the Go memory limit.",
		}, []string{"stage"}),
		ConsumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "contain", Name: "consumer_lag",
			Help: "Messages of a consumer's stream not yet delivered to it (num_pending).",
		}, []string{"stream", "durable"}),
		ConsumerOldestUnacked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "contain", Name: "consumer_oldest_unacked_seconds",
			Help: "Age of the oldest message a consumer received and has not acknowledged.",
		}, []string{"stream", "durable"}),
	}
	m.ExecToAlert = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "contain", Name: "exec_to_alert_seconds",
		Help: "Time from an alert's triggering event to the alert's publication (analyzer).", Buckets: LatencyBuckets})
	m.AlertToFrozen = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "contain", Name: "alert_to_frozen_seconds",
		Help: "Time from an alert to its container verified frozen (responder).", Buckets: LatencyBuckets})
	m.ExecToFrozen = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "contain", Name: "exec_to_frozen_seconds",
		Help: "Time from an alert's triggering event to its container verified frozen (responder).", Buckets: LatencyBuckets})
	m.Quarantined = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "contain", Name: "quarantined_containers",
		Help: "Containers the responder holds frozen (its quarantine list)."})
	reg.MustRegister(m.ExecToAlert, m.AlertToFrozen, m.ExecToFrozen, m.Quarantined)
	reg.MustRegister(m.PublishRetries, m.PublishFailed, m.PublishStalled, m.DeadLettered, m.Expired, m.MemoryWait, m.ConsumerLag, m.ConsumerOldestUnacked)
	reg.MustRegister(m.EventsIn, m.EventsOut, m.Dropped, m.Malformed, m.BatchEvents, m.Errors, m.Alerts, m.Actions, m.QueueDepth, m.ReaderWakeups, m.Refused)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
