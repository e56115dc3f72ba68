package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register adds c to m's registry, or returns the collector already there,
// so that a second stage value on the same Metrics shares its series. Any
// other registration error is a programming error and panics, prefixed
// with stage.
func Register[C prometheus.Collector](m *Metrics, stage string, c C) C {
	if err := m.Registry.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(stage + ": registering metrics: " + err.Error())
	}
	return c
}
