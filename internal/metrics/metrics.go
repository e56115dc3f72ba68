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
	// by cause: "kernel" (a record forced a wakeup) or "timer" (a poll).
	ReaderWakeups *prometheus.CounterVec
	// Refused counts messages and requests a stage refused as not
	// authorised, by stage and reason (host_mismatch, event_host_mismatch,
	// unsigned, bad_signature, unknown_key, stale, replayed, ...).
	Refused *prometheus.CounterVec
}

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
			Help: "Wakeups of the ring-buffer reader, by cause (kernel: a record forced one; timer: a poll).",
		}, []string{"cause"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Name: "refused_total",
			Help: "Messages and requests refused as not authorised (wrong host for the subject, bad or replayed signature), by reason.",
		}, []string{"stage", "reason"}),
	}
	reg.MustRegister(m.EventsIn, m.EventsOut, m.Dropped, m.Malformed, m.BatchEvents, m.Errors, m.Alerts, m.Actions, m.QueueDepth, m.ReaderWakeups, m.Refused)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
