package collector

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/syscalls"
)

// pollRing sets up the syscall-free reader (ringRead, ringWait); on an
// error the reader uses rd and blocks in epoll_wait.
func (c *Collector) pollRing() error {
	rb := c.coll.Maps["events"]
	rr, err := newRingRead(rb.FD(), int(rb.MaxEntries()))
	if err != nil {
		return err
	}
	rw, err := newRingWait(rb.FD())
	if err != nil {
		rr.close()
		return err
	}
	c.rr, c.rw = rr, rw
	return nil
}

// hook is one program and how to attach it.
type hook struct {
	program string
	name    string                // logged
	need    func(cfg Config) bool // attached only when true; nil: always
	attach  func(p *ebpf.Program) (link.Link, error)
}

// needSysExit: the sys_exit program counts syscalls, reports network
// and file syscalls and writes sequence records.
func needSysExit(c Config) bool {
	return c.Syscalls || c.Network || c.Files || len(c.SequenceSelect) > 0
}

// needExit: the exit program reports exits and counts exit/exit_group
// (which never reach sys_exit).
func needExit(c Config) bool { return c.Processes || c.Syscalls }

// needFork: the fork program passes origins to children (lineage) and
// reports forks when c.Processes.
func needFork(c Config) bool { return true }

func tpBTF(p *ebpf.Program) (link.Link, error) {
	return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
}

func rawTP(tp string) func(p *ebpf.Program) (link.Link, error) {
	return func(p *ebpf.Program) (link.Link, error) {
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: p})
	}
}

// hookFamilies are tried in order: the kernel refuses tp_btf as a whole or
// not at all, so each family is loaded and attached together.
var hookFamilies = [][]hook{
	{
		{program: "exec_tp_btf", name: "tp_btf/sched_process_exec", attach: tpBTF},
		{program: "sys_exit_tp_btf", name: "tp_btf/sys_exit", need: needSysExit, attach: tpBTF},
		{program: "fork_tp_btf", name: "tp_btf/sched_process_fork", need: needFork, attach: tpBTF},
		{program: "exit_tp_btf", name: "tp_btf/sched_process_exit", need: needExit, attach: tpBTF},
	},
	{
		{program: "exec_raw_tp", name: "raw_tracepoint/sched_process_exec", attach: rawTP("sched_process_exec")},
		{program: "sys_exit_raw_tp", name: "raw_tracepoint/sys_exit", need: needSysExit, attach: rawTP("sys_exit")},
		{program: "fork_raw_tp", name: "raw_tracepoint/sched_process_fork", need: needFork, attach: rawTP("sched_process_fork")},
		{program: "exit_raw_tp", name: "raw_tracepoint/sched_process_exit", need: needExit, attach: rawTP("sched_process_exit")},
	},
}

// load tries the hook families in order of preference (kernelFeatures.
// families): it loads the object with one family's programs only,
// attaches them and falls back to the next family when the kernel refuses.
func (c *Collector) load(families [][]hook, hostCg uint64, hostMnt uint32) error {
	class := syscallClasses(c.cfg)
	b2u := func(b bool) uint8 {
		if b {
			return 1
		}
		return 0
	}
	hp := b2u(c.cfg.HostProcesses)
	var rateCost, rateCap uint64
	if c.cfg.RatePerSec > 0 {
		rateCost = uint64(1e9 / c.cfg.RatePerSec)
		rateCap = rateCost * uint64(c.cfg.RateBurst)
	}
	// The sys_enter program skips its own-process check (a helper call
	// per syscall) when the cgroup filter already excludes the collector.
	filterSelf := uint8(1)
	if own, err := ownCgroupID(c.cfg.CgroupRoot); err == nil && own == hostCg && !c.cfg.HostProcesses {
		filterSelf = 0
	}
	var errs []error
family:
	for _, fam := range families {
		var hooks []hook
		for _, h := range fam {
			if h.need == nil || h.need(c.cfg) {
				hooks = append(hooks, h)
			}
		}
		spec, err := loadCollector()
		if err != nil {
			return fmt.Errorf("collector: %w", err)
		}
		keep := map[string]bool{}
		for _, h := range hooks {
			keep[h.program] = true
		}
		for name := range spec.Programs {
			if !keep[name] {
				delete(spec.Programs, name)
			}
		}
		spec.Maps["events"].MaxEntries = uint32(c.cfg.RingBufferBytes)
		seqRing := os.Getpagesize() // sequence mode off: never written
		if len(c.cfg.SequenceSelect) > 0 {
			seqRing = c.cfg.SequenceRingBytes
		}
		spec.Maps["seq_events"].MaxEntries = uint32(seqRing)
		for name, v := range map[string]any{
			"host_cgroup_id": hostCg,
			"self_tgid":      uint32(os.Getpid()),
			"host_processes": hp,
			"syscall_class":  class,
			"filter_self":    filterSelf,
			"track_counts":   b2u(c.cfg.Syscalls),
			"track_procs":    b2u(c.cfg.Processes),
			"rate_cost_ns":   rateCost,
			"rate_cap_ns":    rateCap,
			"wake_types":     wakeTypes(c.cfg.WakeupKinds),
			"wake_bytes":     uint64(c.cfg.RingBufferBytes / 4),
			"wake_gated":     uint32(b2u(c.cfg.WakeupCoalesce > 0)),
			"host_mnt_ns":    hostMnt,
			// A quarter of the ring is kept for exec, process and
			// syscall records: a file or network flood cannot fill it.
			"bulk_ring_limit": uint64(c.cfg.RingBufferBytes) * 3 / 4,
			"open_detail":     b2u(!c.cfg.noOpenDetail),
		} {
			if err := spec.Variables[name].Set(v); err != nil {
				return fmt.Errorf("collector: setting %s: %w", name, err)
			}
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: loading: %w", hooks[0].name, err))
			continue
		}
		if err := errors.Join(fillSensitiveFiles(coll.Maps["sensitive_files"], c.cfg.SensitiveFiles),
			fillSensitiveNames(coll.Maps["sensitive_names"], c.cfg.SensitiveFiles)); err != nil {
			coll.Close()
			return fmt.Errorf("collector: %w", err)
		}
		var links []link.Link
		var names []string
		for _, h := range hooks {
			l, err := h.attach(coll.Programs[h.program])
			if err != nil {
				for _, l := range links {
					_ = l.Close()
				}
				coll.Close()
				errs = append(errs, fmt.Errorf("attaching %s: %w", h.name, err))
				continue family
			}
			links = append(links, l)
			names = append(names, h.name)
		}
		if len(errs) > 0 {
			c.log.Warn("preferred hooks refused; fell back", logfields.Hooks, names, logfields.Err, errors.Join(errs...))
		}
		c.coll, c.links, c.hooks = coll, links, names
		return nil
	}
	return fmt.Errorf("collector: no hooks load: %w", errors.Join(errs...))
}

