package enricher

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/containsec/contain/internal/metrics"
)

// Result label values of contain_enricher_events_total.
const (
	resultEnriched = "enriched"
	resultUnknown  = "unknown_container"
	resultHost     = "host"
)

// Error kinds (contain_errors_total{stage="enricher",kind=...}).
const (
	errKV         = "kv"
	errResolve    = "resolve"
	errDockerfile = "dockerfile"
	errCompose    = "compose"
	errConfig     = "image_config"
	errProfile    = "profile_store"
)

// enricherMetrics are the enricher's own series, registered on the shared
// registry beside the common ones.
type enricherMetrics struct {
	events      *prometheus.CounterVec
	enriched    prometheus.Counter
	unknown     prometheus.Counter
	host        prometheus.Counter
	containers  prometheus.Gauge
	resolutions *prometheus.CounterVec
	// fleetParts is the parts per fleet batch (enricher.fleet_batches):
	// how many hosts' batches one message carries.
	fleetParts prometheus.Observer
	// The common series of the hot path, resolved once.
	out           prometheus.Counter
	batchEvents   prometheus.Observer
	publishErrors prometheus.Counter
}

func newEnricherMetrics(m *metrics.Metrics) *enricherMetrics {
	em := &enricherMetrics{
		events: metrics.Register(m, "enricher", prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Subsystem: "enricher", Name: "events_total",
			Help: "Events passed on by the enricher, by result (enriched, unknown_container, host).",
		}, []string{"result"})),
		containers: metrics.Register(m, "enricher", prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "contain", Subsystem: "enricher", Name: "containers",
			Help: "Containers in the enricher's memory cache.",
		})),
		resolutions: metrics.Register(m, "enricher", prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "contain", Subsystem: "enricher", Name: "image_resolutions_total",
			Help: "Image declaration resolutions, by source (registry, oci_layout, tarball, daemon, cache, kv, none) and result (ok, error).",
		}, []string{"source", "result"})),
		fleetParts: metrics.Register(m, "enricher", prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "contain", Subsystem: "enricher", Name: "fleet_parts",
			Help:    "Parts (one host's output batch of one partition) per fleet batch written (enricher.fleet_batches).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		})),
	}
	em.enriched = em.events.WithLabelValues(resultEnriched)
	em.unknown = em.events.WithLabelValues(resultUnknown)
	em.host = em.events.WithLabelValues(resultHost)
	em.out = m.EventsOut.WithLabelValues(metrics.StageEnricher)
	em.batchEvents = m.BatchEvents.WithLabelValues(metrics.StageEnricher)
	em.publishErrors = m.Errors.WithLabelValues(metrics.StageEnricher, "publish")
	return em
}
