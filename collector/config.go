package collector

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/runtime"
	"github.com/containsec/contain/internal/syscalls"
)

// Config configures a Collector. The cmd/ owner fills it from viper under
// the "collector." prefix; keys below are named as in Validate's errors.
type Config struct {
	// Host names this host in events and in the raw subject (collector.host).
	Host string `config:"host"`
	// HostProcesses reports processes outside containers too
	// (collector.host_processes). Off by default: filtered in the kernel.
	HostProcesses bool `config:"host_processes"`
	// QueueLen bounds the records waiting between the ring-buffer reader
	// and decoding (collector.queue_len) when the reader blocks in
	// epoll_wait (the runtime could not poll the ring buffer; logged at
	// start); a full queue drops and counts. Otherwise the reader decodes
	// itself and the ring buffer is the queue.
	QueueLen int `config:"queue_len"`
	// RingBufferBytes is the kernel ring buffer's size, a power of two
	// multiple of the page size (collector.ring_buffer_bytes).
	RingBufferBytes int `config:"ring_buffer_bytes"`
	// BatchQueueLen bounds events waiting to be batched (collector.batch_queue_len).
	BatchQueueLen int `config:"batch_queue_len"`
	// BatchMaxEvents, BatchMaxBytes and FlushInterval close a batch
	// (collector.batch_max_events, collector.batch_max_bytes, collector.flush_interval).
	BatchMaxEvents int           `config:"batch_max_events"`
	BatchMaxBytes  int           `config:"batch_max_bytes"`
	FlushInterval  time.Duration `config:"flush_interval"`
	// MaxFlushInterval and TargetBatchRate size batches to the rate
	// (collector.max_flush_interval, collector.target_batch_rate): while
	// a host's events come faster than TargetBatchRate a second, a batch
	// closes after 1/TargetBatchRate, at most MaxFlushInterval, instead of
	// FlushInterval, so a busy host publishes about TargetBatchRate
	// batches a second, bigger ones, and NATS and every stage pay per
	// batch less often (docs/scaling.md). Urgent records (WakeupKinds)
	// are still published at once; other events wait up to
	// MaxFlushInterval on a busy host. 0 (either): always FlushInterval.
	MaxFlushInterval time.Duration `config:"max_flush_interval"`
	TargetBatchRate  float64       `config:"target_batch_rate"`
	// ContainerDictionary (collector.container_dictionary) writes a batch
	// whose containers have several events each with a container
	// dictionary (schema_version 2): each container's id and name once,
	// its events referring to it. A busy host's batches shrink by about
	// a third, and the enricher reads and hashes each container's id
	// once per batch instead of once per event. Enrichers older than this
	// build refuse such batches: upgrade the enrichers first.
	ContainerDictionary bool `config:"container_dictionary"`
	// CgroupRoot is the cgroup2 mount (collector.cgroup_root); "" detects
	// it from the mount table (cgroups.Detect): /sys/fs/cgroup on a
	// cgroup2-only host, /sys/fs/cgroup/unified on a hybrid one.
	CgroupRoot string `config:"cgroup_root"`
	// RuncRoot is runc's state root (collector.runc_root).
	RuncRoot string `config:"runc_root"`
	// LossInterval is how often loss events are emitted when something was
	// lost (collector.loss_interval).
	LossInterval time.Duration `config:"loss_interval"`
	// MaxArgs bounds the argv entries of one exec (collector.max_args).
	MaxArgs int `config:"max_args"`
	// Syscalls enables in-kernel syscall tracking on sys_enter
	// (collector.syscalls): first use per (container, syscall), sensitive
	// syscalls with arguments, and per-container counts.
	Syscalls bool `config:"syscalls"`
	// SensitiveSyscalls are reported on every call, with their arguments
	// (collector.sensitive_syscalls).
	SensitiveSyscalls []string `config:"sensitive_syscalls"`
	// MetadataWait bounds how long a new container's first events are
	// held while its runtime state is not yet readable, so that its
	// KIND_CONTAINER event carries the labels (collector.metadata_wait).
	// At most MaxHeldEvents events are held per container
	// (collector.max_held_events).
	MetadataWait  time.Duration `config:"metadata_wait"`
	MaxHeldEvents int           `config:"max_held_events"`
	// CountInterval is how often per-container syscall counts are emitted
	// (collector.count_interval).
	CountInterval time.Duration `config:"count_interval"`
	// Network reports connect, accept, bind and listen on TCP and UDP over
	// IPv4 and IPv6 with addresses, ports and result (collector.network).
	Network bool `config:"network"`
	// Files reports opens with write intent, creat, rename, unlink, chmod
	// and chown with their paths and result, and read-only opens of
	// SensitiveFiles (collector.files).
	Files bool `config:"files"`
	// SensitiveFiles are absolute paths (< 64 bytes) whose read-only opens
	// are reported as OP_OPEN_READ (collector.sensitive_files): by the
	// path passed, by the path the kernel opened, and by identity (the
	// inode each resolves to inside a container's root when the container
	// is announced, so hardlinks, symlinks and traversals match too). Every
	// user's ~/.ssh keys and config and /proc/<pid>/environ of another
	// process are sensitive as well (see sensitive.go).
	SensitiveFiles []string `config:"sensitive_files"`
	// Processes reports fork and exit so a process tree can be rebuilt
	// (collector.processes).
	Processes bool `config:"processes"`
	// RatePerSec and RateBurst bound, in the kernel, the records one
	// container may produce (a token bucket per cgroup); refused records
	// are counted per container and reported as KIND_LOSS events with
	// reason "rate_limited" (collector.rate_per_sec, collector.rate_burst).
	// RatePerSec 0 disables the limit.
	RatePerSec int `config:"rate_per_sec"`
	RateBurst  int `config:"rate_burst"`
	// WakeupKinds are the urgent record kinds (collector.wakeup_kinds; of
	// "exec", "syscall", "network", "file", "process"; default exec and
	// sensitive/first-use syscalls, the records detection is fastest on):
	// a drain that read one publishes at once instead of at the next
	// FlushInterval tick, and the reader polls sooner while they come
	// (WakeupCoalesce). PollInterval (collector.poll_interval) is how
	// often records are read when WakeupCoalesce is 0 (then urgent kinds
	// wake the reader each time, the others wait for the poll) and how
	// often sequence-mode records are polled. A ring buffer a quarter
	// full always wakes the reader.
	WakeupKinds  []string      `config:"wakeup_kinds"`
	PollInterval time.Duration `config:"poll_interval"`
	// WakeupCoalesce (collector.wakeup_coalesce) makes the kernel wake the
	// reader only when it is idle: the first record after a quiet spell,
	// of any kind, wakes it at once (and is published at once if urgent);
	// the kernel then stops waking it, and it polls after 1 ms, doubling
	// up to WakeupCoalesce while urgent records come (WakeupCoalesce while
	// only others do); a poll that finds nothing lets the next record wake
	// it again, and an idle reader sleeps without a timer. So a lone exec
	// reaches NATS in about a millisecond, an exec storm costs at most one
	// poll and one publish per WakeupCoalesce instead of a wakeup per
	// exec (its records waiting at most that long), and an idle host
	// costs nothing. 0: a wakeup for every urgent record, a poll every
	// PollInterval.
	WakeupCoalesce time.Duration `config:"wakeup_coalesce"`
	// DockerHost is the Docker Engine API address asked for docker
	// containers' name, image and labels (collector.docker_host, e.g.
	// unix:///run/docker.sock; "" never asks). DockerRoot is dockerd's
	// data root, whose containers/<id>/config.v2.json is read without
	// the engine (collector.docker_root).
	DockerHost string `config:"docker_host"`
	DockerRoot string `config:"docker_root"`
	// ContainerdAddress is containerd's socket, asked for its containers'
	// labels, OCI annotations (Kubernetes pod, namespace, container name)
	// and image (collector.containerd_address; "" never asks).
	// ContainerdState is containerd's --state directory, whose task
	// bundles (io.containerd.runtime.v2.task/<namespace>/<id>) are read
	// without it (collector.containerd_state).
	ContainerdAddress string `config:"containerd_address"`
	ContainerdState   string `config:"containerd_state"`
	// SequenceSelect turns on sequence mode for the containers that match
	// any of these selectors (collector.sequence_select): "name=<glob>"
	// (the container's name), "image=<glob>" (its image reference),
	// "label=<key>=<glob>" (a label or annotation), "id=<prefix>" (its
	// id); globs are path.Match patterns. Every syscall of a selected
	// container's threads is then reported, in order, as MODE_SEQUENCE
	// events (Syscall.sequence, per thread). Empty (the default): off, at
	// the cost of one load per syscall in the kernel.
	SequenceSelect []string `config:"sequence_select"`
	// SequenceRingBytes is the sequence records' own kernel ring buffer, a
	// power of two multiple of the page size
	// (collector.sequence_ring_bytes; 32 bytes of record + 8 of header
	// per syscall). A full one loses sequence records only, counted per
	// container (KIND_LOSS source "sequence_ring").
	SequenceRingBytes int `config:"sequence_ring_bytes"`
	// SequenceBatch is the most syscalls one MODE_SEQUENCE event carries
	// (collector.sequence_batch); a thread's partial sequence is emitted
	// once its first syscall is SequenceFlush old
	// (collector.sequence_flush; plus at most poll_interval), and when it
	// is forgotten (idle, or more than 4096 threads tracked) or the
	// collector stops.
	SequenceBatch int           `config:"sequence_batch"`
	SequenceFlush time.Duration `config:"sequence_flush"`
	// EngineTimeout bounds one engine lookup (collector.engine_timeout).
	// Lookups run off the event loop, once per container; the container's
	// first events are held meanwhile (collector.metadata_wait). A lookup
	// that times out (dockerd answers inspect of a starting container only
	// once its start returned) is asked again 1, 2, 3, 4, 5, 5 and 5 s
	// later, the container identified from disk meanwhile and announced
	// again with the answer
	// (contain_errors_total{kind="metadata_<engine>_retry"}).
	EngineTimeout time.Duration `config:"engine_timeout"`
	// AttachMode chooses the kernel hooks (collector.attach_mode): "auto"
	// (or "") BTF-typed tracepoints, falling back to raw tracepoints where
	// the kernel refuses them; "tp_btf" or "raw_tp" only that family (an
	// error when the kernel lacks it). The probe's outcome is logged once
	// at start ("kernel features").
	AttachMode string `config:"attach_mode"`

	// noOpenDetail (benchmarks only) skips, at an open's exit, the opened
	// file's identity, sensitivity and walked path.
	noOpenDetail bool
}

