package console

import (
	"context"
	"time"
)

// Quarantine is a container a host's responder holds frozen (the
// responder's quarantine.list reply).
type Quarantine struct {
	Host          string    `json:"host"`
	ContainerID   string    `json:"container_id"`
	ContainerName string    `json:"container_name,omitempty"`
	ImageRef      string    `json:"image_ref,omitempty"`
	ImageDigest   string    `json:"image_digest,omitempty"`
	Method        string    `json:"method"`
	Since         time.Time `json:"since"`
	AlertID       string    `json:"alert_id"`
	ActionID      string    `json:"action_id"`
	Score         float64   `json:"score"`
	Reason        string    `json:"reason"`
	Actor         string    `json:"actor"`
	State         string    `json:"state,omitempty"`
}

// Baseline summarizes one image's baseline.
type Baseline struct {
	Key       string
	Image     string
	Phase     string
	Version   uint64
	Items     int
	First     time.Time
	Converged time.Time
	// Declared is what the image declares (entrypoint, executables,
	// ports, peers, writable paths), empty when it declares nothing.
	Declared string
	// Undeclared lists what was learned that the declaration does not
	// name (executables, listening ports).
	Undeclared []string
	// Changes lists what the newest version added (+) and removed (-)
	// against the one before it.
	Changes []string
	// LastOp is the newest operator operation (lock, unlock, reset,
	// import) and who signed it.
	LastOp string
	Err    string
}

// HealthLine is one readiness check or metric shown on the Health view.
type HealthLine struct {
	Name  string
	Value string
	OK    bool
}

// Backend is how the console reads state it does not keep and acts. The
// actor passed is the logged-in user; the backend signs with the console's
// operator credential, so the record names both.
type Backend interface {
	Quarantined(ctx context.Context, host string) ([]Quarantine, error)
	// Release thaws containerID on host and returns the recorded actor
	// and result.
	Release(ctx context.Context, host, containerID, reason, actor string) (recordedActor, result string, err error)
	Baselines(ctx context.Context) ([]Baseline, error)
	SetLock(ctx context.Context, key string, lock bool, actor string) error
	// Timeline is `contain timeline` for a container (around an alert id
	// when not empty): its events, alerts and actions from ClickHouse, as
	// text.
	Timeline(ctx context.Context, container, alertID string) (string, error)
	// Health returns readiness checks and the metrics worth watching.
	Health(ctx context.Context) []HealthLine
}
