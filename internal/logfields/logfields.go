// Package logfields names the keys of contain's log lines, in one place,
// so that one thing has one name in every stage (container_id, never
// container; kv_key for a stored NATS KV key, key for a baseline key).
// Loggers are passed in and scoped once, where cmd/ builds a stage
// (logger.With(logfields.Stage, name)); a constructor adds no stage key.
// .ci/run lints log calls with sloglint (key-value pairs only, no global
// logger, snake_case keys; raw string keys are listed as a warning).
package logfields

// Keys every stage shares.
const (
	// Stage is the stage a line is from; set once, where cmd/ builds the stage.
	Stage = "stage"
	// Host is the host name (containv1 Event.host).
	Host = "host"
	// Err is the error.
	Err = "err"
	// ContainerID is a container id (never "container").
	ContainerID = "container_id"
	// ContainerName is a container name.
	ContainerName = "container_name"
	// Image is an image reference.
	Image = "image"
	// Digest is an image digest.
	Digest = "digest"
	// Key is a baseline or group key (an image key, not a NATS KV key).
	Key = "key"
	// KVKey is a NATS KV key as stored (escaped).
	KVKey = "kv_key"
	// Bucket is a NATS KV bucket.
	Bucket = "bucket"
	// Stream is a JetStream stream.
	Stream = "stream"
	// Durable is a JetStream durable consumer.
	Durable = "durable"
	// Subject is a NATS subject.
	Subject = "subject"
	// Reason is a reason code or a failure kind.
	Reason = "reason"
	// Score is an alert score.
	Score = "score"
	// Op is a manual baseline operation (lock, unlock, reset, import).
	Op = "op"
	// Actor is who did something (an operator credential and OS user).
	Actor = "actor"
)

// Keys of one stage or helper, alphabetical.
const (
	Addr                = "addr"
	After               = "after"
	Age                 = "age"
	AlertID             = "alert_id"
	AttachMode          = "attach_mode"
	Attempt             = "attempt"
	Auth                = "auth"
	BatchHost           = "batch_host"
	BatchStage          = "batch_stage"
	BpfLoop             = "bpf_loop"
	Btf                 = "btf"
	Bytes               = "bytes"
	Cgroup2             = "cgroup2"
	CgroupID            = "cgroup_id"
	ClaimedActor        = "claimed_actor"
	Compression         = "compression"
	Containerd          = "containerd"
	ContainerdEngine    = "containerd_engine"
	Containers          = "containers"
	Count               = "count"
	Corrupt             = "corrupt"
	Database            = "database"
	Decision            = "decision"
	Deliveries          = "deliveries"
	Dir                 = "dir"
	Docker              = "docker"
	DockerEngine        = "docker_engine"
	Doing               = "doing"
	Dropped             = "dropped"
	DryRun              = "dry_run"
	Engine              = "engine"
	Events              = "events"
	Failed              = "failed"
	File                = "file"
	Files               = "files"
	For                 = "for"
	FreezerV1           = "freezer_v1"
	GoSoftLimitMb       = "go_soft_limit_mb"
	Gomemlimit          = "gomemlimit"
	Gogc                = "gogc"
	Gomaxprocs          = "gomaxprocs"
	MaxProcs            = "max_procs"
	GCPercent           = "gc_percent"
	Group               = "group"
	Hooks               = "hooks"
	HostCgroupID        = "host_cgroup_id"
	HostProcesses       = "host_processes"
	Kept                = "kept"
	Keys                = "keys"
	Kind                = "kind"
	LabelDigest         = "label_digest"
	LatencyMs           = "latency_ms"
	Layout              = "layout"
	Limit               = "limit"
	LimitMb             = "limit_mb"
	Listen              = "listen"
	ListenerPIDs        = "listener_pids"
	Instance            = "instance"
	Loaded              = "loaded"
	MaxAlertAge         = "max_alert_age"
	MaxPerMinute        = "max_per_minute"
	Messages            = "messages"
	Method              = "method"
	Methods             = "methods"
	MinKernel           = "min_kernel"
	Name                = "name"
	Outputs             = "outputs"
	Page                = "page"
	Panic               = "panic"
	Partition           = "partition"
	Path                = "path"
	PausedLastMinute    = "paused_last_minute"
	Ports               = "ports"
	Processes           = "processes"
	QueueLen            = "queue_len"
	RawTp               = "raw_tp"
	Remote              = "remote"
	RestoredQuarantines = "restored_quarantines"
	Result              = "result"
	Retention           = "retention"
	RetryIn             = "retry_in"
	Revision            = "revision"
	Ringbuf             = "ringbuf"
	Role                = "role"
	Roots               = "roots"
	Rule                = "rule"
	RuncAndOther        = "runc_and_other"
	Seq                 = "seq"
	Service             = "service"
	Source              = "source"
	Stack               = "stack"
	Stages              = "stages"
	StoreDir            = "store_dir"
	Table               = "table"
	Tasks               = "tasks"
	Threshold           = "threshold"
	Tls                 = "tls"
	Total               = "total"
	TpBtf               = "tp_btf"
	Type                = "type"
	UndidPartialFreeze  = "undid_partial_freeze"
	URL                 = "url"
	User                = "user"
	Users               = "users"
	Verb                = "verb"
	Version             = "version"
)
