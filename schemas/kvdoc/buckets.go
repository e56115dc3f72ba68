package kvdoc

// Default NATS KV bucket names. Each stage's config can name another
// bucket; these are the names the stages agree on by default.
const (
	// ContainersBucket maps (host, container id) to the container's image
	// (the enricher's).
	ContainersBucket = "contain_containers"
	// ImagesBucket holds image declarations by image digest (the
	// enricher's; internal/imagecfg.Declaration).
	ImagesBucket = "contain_images"
	// ProfilesBucket holds declared profiles (Profile) by image digest and
	// version (the enricher's).
	ProfilesBucket = "contain_profiles"
	// BaselinesBucket holds learned baselines (Baseline), one key per
	// baseline with its history (the analyzer's and operators').
	BaselinesBucket = "contain_baselines"
	// AnalyzerLeasesBucket holds the partition leases ("p.<n>": the
	// owning instance id) and heartbeats ("m.<instance id>") of
	// partitioned analyzers, with a TTL (docs/design/022).
	AnalyzerLeasesBucket = "contain_analyzer_leases"
)