// Default engine sockets: DefaultConfig asks an engine whose socket exists.
const (
	DefaultDockerSocket     = "/run/docker.sock"
	DefaultContainerdSocket = "/run/containerd/containerd.sock"
)

// isSocket reports whether p is a socket.
func isSocket(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// recordKinds maps WakeupKinds names to record types (common.h RECORD_*).
var recordKinds = map[string]uint32{"exec": recordExec, "syscall": recordSyscall, "network": recordNet, "file": recordFile, "process": recordProc}

// DefaultSensitiveFiles are read by credential theft and rarely by a
// container's normal work.
var DefaultSensitiveFiles = []string{
	"/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/master.passwd", "/etc/security/opasswd",
	"/root/.ssh/authorized_keys", "/root/.ssh/id_rsa", "/root/.ssh/id_ed25519", "/root/.ssh/id_ecdsa",
	"/root/.ssh/id_dsa", "/root/.ssh/config",
	"/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ecdsa_key",
	"/etc/ssh/ssh_host_dsa_key",
	"/var/run/secrets/kubernetes.io/serviceaccount/token",
	"/run/secrets/kubernetes.io/serviceaccount/token",
	"/etc/kubernetes/admin.conf", "/root/.kube/config", "/root/.aws/credentials", "/root/.docker/config.json",
	"/proc/1/environ", "/proc/kcore",
}

// DefaultSensitiveSyscalls are the syscalls a container rarely needs and an
// escape or persistence attempt often does.
var DefaultSensitiveSyscalls = []string{
	"chroot", "pivot_root", "ptrace", "mount", "umount2", "unshare", "setns",
	"init_module", "finit_module", "delete_module", "bpf", "kexec_load", "kexec_file_load",
	"keyctl", "personality", "setuid", "setgid", "setreuid", "setregid", "setresuid",
	"setresgid", "setfsuid", "setfsgid", "capset", "open_by_handle_at",
}

// DefaultConfig is the configuration for a host with runc, its cgroup
// layout (unified or hybrid) detected at start.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	c := Config{
		Host:                host,
		QueueLen:            16384,
		RingBufferBytes:     8 << 20,
		BatchQueueLen:       16384,
		BatchMaxEvents:      1024,
		BatchMaxBytes:       1 << 20,
		FlushInterval:       20 * time.Millisecond,
		MaxFlushInterval:    200 * time.Millisecond,
		TargetBatchRate:     5,
		ContainerDictionary: true,
		RuncRoot:            "/run/runc",
		LossInterval:        10 * time.Second,
		MaxArgs:             1024,
		Syscalls:            true,
		SensitiveSyscalls:   append([]string(nil), DefaultSensitiveSyscalls...),
		CountInterval:       10 * time.Second,
		MetadataWait:        2 * time.Second,
		MaxHeldEvents:       4096,
		Network:             true,
		Files:               true,
		SensitiveFiles:      append([]string(nil), DefaultSensitiveFiles...),
		Processes:           true,
		RatePerSec:          20000,
		RateBurst:           20000,
		WakeupKinds:         []string{"exec", "syscall"},
		PollInterval:        20 * time.Millisecond,
		WakeupCoalesce:      20 * time.Millisecond,
		AttachMode:          AttachAuto,
		DockerRoot:          "/var/lib/docker",
		ContainerdState:     "/run/containerd",
		EngineTimeout:       time.Second,
		SequenceRingBytes:   4 << 20,
		SequenceBatch:       256,
		SequenceFlush:       100 * time.Millisecond,
	}
	if isSocket(DefaultDockerSocket) {
		c.DockerHost = "unix://" + DefaultDockerSocket
	}
	if isSocket(DefaultContainerdSocket) {
		c.ContainerdAddress = DefaultContainerdSocket
	}
	return c
}

