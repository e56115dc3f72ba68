package commits

import (
	"errors"
	"time"
)

// Config configures the commit watcher (config key commits.*).
type Config struct {
	// Enabled starts the watcher with the collector (contain collect, run).
	Enabled bool `config:"enabled"`
	// DockerHosts are Docker Engine API addresses to watch.
	DockerHosts []string `config:"docker_hosts"`
	// Containerd are containerd sockets whose image creations to report.
	Containerd []string `config:"containerd"`
	// Podman watches `podman events` (root podman's event log).
	Podman bool `config:"podman"`
	// PodmanBinary is the podman command (default "podman").
	PodmanBinary string `config:"podman_binary"`
	// MaxPaths bounds the paths of a diff carried in an event.
	MaxPaths int `config:"max_paths"`
	// Timeout bounds each engine call (diff, inspect).
	Timeout time.Duration `config:"timeout"`
	// Retry is the wait before re-subscribing to an engine's events.
	Retry time.Duration `config:"retry"`
}

// DefaultConfig watches the default sockets when enabled.
func DefaultConfig() Config {
	return Config{
		DockerHosts:  []string{"unix:///run/docker.sock"},
		Containerd:   []string{"/run/containerd/containerd.sock"},
		Podman:       true,
		PodmanBinary: "podman",
		MaxPaths:     64,
		Timeout:      5 * time.Second,
		Retry:        5 * time.Second,
	}
}

// Validate checks c.
func (c Config) Validate() error {
	if c.MaxPaths < 0 || c.MaxPaths > 4096 {
		return errors.New("commits.max_paths: must be 0..4096")
	}
	if c.Timeout <= 0 {
		return errors.New("commits.timeout: must be positive")
	}
	if c.Retry <= 0 {
		return errors.New("commits.retry: must be positive")
	}
	if c.Podman && c.PodmanBinary == "" {
		return errors.New("commits.podman_binary: must be set when commits.podman")
	}
	return nil
}