// seedLineage gives the tasks that ran before the programs were loaded
// their origin (seedOrigins), then lets the kernel take a task it has no
// origin for in a container cgroup for the runtime's.
func (c *Collector) seedLineage(hostCg uint64, hostMnt uint32) error {
	st, err := seedOrigins(c.coll.Maps["origins"], c.coll.Maps["programs"], procRoot, c.cfg.CgroupRoot, hostCg, hostMnt)
	if err != nil {
		return fmt.Errorf("collector: seeding origins: %w", err)
	}
	if st.failed > 0 {
		c.m.Errors.WithLabelValues(metrics.StageCollector, "origin_seed").Add(float64(st.failed))
	}
	if err := c.coll.Variables["lineage_ready"].Set(uint32(1)); err != nil {
		return fmt.Errorf("collector: enabling lineage (mmapped BPF globals need Linux 5.5): %w", err)
	}
	c.log.Info("origins seeded", logfields.Processes, st.processes, logfields.Tasks, st.tasks, logfields.Failed, st.failed)
	return nil
}

// Syscalls the sys_exit program turns into network and file records, by
// name: the numbers are this architecture's (internal/syscalls), and a
// syscall it lacks (arm64 has only the *at variants) is left out.
var (
	netSyscalls  = syscalls.Numbers("connect", "accept", "bind", "listen", "accept4")
	fileSyscalls = syscalls.Numbers("open", "openat", "openat2", "creat", "rename", "renameat", "renameat2", // see handle_file
		"unlink", "unlinkat", "chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat",
		"mknod", "mknodat", "link", "linkat", "symlink", "symlinkat", "truncate", "ftruncate", "mkdir", "mkdirat")
	socketSyscall, _ = syscalls.Number("socket")
)

// Syscall classes (bpf/common.h CLASS_*).
const (
	classSensitive = 1
	classNet       = 2
	classFile      = 4
	classSocket    = 8
)

// syscallClasses is the kernel's per-syscall table of what to report.
func syscallClasses(cfg Config) [syscallMax]uint8 {
	var class [syscallMax]uint8
	for _, name := range cfg.SensitiveSyscalls {
		nr, _ := syscalls.Number(name) // checked by Validate
		class[nr] |= classSensitive
	}
	if cfg.Network {
		for _, nr := range netSyscalls {
			class[nr] |= classNet
		}
	}
	if cfg.Files {
		for _, nr := range fileSyscalls {
			class[nr] |= classFile
		}
	}
	if cfg.Syscalls {
		// Packet and raw sockets: reported as sensitive with their args
		// (the kernel checks family and type; every socket() when socket
		// is itself a sensitive syscall).
		class[socketSyscall] |= classSocket
	}
	return class
}

// sensitivePathLen is the kernel's key size for sensitive_files.
const sensitivePathLen = 64

func fillSensitiveFiles(m *ebpf.Map, paths []string) error {
	for _, p := range paths {
		var key [sensitivePathLen]byte
		copy(key[:], p)
		if err := m.Put(key, uint8(1)); err != nil {
			return fmt.Errorf("sensitive file %q: %w", p, err)
		}
		if leaf, ok := leafFirstKey(p); ok {
			if err := m.Put(leaf, uint8(1)); err != nil {
				return fmt.Errorf("sensitive file %q: %w", p, err)
			}
		}
	}
	return nil
}

// leafFirstKey encodes an absolute path as the kernel's path walk writes
// it: components leaf first, each NUL-terminated ("/etc/shadow" →
// "shadow\x00etc\x00"), NUL-padded; ok is false when it does not fit.
func leafFirstKey(p string) (key [sensitivePathLen]byte, ok bool) {
	parts := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	off := 0
	for i := len(parts) - 1; i >= 0; i-- {
		if parts[i] == "" || off+len(parts[i])+1 >= sensitivePathLen {
			return key, false
		}
		off += copy(key[off:], parts[i])
		off++ // NUL
	}
	return key, true
}

// ownCgroupID is the cgroup2 id of this process.
func ownCgroupID(root string) (uint64, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return cgroups.ID(filepath.Join(root, p))
		}
	}
	return 0, errors.New("no cgroup2 line in /proc/self/cgroup")
}
