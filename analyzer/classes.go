package analyzer

import (
	"path"
	"strings"
)

// Reason codes. They are stable: alerts, rules and dashboards key on them.
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
	CodeSyscallSensitive  = "syscall.sensitive"
	CodeSyscallSequence   = "syscall.sequence"
	CodePeerUnseen        = "net.peer.unseen"
	CodePeerUndeclared    = "net.peer.undeclared"
	CodeListenNew         = "net.listen.new"
	CodeListenUndeclared  = "net.listen.undeclared"
	CodeWriteUnseen       = "file.write.unseen"
	CodeWriteSystem       = "file.write.system"
	CodeWriteUndeclared   = "file.write.undeclared"
	CodeReadSensitive     = "file.read.sensitive"
	CodeExecUndeclaredUID = "proc.uid.undeclared"
)

// class is the severity class of a reason code: its base severity, the
// Falco-style rule name it maps to and its MITRE ATT&CK techniques.
type class struct {
	severity float64
	rule     string
	mitre    []string
}

var classes = map[string]class{
	CodeExecUnseen:        {0.6, "Unseen executable in container", []string{"T1059"}},
	CodeExecShell:         {0.85, "Shell spawned in container", []string{"T1059.004"}},
	CodeExecInterpreter:   {0.8, "Interpreter spawned in container", []string{"T1059"}},
	CodeExecTmp:           {0.75, "Executable run from a writable temporary path", []string{"T1105", "T1036"}},
	CodeExecTool:          {0.5, "Network transfer tool run in container", []string{"T1105"}},
	CodeExecArgv:          {0.35, "Unseen command line shape", nil},
	CodeExecEdge:          {0.4, "Unseen parent to child process edge", nil},
	CodeUIDUnseen:         {0.5, "Process under an unseen user", []string{"T1078"}},
	CodeUIDRoot:           {0.75, "Process gained root in a non-root container", []string{"T1548"}},
	CodeExecUndeclaredUID: {0.6, "Process under an undeclared user", []string{"T1078"}},
	CodeSyscallUnseen:     {0.5, "Unseen syscall", nil},
	CodeSyscallSensitive:  {0.85, "Sensitive syscall in container", nil},
	CodeSyscallSequence:   {0.55, "Anomalous syscall sequence", nil},
	CodePeerUnseen:        {0.6, "Outbound connection to an unseen peer", []string{"T1071"}},
	CodePeerUndeclared:    {0.75, "Outbound connection to an undeclared peer", []string{"T1071"}},
	CodeListenNew:         {0.7, "Listening on a new port", []string{"T1571"}},
	CodeListenUndeclared:  {0.8, "Listening on an undeclared port", []string{"T1571"}},
	CodeWriteUnseen:       {0.45, "Write under an unseen path", nil},
	CodeWriteSystem:       {0.75, "Write below a system directory", []string{"T1543", "T1222"}},
	CodeWriteUndeclared:   {0.7, "Write outside declared volumes", []string{"T1565"}},
	CodeReadSensitive:     {0.8, "Read of a sensitive file", []string{"T1003.008", "T1552.001"}},
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

// execClass reports the class codes of an executable path beyond
// exec.unseen: shell, interpreter, temporary path, transfer tool.
func execClasses(filename string) []string {
	base := path.Base(filename)
	var out []string
	switch {
	case shells[base]:
		out = append(out, CodeExecShell)
	case isInterpreter(base):
		out = append(out, CodeExecInterpreter)
	case tools[base]:
		out = append(out, CodeExecTool)
	}
	if isTmpPath(filename) {
		out = append(out, CodeExecTmp)
	}
	return out
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

func isTmpPath(p string) bool {
	for _, pre := range []string{"/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/", "/memfd:", "/proc/self/fd/"} {
		if strings.HasPrefix(p, pre) {
			return true
		}
	}
	return false
}

var systemDirs = []string{"/etc", "/bin", "/sbin", "/usr", "/lib", "/lib64", "/boot", "/root", "/var/spool/cron"}

func isSystemPath(p string) bool {
	for _, d := range systemDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
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
func argvShape(argv []string) string {
	if len(argv) <= 1 {
		return ""
	}
	var b strings.Builder
	for i, a := range argv[1:] {
		if i == 8 {
			b.WriteString(" +")
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		switch {
		case strings.HasPrefix(a, "-") && len(a) > 1:
			if j := strings.IndexByte(a, '='); j > 0 {
				a = a[:j+1]
			}
			if len(a) > 32 {
				a = a[:32]
			}
			b.WriteString(a)
		case isNumber(a):
			b.WriteByte('N')
		case strings.Contains(a, "://"):
			b.WriteByte('U')
		case strings.HasPrefix(a, "/") || strings.HasPrefix(a, "./"):
			b.WriteByte('P')
		default:
			b.WriteByte('S')
		}
	}
	return b.String()
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
