// Package collector is contain's sensor: CO-RE eBPF programs on each host
// that report what container processes do, published as raw event batches.
//
// Consumes: kernel events through one BPF ring buffer (and, in sequence
// mode, a second one holding only sequence records), from
// tp_btf/sched_process_exec, tp_btf/sys_exit, tp_btf/sched_process_fork and
// tp_btf/sched_process_exit (falling back to the raw_tracepoint family where
// tp_btf is refused; collector.attach_mode forces one; the kernel's
// features are probed and logged once at start, and a kernel older than
// MinKernel, Linux 5.17 with BTF, is refused with ErrKernelUnsupported);
// amd64 and arm64 (syscall numbers from internal/syscalls); the cgroup2
// hierarchy (CgroupRoot; "" detects it from /proc/self/mountinfo through
// cgroups.Detect at start, logged once as "cgroup layout": /sys/fs/cgroup
// on a cgroup2-only host, /sys/fs/cgroup/unified on a hybrid one; a host
// without cgroup2 is an error naming collector.cgroup_root) and what the runtimes keep on disk for container
// identity (internal/runtime): the OCI state directories (RuncRoot, the
// docker/containerd runc roots, /run/crun), docker's config.v2.json,
// containerd's v2 task bundles and containers/storage (cri-o, podman);
// and, when configured (collector.docker_host, collector.containerd_address),
// the Docker Engine API and containerd's API, asked once per container
// off the event loop (the engine's answer wins per label key); each
// announced container's root through /proc/<init pid>/root (openat2
// RESOLVE_IN_ROOT: its sensitive files' identities and /etc/passwd's home
// directories; never followed out of that root).
//
// Emits: containv1.Batch messages on containv1.RawSubject(host) through
// bus.Batcher (with collector.container_dictionary, on by default, a batch
// whose containers have several events each carries a container
// dictionary, schema_version 2: each container's id and name once, its
// events referring to it; schemas/README.md), with events of kind
//
//   - KIND_CONTAINER: once per container, on its first event and BEFORE
//     that container's other events (again if its runtime state appears
//     later): ContainerInfo{runtime, cgroup_path, bundle, init_pid,
//     labels, pod, namespace, addresses, host_network}. addresses are the
//     IP addresses of the init's network namespace when it is announced
//     (/proc/<init pid>/net/fib_trie and if_inet6; no loopback or
//     link-local; host_network when it is the host's namespace, whose
//     addresses they then are). image_ref, image_digest, image_id and name
//     come only from the runtime's or engine's own state (docker
//     config.v2.json or Inspect, containerd's API, containers/storage,
//     libpod), never from labels; a plain runc container has none. labels
//     are the OCI annotations, then the runtime's own (docker
//     Config.Labels, cri-o's io.kubernetes.cri-o.Labels expanded); the
//     first source wins per key, except the identity keys
//     io.contain.image.ref/.digest/.id, io.contain.container.name and
//     io.contain.podman.pod: such a key from an annotation or label is
//     dropped and counted
//     (contain_dropped_total{reason="untrusted_identity_label"}), and
//     io.contain.image.ref/.digest/.id and io.contain.container.name are
//     written from the runtime's identity.
//   - Every event's Process carries origin (decided in the kernel by
//     lineage, never by comm; docs/design/008-lineage.md): ORIGIN_RUNTIME
//     for a task that entered the container's cgroup from outside (runc's
//     init and its memfd re-exec, mounts, pivot_root, /run/runc writes)
//     until it execs outside the host's mount namespace; that exec and all
//     its descendants are ORIGIN_CONTAINER when it is the cgroup's first
//     (or pid 1's), else ORIGIN_EXEC_SESSION with session_tgid its tgid;
//     ORIGIN_UNSPECIFIED for host tasks. An exec record carries the origin
//     the exec gave. Tasks running when the collector starts are seeded
//     from /proc.
//   - KIND_EXEC: pid/tgid/ppid/ns_pid, uid/gid/euid, comm, filename, argv
//     (at most 4096 bytes read in the kernel and collector.max_args
//     entries; argv_truncated says when cut), exe (the binary actually
//     run, e.g. /bin/busybox for /proc/self/exe) and cwd, relative to the
//     container's root, non_utf8 when a string had invalid bytes (\xNN);
//     exe_memfd (a memfd_create file), exe_deleted (no link left at exec),
//     exe_writable (overlayfs upper layer, or a writable tmpfs/ramfs
//     mount other than the root; never for plain-directory rootfs or
//     other volumes), stdio_inet (stdin, stdout or stderr an IPv4/IPv6
//     socket at exec: a reverse shell, nc -e), decided in the kernel.
//   - KIND_SYSCALL: first use per (container, syscall, origin), sensitive syscalls
//     with args and ret, periodic per-container counts (collector.syscalls);
//     socket() with family AF_PACKET or type SOCK_RAW as a sensitive
//     syscall with its args (collector.syscalls), whatever the sensitive
//     set says; so is a dup2/dup3 that put an IPv4/IPv6 socket on fd 0, 1
//     or 2 (ret the new fd; checked in the kernel: a reverse shell), and
//     every successful prctl(PR_SET_NAME) (comm the new name; charged to
//     the container's flood control): busybox runs its applets without
//     exec so, and the analyzer names each applet at each run.
//     Sequence mode (opt-in, collector.sequence_select: name=<glob>,
//     image=<glob>, label=<key>=<glob>, id=<prefix>): MODE_SEQUENCE events
//     with every syscall of a selected container's thread in kernel order
//     (sequence; proc.pid is the tid, proc.tgid its process; mono_ns its
//     first syscall's), at most collector.sequence_batch per event, a
//     partial one at most collector.sequence_flush (+ poll_interval) after
//     its first syscall. A container is selected when announced (again on
//     re-announcement) and dropped when its cgroup goes; its syscalls before
//     that are not in its sequences.
//   - KIND_NETWORK: connect, bind, listen, accept/accept4 on TCP/UDP over
//     IPv4/IPv6 with local and remote address/port, protocol and result
//     (collector.network).
//   - KIND_FILE: write-intent opens (OP_CREATE when O_CREAT, OP_TRUNCATE
//     when O_TRUNC without O_CREAT, else OP_OPEN_WRITE; flags as passed),
//     creat, rename, unlink, chmod, chown (with uid and gid), mknod/mknodat
//     (OP_MKNOD, mode with the file type), link/linkat (OP_LINK: path the
//     existing file, new_path the link), symlink/symlinkat (OP_SYMLINK:
//     path the target as passed, never based, new_path the link),
//     truncate (OP_TRUNCATE, flags 0), ftruncate (OP_TRUNCATE, flags 0,
//     path = resolved_path: the fd's file), mkdir/mkdirat (OP_MKDIR),
//     connect to a unix socket by path (OP_CONNECT: path the socket), with
//     paths (at most 256 bytes as passed), flags, mode and result;
//     OP_OPEN_READ for sensitive reads (collector.files). A relative path
//     is joined with the directory it was resolved from (the cwd, or the
//     dirfd's directory for the *at syscalls; read in the kernel at the
//     syscall's exit) and cleaned, path_relative set; when that directory
//     cannot be read the path stays as passed with path_unresolved (or
//     new_path_unresolved) set. An open that returned an fd carries the
//     file the kernel opened: ino, dev (stat's st_dev encoding) and
//     resolved_path (its dentries walked to the task's root at the
//     syscall's exit: symlinks, "..", bind mounts and /proc/self/root
//     resolved; empty when longer than 256 bytes or 32 levels). sensitive
//     is set when the opened file is, by identity, one of
//     collector.sensitive_files or a passwd user's ~/.ssh key or config as
//     resolved in the container's root when it was announced (any name:
//     hardlink, symlink, traversal), or, by name, a file at a
//     sensitive_files path (its walked path), a key or config in any .ssh
//     directory, or /proc/<pid>/environ of another process. A read-only
//     open is reported (OP_OPEN_READ) when sensitive, or when its path as
//     passed is one of sensitive_files (a failed open: sensitive false).
//   - KIND_PROCESS: OP_FORK (child_tgid) and OP_EXIT (wait status) of
//     container processes (collector.processes).
//   - KIND_LOSS: every loss_interval, one event per counter that grew:
//     source "ringbuf" (reserve failures counted per CPU in the kernel),
//     "queue" (reader→decoder queue full), "batcher" (publish queue full),
//     "ringbuf" reasons "origin_store_failed" (a task's origin could not be
//     stored) and "bulk_headroom" (file/network records refused to keep a
//     quarter of the ring for urgent records), and per container source
//     "kernel" reason "rate_limited" (file and network records its
//     in-kernel token bucket refused; collector.rate_per_sec/rate_burst)
//     and source "sequence_ring" reason "reserve_failed_sequence" (its
//     sequence records a full sequence ring refused).
//
// Every event has id, host, mono_ns (CLOCK_MONOTONIC, bpf_ktime_get_ns),
// wall_ns (mono_ns plus the wall-monotonic offset, re-measured every
// loss_interval), kind and schema_version; container events carry
// container_id, container_name and cgroup_id (cgroup v2 inode).
//
// Guarantees:
//
//   - Only container processes by default, filtered in the kernel (cgroup
//     id != the cgroup2 root's) and never the collector's own process;
//     host systemd-unit cgroups that pass the kernel filter are dropped in
//     user space and counted (reason host_process).
//   - A first use whose record the ring buffer refused (counted as
//     reserve_failed_syscall) is reported again at the container's next use
//     of that syscall from that origin: the kernel sets the first-use bit
//     only for a record it wrote.
//   - Floods cannot hide what matters: exec, fork/exit, sensitive and
//     first-use syscall records are never rate limited, and file and
//     network records may fill at most 3/4 of the ring buffer.
//   - Exec and syscall records wake the reader at once; other records are
//     read within collector.poll_interval (collector.wakeup_kinds).
//   - No record waits for the idle reader's safety-net timeout: the reader
//     waits without a bound only with both wakeup gates open, the ring
//     empty when it looked after opening them and unchanged since; a
//     record still being written gets a 250 µs poll (design 029,
//     model-checked by TestWakeupModel).
//   - The reader waits in Go's netpoller and drains the ring buffer's
//     memory itself, decoding and batching in the woken goroutine (no
//     system call and no goroutine hand-off per record); while it works,
//     the kernel ring buffer (collector.ring_buffer_bytes) holds new
//     records, and a full ring buffer counts reserve failures (KIND_LOSS
//     source ringbuf). Where the runtime cannot poll the ring buffer the
//     reader blocks in epoll_wait and hands records to a bounded queue: a
//     full queue drops and counts
//     (contain_dropped_total{stage="collector",reason="queue_full"}). Either
//     way the loss is reported as a KIND_LOSS event. Nothing is lost silently.
//   - A container that starts after the collector resolves on its first
//     event: an unknown cgroup id triggers a new walk of the hierarchy.
//   - A container's announcement (KIND_CONTAINER) is never lost while its
//     later events pass: without it the enricher gives them no image and
//     the analyzer scores them against a baseline of that container alone.
//     When the batcher's queue is full it takes the announcement from a
//     reserve (bus.KeepReserve); with the reserve full too the container's
//     events are held with its announcement (collector.max_held_events)
//     until the batcher takes it; each such wait is counted once
//     (contain_collector_announcements_deferred_total).
//   - Sequence mode is free when off (one load of a mmapped global per
//     syscall) and isolated when on: its records have their own ring buffer
//     (collector.sequence_ring_bytes), polled, never waking the reader, so a
//     selected container's flood loses only its own sequence records,
//     counted; there is no token bucket on them. User-space memory is
//     bounded (4096 threads × sequence_batch).
//   - Sensitive files are registered by identity when their container is
//     announced and unregistered when its cgroup is gone (every
//     loss_interval); a failed registration is logged and counted
//     (contain_errors_total{stage="collector",kind="sensitive_inodes"}) and
//     the container's files are then matched by name only.
//   - Records are decoded by pure functions (decode, decodeSeq) that are fuzzed;
//     a record that does not decode is counted and dropped.
//   - Run detaches the programs when ctx ends, then publishes everything
//     already in the ring buffer before returning.
//
// Files, by concern: collector.go (Collector, New, Run, Close), load.go
// (loading the eBPF object, hook families and attach, kernel globals and
// syscall classes), read.go (the ring-buffer reader, decoding, routing to
// containers and holding events until a container is announced), loss.go
// (loss counters, rate-limit and per-container count reports), decode.go
// (pure record decoders), identity.go and lineage.go (container identity and
// origins), features.go (the kernel probe and attach modes), sensitive.go, sequence.go, ringwait.go, netaddrs.go, config.go.
package collector