// resolveCgroupRoot fills an empty CgroupRoot from the host's cgroup
// layout and logs once which layout serves.
func (c *Config) resolveCgroupRoot(log *slog.Logger) error {
	if c.CgroupRoot != "" {
		log.Info("cgroup layout", logCgroup2, c.CgroupRoot, logfields.Source, "collector.cgroup_root")
		return nil
	}
	l, err := cgroups.Detect()
	if err != nil {
		return fmt.Errorf("collector.cgroup_root: empty, and %w", err)
	}
	if l.Cgroup2 == "" {
		return fmt.Errorf("collector.cgroup_root: empty, and the %s cgroup layout has no cgroup2 mount (the collector needs one)", l.Mode)
	}
	c.CgroupRoot = l.Cgroup2
	log.Info("cgroup layout", logfields.Layout, string(l.Mode), logCgroup2, l.Cgroup2, logfields.FreezerV1, l.FreezerV1, logfields.Source, "detected")
	return nil
}

// logCgroup2 is the log key of the cgroup2 mount.
const logCgroup2 = "cgroup2"

// stateReader reads the on-disk state where this configuration says.
func (c Config) stateReader() runtime.StateReader {
	st := runtime.DefaultStateReader()
	st.RuncRoot = c.RuncRoot
	st.DockerRoot = c.DockerRoot
	st.ContainerdTaskRoot = ""
	if c.ContainerdState != "" {
		st.ContainerdTaskRoot = filepath.Join(c.ContainerdState, "io.containerd.runtime.v2.task")
	}
	return st
}

