package analyzer

import (
	"fmt"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Reason codes. They are stable: alerts, rules and dashboards key on them.
// The first group are anomalies (something the image's baseline never
// showed); the second are behaviours, recognised by what the event says
// whether or not its executable is in the baseline (see behaviours.go).
const (
	CodeExecUnseen        = "exec.unseen"
	CodeExecShell         = "exec.shell"
	CodeExecInterpreter   = "exec.interpreter"
	CodeExecTmp           = "exec.tmp"
	CodeExecTool          = "exec.tool"
	CodeExecArgv          = "exec.argv.unseen"
	CodeExecEdge          = "exec.edge.unseen"
	CodeUIDUnseen         = "proc.uid.unseen"
	CodeUIDRoot           = "proc.uid.root"
	CodeSyscallUnseen     = "syscall.unseen"
	CodeSyscallRoutine    = "syscall.unseen.routine"
	CodeSyscallSensitive  = "syscall.sensitive"
	CodeSyscallSequence   = "syscall.sequence"
	CodePeerUnseen        = "net.peer.unseen"
	CodePeerUndeclared    = "net.peer.undeclared"
	CodePeerNewAddress    = "net.peer.new_address"
	CodeListenNew         = "net.listen.new"
	CodeListenUndeclared  = "net.listen.undeclared"
	CodeWriteUnseen       = "file.write.unseen"
	CodeWriteSystem       = "file.write.system"
	CodeWriteUndeclared   = "file.write.undeclared"
	CodeReadSensitive     = "file.read.sensitive"
	CodeExecUndeclaredUID = "proc.uid.undeclared"

	// Behaviours.
	CodeExecDrift       = "exec.drift"
	CodeExecFileless    = "exec.fileless"
	CodeExecPkgManager  = "exec.pkg_manager"
	CodeExecScanner     = "exec.scanner"
	CodeExecMiner       = "exec.miner"
	CodeMinerPort       = "net.miner_port"
	CodeRawSocket       = "net.raw_socket"
	CodeDevCreate       = "file.dev.create"
	CodeHiddenFile      = "file.hidden"
	CodeSSHPersist      = "persist.ssh"
	CodeShellConfig     = "persist.shell_config"
	CodeCronPersist     = "persist.cron"
	CodeAccountChange   = "persist.account"
	CodeSetuidBit       = "priv.setuid_bit"
	CodePrivilegeGain   = "priv.gain"
	CodeLoginShell      = "proc.login_shell"
	CodeCredSearch      = "cred.search"
	CodePtrace          = "proc.ptrace"
	CodeProcMemory      = "proc.vm_access"
	CodeNamespace       = "escape.namespace"
	CodeMount           = "escape.mount"
	CodeChroot          = "escape.chroot"
	CodeCgroupEscape    = "escape.cgroup"
	CodeKernelModule    = "kernel.module"
	CodeBPF             = "kernel.bpf"
	CodeUserfaultfd     = "kernel.userfaultfd"
	CodeBulkDelete      = "file.bulk_delete"
	CodeLogClear        = "defense.log_clear"
	CodeExecSession     = "exec.session"
	CodeReverseShell    = "net.reverse_shell"
	CodeNetScan         = "net.scan"
	CodeKernelTunable   = "kernel.tunable"
	CodeSensitiveLink   = "file.link.sensitive"
	CodeExecDecode      = "exec.decode"
	CodeRuntimeSocket   = "escape.runtime_socket"
	CodeContainerAdmin  = "exec.container_admin"
	CodeCloudMetadata   = "cred.cloud_metadata"
	CodeMasquerade      = "defense.masquerade"
	CodeIncidentCombine = "incident.combined"
)

// class is the severity class of a reason code: its default score, the
// Falco-style rule name it maps to and its MITRE ATT&CK techniques.
type class struct {
	severity float64
	rule     string
	mitre    []string
}

// classes is the table of reason codes (docs/detection.md renders it).
// Operators override a default score with analyzer.class_scores.
var classes = map[string]class{
	CodeExecUnseen:        {0.8, "Unseen executable in container", []string{"T1059"}},
	CodeExecShell:         {0.85, "Shell spawned by a service in container", []string{"T1059.004"}},
	CodeExecInterpreter:   {0.8, "Interpreter spawned by a service in container", []string{"T1059"}},
	CodeExecTmp:           {0.85, "Executable run from a writable or tmpfs path", []string{"T1105", "T1036.005"}},
	CodeExecTool:          {0.6, "Remote copy tool run in container", []string{"T1105"}},
	CodeExecArgv:          {0.35, "Unseen command line shape", nil},
	CodeExecEdge:          {0.4, "Unseen parent to child process edge", nil},
	CodeUIDUnseen:         {0.5, "Process under an unseen user", []string{"T1078"}},
	CodeUIDRoot:           {0.75, "Process gained root in a non-root container", []string{"T1548"}},
	CodeExecUndeclaredUID: {0.6, "Process under an undeclared user", []string{"T1078"}},
	CodeSyscallUnseen:     {0.5, "Unseen syscall", nil},
	CodeSyscallRoutine:    {0.3, "Unseen routine syscall", nil},
	CodeSyscallSensitive:  {0.85, "Sensitive syscall in container", nil},
	CodeSyscallSequence:   {0.7, "Anomalous syscall sequence", []string{"T1190", "T1059"}},
	CodePeerUnseen:        {0.6, "Outbound connection to an unseen peer", []string{"T1071"}},
	CodePeerNewAddress:    {0.4, "Outbound connection to a new address at a learned port", []string{"T1071"}},
	CodePeerUndeclared:    {0.75, "Outbound connection to an undeclared peer", []string{"T1071"}},
	CodeListenNew:         {0.7, "Listening on a new port", []string{"T1571"}},
	CodeListenUndeclared:  {0.8, "Listening on an undeclared port", []string{"T1571"}},
	CodeWriteUnseen:       {0.45, "Write under an unseen path", nil},
	CodeWriteSystem:       {0.8, "Write into image content below a system directory", []string{"T1543", "T1222"}},
	CodeWriteUndeclared:   {0.8, "Write outside declared volumes", []string{"T1565"}},
	CodeReadSensitive:     {0.85, "Read of credentials", []string{"T1003.008", "T1552.001", "T1552.004"}},

	CodeExecDrift:       {0.9, "Drift: executable written in the container then run", []string{"T1105", "T1036"}},
	CodeExecFileless:    {0.9, "Fileless execution (memfd or deleted binary)", []string{"T1620"}},
	CodeExecPkgManager:  {0.6, "Package manager run in container", []string{"T1072", "T1105"}},
	CodeExecScanner:     {0.75, "Network scanner run in container", []string{"T1046"}},
	CodeExecMiner:       {0.9, "Cryptocurrency miner in container", []string{"T1496"}},
	CodeMinerPort:       {0.6, "Connection to a well-known mining pool port", []string{"T1496"}},
	CodeRawSocket:       {0.75, "Packet or raw socket opened", []string{"T1040"}},
	CodeDevCreate:       {0.8, "File or device node created below /dev", []string{"T1611", "T1564"}},
	CodeHiddenFile:      {0.7, "Hidden file or directory created in a system path", []string{"T1564.001"}},
	CodeSSHPersist:      {0.9, "SSH authorized_keys or configuration changed", []string{"T1098.004"}},
	CodeShellConfig:     {0.8, "Shell configuration changed", []string{"T1546.004"}},
	CodeCronPersist:     {0.85, "Cron or systemd timer persistence", []string{"T1053.003", "T1053.006"}},
	CodeAccountChange:   {0.85, "User accounts changed", []string{"T1136.001", "T1098"}},
	CodeSetuidBit:       {0.85, "Setuid or setgid bit set", []string{"T1548.001"}},
	CodePrivilegeGain:   {0.9, "Privilege gain (uid 0 from non-root, capset)", []string{"T1548"}},
	CodeLoginShell:      {0.8, "Interactive login shell of a system user", []string{"T1078.003"}},
	CodeCredSearch:      {0.75, "Search for private keys or passwords", []string{"T1552.001", "T1552.004"}},
	CodePtrace:          {0.9, "Ptrace attach or anti-debugging", []string{"T1055.008", "T1622"}},
	CodeProcMemory:      {0.9, "Another process's memory read or written", []string{"T1055"}},
	CodeNamespace:       {0.85, "Namespace change (unshare, setns)", []string{"T1611"}},
	CodeMount:           {0.85, "Mount, umount or pivot_root", []string{"T1611"}},
	CodeChroot:          {0.85, "Chroot", []string{"T1611"}},
	CodeCgroupEscape:    {0.95, "Container escape through release_agent, core_pattern or cgroup files", []string{"T1611"}},
	CodeKernelModule:    {0.95, "Kernel module loaded or unloaded", []string{"T1547.006"}},
	CodeBPF:             {0.85, "bpf() in container", []string{"T1014"}},
	CodeUserfaultfd:     {0.85, "userfaultfd() in container", []string{"T1068"}},
	CodeBulkDelete:      {0.8, "Bulk deletion or overwrite of data", []string{"T1485", "T1486"}},
	CodeLogClear:        {0.8, "Logs or shell history cleared", []string{"T1070.002", "T1070.003"}},
	CodeExecSession:     {0.4, "Exec session entered the container", []string{"T1609"}},
	CodeReverseShell:    {0.9, "Program run with its standard input or output on a network connection (reverse shell)", []string{"T1059.004", "T1071"}},
	CodeNetScan:         {0.75, "Network scan: connections to many ports or hosts", []string{"T1046"}},
	CodeKernelTunable:   {0.85, "Write of a kernel parameter below /proc/sys or /sys", []string{"T1611", "T1562.001"}},
	CodeSensitiveLink:   {0.85, "Symlink or hardlink made to a credential file", []string{"T1003.008", "T1552.001"}},
	CodeRuntimeSocket:   {0.9, "Container runtime socket connected to (docker.sock, containerd, CRI-O, podman)", []string{"T1611", "T1609", "T1552.007"}},
	CodeExecDecode:      {0.6, "Payload decoded in container (base64 -d and the like)", []string{"T1140"}},
	CodeContainerAdmin:  {0.85, "Container administration tool run in container (kubectl, docker, crictl...)", []string{"T1609", "T1610", "T1613"}},
	CodeCloudMetadata:   {0.85, "Cloud instance metadata service queried (instance or task credentials)", []string{"T1552.005"}},
	CodeMasquerade:      {0.85, "Process renamed (procfs comm) or named like a kernel thread", []string{"T1036.004", "T1036.005"}},
	CodeIncidentCombine: {0, "Several deviations in one incident", nil},

	// Policies (commits.go).
	CodeCommitUnallowed: {0.7, "Container committed into an image outside the allowlist", []string{"T1525"}},
	CodeWriteReadonly:   {0.75, "Write refused by a read-only filesystem", []string{"T1565"}},
}

// ClassScores is the table of default scores by reason code.
func ClassScores() map[string]float64 {
	out := make(map[string]float64, len(classes))
	for code, c := range classes {
		if code != CodeIncidentCombine {
			out[code] = c.severity
		}
	}
	return out
}

// ClassInfo is one row of the reason-code table.
type ClassInfo struct {
	Code  string
	Rule  string
	Mitre []string
	Score float64
}

// Classes lists the reason codes with their defaults, sorted by code.
func Classes() []ClassInfo {
	out := make([]ClassInfo, 0, len(classes))
	for code, c := range classes {
		out = append(out, ClassInfo{code, c.rule, c.mitre, c.severity})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

// parseClassScores parses analyzer.class_scores entries ("code=score")
// into overrides; an unknown code or a score outside [0,1] is an error
// naming the key.
func parseClassScores(entries []string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, e := range entries {
		code, val, ok := strings.Cut(strings.TrimSpace(e), "=")
		code = strings.TrimSpace(code)
		if !ok {
			return nil, fmt.Errorf("analyzer.class_scores: %q is not code=score", e)
		}
		if _, known := classes[code]; !known || code == CodeIncidentCombine {
			return nil, fmt.Errorf("analyzer.class_scores.%s: unknown reason code", code)
		}
		s, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || math.IsNaN(s) || s < 0 || s > 1 {
			return nil, fmt.Errorf("analyzer.class_scores.%s: score %q not in [0,1]", code, strings.TrimSpace(val))
		}
		out[code] = s
	}
	return out, nil
}

// sensitiveSyscalls maps syscalls worth an alert on their own to their
// MITRE techniques.
var sensitiveSyscalls = map[string][]string{
	"ptrace":            {"T1055.008"},
	"process_vm_writev": {"T1055"},
	"process_vm_readv":  {"T1055"},
	"unshare":           {"T1611"},
	"setns":             {"T1611"},
	"mount":             {"T1611"},
	"umount2":           {"T1611"},
	"pivot_root":        {"T1611"},
	"chroot":            {"T1611"},
	"init_module":       {"T1547.006"},
	"finit_module":      {"T1547.006"},
	"delete_module":     {"T1547.006"},
	"kexec_load":        {"T1611"},
	"bpf":               {"T1014"},
	"perf_event_open":   {"T1014"},
	"open_by_handle_at": {"T1611"},
	"keyctl":            {"T1552"},
	"add_key":           {"T1552"},
	"userfaultfd":       {"T1068"},
	"setuid":            {"T1548"},
	"setreuid":          {"T1548"},
	"setresuid":         {"T1548"},
	"capset":            {"T1548"},
	"memfd_create":      {"T1620"},
	"reboot":            {"T1529"},
}

var shells = map[string]bool{
	"sh": true, "bash": true, "ash": true, "dash": true, "zsh": true, "ksh": true,
	"mksh": true, "csh": true, "tcsh": true, "fish": true, "busybox": true,
}

var interpreters = []string{"python", "perl", "ruby", "php", "node", "lua", "tclsh", "awk", "gawk", "mawk", "nawk", "irb", "pwsh", "java", "deno", "bun", "osascript"}

var tools = map[string]bool{
	"wget": true, "curl": true, "nc": true, "ncat": true, "netcat": true, "socat": true,
	"tftp": true, "ftp": true, "scp": true, "sftp": true, "ssh": true, "telnet": true, "rsync": true,
}

func isInterpreter(base string) bool {
	for _, p := range interpreters {
		if strings.HasPrefix(base, p) {
			rest := base[len(p):]
			if rest == "" || strings.Trim(rest, "0123456789.-") == "" {
				return true
			}
		}
	}
	return false
}

// tmpDirs are the writable or tmpfs directories (with their slash).
var tmpDirs = []string{"/tmp/", "/var/tmp/", "/dev/shm/", "/run/", "/var/run/", "/dev/mqueue/"}

// isTmpPath reports whether p lies below one of tmpDirs; the byte after
// the leading slash picks the prefixes to compare (TestPathClasses).
func isTmpPath(p string) bool {
	if len(p) < len("/tmp/") || p[0] != '/' {
		return false
	}
	switch p[1] {
	case 't':
		return strings.HasPrefix(p, "/tmp/")
	case 'r':
		return strings.HasPrefix(p, "/run/")
	case 'v':
		return strings.HasPrefix(p, "/var/tmp/") || strings.HasPrefix(p, "/var/run/")
	case 'd':
		return strings.HasPrefix(p, "/dev/shm/") || strings.HasPrefix(p, "/dev/mqueue/")
	}
	return false
}

var systemDirs = []string{"/etc", "/bin", "/sbin", "/usr", "/lib", "/lib64", "/boot", "/root", "/var/spool/cron"}

// isSystemPath reports whether p is one of systemDirs or below it; the
// byte after the leading slash picks the directories to compare
// (TestPathClasses).
func isSystemPath(p string) bool {
	if len(p) < len("/etc") || p[0] != '/' {
		return false
	}
	switch p[1] {
	case 'e':
		return under(p, "/etc")
	case 'b':
		return under(p, "/bin") || under(p, "/boot")
	case 's':
		return under(p, "/sbin")
	case 'u':
		return under(p, "/usr")
	case 'l':
		return under(p, "/lib") || under(p, "/lib64")
	case 'r':
		return under(p, "/root")
	case 'v':
		return under(p, "/var/spool/cron")
	}
	return false
}

var sensitiveFiles = []string{
	"/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/", "/root/.ssh/", "/etc/ssh/ssh_host_",
	"/var/run/secrets/", "/run/secrets/", "/proc/kcore", "/etc/kubernetes/", "/home/", "/etc/master.passwd",
}

func isSensitiveRead(p string) bool {
	for _, s := range sensitiveFiles {
		if p == s || strings.HasPrefix(p, s) {
			if s == "/home/" && !strings.Contains(p, "/.ssh/") {
				continue
			}
			return true
		}
	}
	return strings.HasPrefix(p, "/proc/") && strings.HasSuffix(p, "/mem")
}

// pathPrefix is the learned unit of file writes: the first depth
// components of the directory holding p ("/var/www/html/x" -> "/var/www").
func pathPrefix(p string, depth int) string {
	if p == "" || p[0] != '/' {
		return "(relative)"
	}
	dir := path.Dir(p)
	n := 0
	for i := 1; i < len(dir); i++ {
		if dir[i] == '/' {
			n++
			if n == depth {
				return dir[:i]
			}
		}
	}
	return dir
}

// argvShape abstracts a command line: flags are kept, other arguments
// become N (number), P (path), U (URL) or S (string); at most 8 are kept.
func argvShape(argv []string) string { return string(appendArgvShape(nil, argv)) }

// appendArgvShape appends argv's shape (argvShape) to buf.
func appendArgvShape(buf []byte, argv []string) []byte {
	if len(argv) <= 1 {
		return buf
	}
	for i, a := range argv[1:] {
		if i == 8 {
			buf = append(buf, " +"...)
			break
		}
		if i > 0 {
			buf = append(buf, ' ')
		}
		switch {
		case strings.HasPrefix(a, "-") && len(a) > 1:
			if j := strings.IndexByte(a, '='); j > 0 {
				a = a[:j+1]
			}
			if len(a) > 32 {
				a = a[:32]
			}
			buf = append(buf, a...)
		case isNumber(a):
			buf = append(buf, 'N')
		case strings.Contains(a, "://"):
			buf = append(buf, 'U')
		case strings.HasPrefix(a, "/") || strings.HasPrefix(a, "./"):
			buf = append(buf, 'P')
		default:
			buf = append(buf, 'S')
		}
	}
	return buf
}

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' && s[i] != ':' {
			return false
		}
	}
	return true
}

