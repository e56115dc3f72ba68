package analyzer

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// SeccompOptions tunes WriteSeccomp.
type SeccompOptions struct {
	// Extra syscalls allowed besides the learned ones (e.g. what the
	// runtime needs to start the process).
	Extra []string
	// KillProcess kills a process making an unlisted syscall; by default
	// the syscall fails with EPERM.
	KillProcess bool
}

// runtimeSyscalls are what an OCI runtime needs between applying the
// filter and exec'ing the container's process, and what a process needs
// to start and exit; a learned set from a collector that started late
// may lack them.
var runtimeSyscalls = []string{
	"execve", "execveat", "brk", "mmap", "munmap", "mprotect", "arch_prctl", "set_tid_address", "set_robust_list",
	"rseq", "prlimit64", "getrandom", "exit", "exit_group", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
	"sigaltstack", "futex", "getpid", "gettid", "capget", "capset", "prctl", "close", "fstat", "newfstatat",
	"openat", "read", "write", "readlinkat", "getcwd", "chdir", "fchdir", "getuid", "geteuid", "getgid",
	"getegid", "setgroups", "setuid", "setgid", "setresuid", "setresgid", "getppid", "uname", "access",
	"faccessat", "faccessat2", "nanosleep", "clock_nanosleep", "clock_gettime", "close_range", "fcntl", "dup3",
	"statx", "ioctl", "wait4", "clone", "clone3", "vfork", "fork", "kill", "tgkill", "sched_yield", "madvise",
	"pread64", "lseek", "getdents64", "poll", "ppoll", "pselect6", "epoll_create1", "epoll_ctl", "epoll_pwait",
	"restart_syscall", // entered by the kernel after a stop or a freeze (see kernelSyscalls)
}

// SeccompSyscalls is the allow list WriteSeccomp would write.
func SeccompSyscalls(d *Doc, opts SeccompOptions) []string {
	set := map[string]bool{}
	for name := range d.Syscalls {
		if !strings.HasPrefix(name, "nr:") {
			set[name] = true
		}
	}
	for _, n := range runtimeSyscalls {
		set[n] = true
	}
	for _, n := range opts.Extra {
		set[n] = true
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// WriteSeccomp writes an OCI runtime-spec seccomp profile (linux.seccomp)
// allowing the baseline's learned syscalls and denying the rest.
func WriteSeccomp(w io.Writer, d *Doc, opts SeccompOptions) error {
	p := Seccomp(d, opts)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p); err != nil {
		return fmt.Errorf("writing seccomp profile of %s: %w", d.Key, err)
	}
	return nil
}

// Seccomp returns the OCI seccomp profile as a value that marshals to the
// runtime-spec JSON (use it as config.json's linux.seccomp).
func Seccomp(d *Doc, opts SeccompOptions) map[string]any {
	def := "SCMP_ACT_ERRNO"
	if opts.KillProcess {
		def = "SCMP_ACT_KILL_PROCESS"
	}
	p := map[string]any{
		"defaultAction": def,
		"architectures": []string{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"},
		"syscalls":      []map[string]any{{"names": SeccompSyscalls(d, opts), "action": "SCMP_ACT_ALLOW"}},
	}
	if !opts.KillProcess {
		p["defaultErrnoRet"] = 1
	}
	return p
}