// Validate reports the first invalid field, naming its config key.
func (c Config) Validate() error {
	pageSize := os.Getpagesize()
	switch {
	case c.Host == "":
		return fmt.Errorf("collector.host: must be set")
	case c.AttachMode != "" && c.AttachMode != AttachAuto && c.AttachMode != AttachTpBTF && c.AttachMode != AttachRawTP:
		return fmt.Errorf("collector.attach_mode: %q must be auto, tp_btf or raw_tp", c.AttachMode)
	case c.QueueLen <= 0:
		return fmt.Errorf("collector.queue_len: must be > 0")
	case c.RingBufferBytes < pageSize || c.RingBufferBytes&(c.RingBufferBytes-1) != 0:
		return fmt.Errorf("collector.ring_buffer_bytes: %d must be a power of two >= the page size %d", c.RingBufferBytes, pageSize)
	case c.BatchQueueLen <= 0:
		return fmt.Errorf("collector.batch_queue_len: must be > 0")
	case c.BatchMaxEvents <= 0:
		return fmt.Errorf("collector.batch_max_events: must be > 0")
	case c.BatchMaxBytes <= 0 || c.BatchMaxBytes > 4<<20:
		return fmt.Errorf("collector.batch_max_bytes: must be in (0, 4MiB]")
	case c.FlushInterval <= 0:
		return fmt.Errorf("collector.flush_interval: must be > 0")
	case c.MaxFlushInterval < 0:
		return fmt.Errorf("collector.max_flush_interval: must be >= 0 (0: always flush_interval)")
	case c.TargetBatchRate < 0 || math.IsNaN(c.TargetBatchRate) || math.IsInf(c.TargetBatchRate, 0):
		return fmt.Errorf("collector.target_batch_rate: must be a number >= 0 (0: always flush_interval)")
	case c.CgroupRoot != "" && !filepath.IsAbs(c.CgroupRoot):
		return fmt.Errorf("collector.cgroup_root: %q must be an absolute path (the cgroup2 mount) or empty to detect it", c.CgroupRoot)
	case c.LossInterval <= 0:
		return fmt.Errorf("collector.loss_interval: must be > 0")
	case c.MaxArgs <= 0:
		return fmt.Errorf("collector.max_args: must be > 0")
	case c.MetadataWait < 0:
		return fmt.Errorf("collector.metadata_wait: must be >= 0")
	case c.MaxHeldEvents < 0:
		return fmt.Errorf("collector.max_held_events: must be >= 0")
	case c.Syscalls && c.CountInterval <= 0:
		return fmt.Errorf("collector.count_interval: must be > 0")
	}
	if c.RatePerSec < 0 || c.RatePerSec > 1e9 {
		return fmt.Errorf("collector.rate_per_sec: must be in [0, 1e9]")
	}
	if c.RatePerSec > 0 && c.RateBurst <= 0 {
		return fmt.Errorf("collector.rate_burst: must be > 0 when collector.rate_per_sec is set")
	}
	if c.PollInterval <= 0 || c.PollInterval > time.Second {
		return fmt.Errorf("collector.poll_interval: must be in (0, 1s]")
	}
	if c.WakeupCoalesce < 0 || c.WakeupCoalesce > c.PollInterval {
		return fmt.Errorf("collector.wakeup_coalesce: must be in [0, collector.poll_interval]")
	}
	if c.DockerHost != "" && !strings.Contains(c.DockerHost, "://") {
		return fmt.Errorf("collector.docker_host: %q must be an address like unix:///run/docker.sock or tcp://host:2375", c.DockerHost)
	}
	if (c.DockerHost != "" || c.ContainerdAddress != "") && (c.EngineTimeout <= 0 || c.EngineTimeout > 30*time.Second) {
		return fmt.Errorf("collector.engine_timeout: must be in (0, 30s] when collector.docker_host or collector.containerd_address is set")
	}
	for _, k := range c.WakeupKinds {
		if _, ok := recordKinds[k]; !ok {
			return fmt.Errorf("collector.wakeup_kinds: unknown kind %q (exec, syscall, network, file, process)", k)
		}
	}
	if c.SequenceRingBytes < pageSize || c.SequenceRingBytes&(c.SequenceRingBytes-1) != 0 {
		return fmt.Errorf("collector.sequence_ring_bytes: %d must be a power of two >= the page size %d", c.SequenceRingBytes, pageSize)
	}
	if c.SequenceBatch < 3 || c.SequenceBatch > 65536 {
		return fmt.Errorf("collector.sequence_batch: must be in [3, 65536]")
	}
	if c.SequenceFlush <= 0 || c.SequenceFlush > 10*time.Second {
		return fmt.Errorf("collector.sequence_flush: must be in (0, 10s]")
	}
	if _, err := parseSelectors(c.SequenceSelect); err != nil {
		return fmt.Errorf("collector.sequence_select: %w", err)
	}
	for _, p := range c.SensitiveFiles {
		if len(p) == 0 || p[0] != '/' || len(p) >= sensitivePathLen {
			return fmt.Errorf("collector.sensitive_files: %q must be an absolute path shorter than %d bytes", p, sensitivePathLen)
		}
	}
	for _, name := range c.SensitiveSyscalls {
		if _, ok := syscalls.Number(name); !ok {
			return fmt.Errorf("collector.sensitive_syscalls: unknown syscall %q", name)
		}
	}
	return nil
}