// Priority maps a score to a Falco priority.
func Priority(score float64) string {
	switch {
	case score >= 0.9:
		return "Critical"
	case score >= 0.75:
		return "Error"
	case score >= 0.5:
		return "Warning"
	case score >= 0.3:
		return "Notice"
	}
	return "Informational"
}

// routineSyscalls act on the calling process alone: its memory, its own
// file descriptors, its threads' scheduling and signals, reading its own
// identity and the clock. A language runtime uses them when it likes (Go's
// scheduler calls sched_yield or tgkill now and then; `id` reads
// getgroups), so a baseline learned over a short window misses some; and
// none of them reaches outside the process. An unseen one is reported
// (syscall.unseen.routine, 0.3: below an alert that matters, never a
// pause alone) rather than scored as an unseen syscall. What reaches
// outside (files, sockets, processes, namespaces, devices, ioctl, prctl)
// is not here.
var routineSyscalls = map[string]bool{
	"sched_yield": true, "sched_getaffinity": true, "sched_getparam": true, "sched_getscheduler": true,
	"sched_get_priority_max": true, "sched_get_priority_min": true, "getcpu": true,
	"futex": true, "futex_waitv": true, "set_robust_list": true, "get_robust_list": true, "rseq": true, "membarrier": true,
	"nanosleep": true, "clock_nanosleep": true, "clock_gettime": true, "clock_getres": true, "gettimeofday": true,
	"time": true, "times": true, "pause": true, "alarm": true,
	"getpid": true, "gettid": true, "getppid": true, "getpgrp": true, "getpgid": true, "getsid": true,
	"getuid": true, "geteuid": true, "getgid": true, "getegid": true, "getgroups": true, "getresuid": true,
	"getresgid": true, "getrusage": true, "getrlimit": true, "uname": true, "sysinfo": true, "getrandom": true,
	"umask": true, "getcwd": true,
	"tgkill": true, "tkill": true, "rt_sigaction": true, "rt_sigprocmask": true, "rt_sigreturn": true,
	"rt_sigpending": true, "rt_sigtimedwait": true, "rt_sigsuspend": true, "sigaltstack": true,
	"madvise": true, "mmap": true, "munmap": true, "mprotect": true, "mremap": true, "msync": true,
	"mincore": true, "brk": true, "arch_prctl": true, "set_tid_address": true, "exit": true, "exit_group": true,
	"close": true, "close_range": true, "dup": true, "dup2": true, "dup3": true, "fcntl": true,
	"fstat": true, "lseek": true, "read": true, "readv": true, "pread64": true, "preadv": true, "preadv2": true,
	"write": true, "writev": true, "pwrite64": true, "pwritev": true, "pwritev2": true, "sendfile": true,
	"poll": true, "ppoll": true, "select": true, "pselect6": true, "epoll_create": true, "epoll_create1": true,
	"epoll_ctl": true, "epoll_wait": true, "epoll_pwait": true, "epoll_pwait2": true, "eventfd": true,
	"eventfd2": true, "pipe": true, "pipe2": true, "timerfd_create": true, "timerfd_settime": true,
	"timerfd_gettime": true, "wait4": true, "waitid": true, "fsync": true, "fdatasync": true, "fadvise64": true,
	"getdents64": true,
}
