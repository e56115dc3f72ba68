package analyzer

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/containsec/contain/schemas/containv1"
)

// hit is one behaviour an event shows: its reason code, the subject alerts
// are grouped by, a message, and key, what a baseline learns of it (an
// image whose own program does this while learning is not alerted for it
// again; a learned binary doing something new still is).
type hit struct {
	code, subject, msg, key string
	mitre                   []string
	// tree: the behaviour is a process tree's (a count of its operations
	// crossing a threshold), not one executable's; whichever process
	// tipped the count is not what did it, so a baseline that learned it
	// for any executable has learned it.
	tree bool
}

// Behaviours are recognised by pure functions of the event and what the
// engine knows of its process (execInfo); they do not look at the
// baseline.

// execInfo is what an exec's classification needs beyond the event.
type execInfo struct {
	name   string // executable as learned (execName)
	parent string // parent's executable, "" when unknown
	// written: the executable was created, written, renamed into place or
	// made executable in this container before.
	written bool
	// nonRootImage: the image's learned processes never ran as root.
	nonRootImage bool
}

var pkgManagers = map[string]bool{
	"apt": true, "apt-get": true, "aptitude": true, "dpkg": true, "apk": true, "yum": true, "dnf": true,
	"microdnf": true, "rpm": true, "zypper": true, "pacman": true, "pip": true, "pip3": true, "pipx": true,
	"npm": true, "yarn": true, "pnpm": true, "gem": true, "cargo": true, "conda": true, "easy_install": true,
	"composer": true, "go": true, "brew": true, "emerge": true,
}

var scanners = map[string]bool{
	"nmap": true, "masscan": true, "zmap": true, "zgrab": true, "zgrab2": true, "rustscan": true, "unicornscan": true,
	"hping": true, "hping3": true, "naabu": true, "arp-scan": true, "fping": true, "nbtscan": true,
}

var miners = map[string]bool{
	"xmrig": true, "xmr-stak": true, "minerd": true, "cpuminer": true, "cgminer": true, "bfgminer": true,
	"ethminer": true, "t-rex": true, "nbminer": true, "lolminer": true, "phoenixminer": true, "ccminer": true,
	"xmrig-notls": true, "kdevtmpfsi": true, "kinsing": true,
}

var userTools = map[string]bool{
	"useradd": true, "usermod": true, "userdel": true, "adduser": true, "deluser": true, "groupadd": true,
	"groupmod": true, "groupdel": true, "addgroup": true, "delgroup": true, "passwd": true, "chpasswd": true,
	"gpasswd": true, "chage": true, "newusers": true, "vipw": true, "vigr": true, "chsh": true, "chfn": true,
}

var searchTools = map[string]bool{
	"grep": true, "egrep": true, "fgrep": true, "rg": true, "find": true, "locate": true, "mlocate": true,
	"plocate": true, "ag": true, "ack": true, "ripgrep": true, "git-grep": true,
}

// credNeedles are what a search for secrets names (lower case).
var credNeedles = []string{
	"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "private key", "password", "passwd", "*.pem", ".pem",
	"*.key", ".aws", "credentials", ".kube", "kubeconfig", "authorized_keys", ".ssh", "secret", "token",
	"*.p12", "*.pfx", "wallet", "aws_access_key", "aws_secret", "access_key", "api_key", "apikey", "private_key",
	"shadow", "htpasswd", ".git-credentials", ".netrc", ".pgpass", "id_ed25519",
}

// minerNeedles name a miner in a command line (lower case).
var minerNeedles = []string{"stratum+tcp://", "stratum+ssl://", "stratum2+tcp://", "--donate-level", "--coin=monero", "cryptonight", "randomx"}

// execNeedles finds the miner and metadata needles of a command line in
// one pass (needleMiner, needleMetadata).
var execNeedles = newNeedleSet(minerNeedles, metadataNeedles)

const (
	needleMiner uint8 = 1 << iota
	needleMetadata
)

var minerPorts = map[uint32]bool{3333: true, 4444: true, 5555: true, 7777: true, 14444: true, 45700: true}

// apiPorts are the control APIs of the host's runtime and orchestrator:
// Docker's TCP API, etcd, the Kubernetes API server, the kubelet.
var apiPorts = map[uint32]string{
	2375: "Docker API", 2376: "Docker API (TLS)", 2379: "etcd", 6443: "Kubernetes API server",
	10250: "kubelet API", 10255: "kubelet read-only API",
}

// wipers destroy data whatever their arguments.
var wipers = map[string]bool{"shred": true, "wipe": true, "srm": true, "wipefs": true}

func argvHas(argv []string, flags ...string) bool {
	for _, a := range argv {
		for _, f := range flags {
			if a == f {
				return true
			}
		}
	}
	return false
}

// classifyExec names the behaviours an exec shows.
func classifyExec(x *containv1.Exec, in execInfo) []hit {
	fn := in.name
	base := path.Base(fn)
	a0 := ""
	if len(x.Argv) > 0 {
		a0 = x.Argv[0]
	}
	args := []string(nil)
	if len(x.Argv) > 1 {
		args = x.Argv[1:]
	}
	// `busybox APPLET args`: the applet is what runs.
	if base == "busybox" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		base, args = path.Base(args[0]), args[1:]
	}
	cls := baseClasses[base]
	needles := execNeedles.inArgv(x.Argv)
	pbase := path.Base(in.parent)
	// The edge key and the "by" phrase are built only for a hit that
	// names them (most execs have none).
	edge := func() string {
		if in.parent == "" {
			return unknownParent + fn
		}
		return in.parent + " -> " + fn
	}
	by := func() string {
		if in.parent == "" {
			return ""
		}
		return fmt.Sprintf(" by %q", in.parent)
	}
	var out []hit
	add := func(code, subject, key, msg string) {
		out = append(out, hit{code: code, subject: subject, key: key, msg: msg})
	}
	switch {
	case cls&baseShell != 0:
		// The container's own program may be a shell (its parent is then
		// the runtime, unknown here): that is learned like any behaviour.
		if baseClasses[pbase]&baseShell == 0 {
			add(CodeExecShell, fn, edge(), fmt.Sprintf("shell %q started%s", base, by()))
		}
		login := strings.HasPrefix(a0, "-") || argvHas(args, "-l", "--login", "-i")
		if p := x.Proc; login && p != nil && (p.Euid >= 1 && p.Euid <= 999 || p.Euid == 0 && in.nonRootImage) {
			add(CodeLoginShell, fn, fn, fmt.Sprintf("interactive login shell %q (argv %q) of system user uid %d", base, x.Argv, p.Euid))
		}
	case isInterpreter(base):
		if !isInterpreter(pbase) {
			add(CodeExecInterpreter, fn, edge(), fmt.Sprintf("interpreter %q started%s", base, by()))
		}
	}
	if x.StdioInet {
		add(CodeReverseShell, fn, fn, fmt.Sprintf("%q runs with its standard input or output on a network connection (reverse shell)%s", fn, by()))
	}
	exe := x.Exe
	switch {
	case x.ExeMemfd || x.ExeDeleted || isFilelessPath(x.Filename) || isFilelessPath(exe):
		what := "an anonymous memory file (memfd)"
		if x.ExeDeleted {
			what = "a deleted file"
		}
		add(CodeExecFileless, fn, "fileless", fmt.Sprintf("%q (binary %q) runs from %s", fn, exe, what))
	case isTmpPath(fn) || isTmpPath(x.Filename) || exe != "" && isTmpPath(exe):
		add(CodeExecTmp, fn, path.Dir(fn), fmt.Sprintf("%q runs from a writable or tmpfs location", fn))
	}
	if x.ExeWritable || in.written {
		why := "was written in the container"
		if !in.written {
			why = "lies in the container's writable layer, not image content"
		}
		add(CodeExecDrift, fn, fn, fmt.Sprintf("%q %s, then executed (drift from the image)", fn, why))
	}
	switch {
	case cls&basePkgManager != 0:
		add(CodeExecPkgManager, fn, fn, fmt.Sprintf("package manager %q ran (argv %q)", base, x.Argv))
	case cls&baseTool != 0 && !argvHas(args, "-z"):
		add(CodeExecTool, fn, fn, fmt.Sprintf("remote copy tool %q ran%s", base, by()))
	}
	if cls&baseScanner != 0 || (base == "nc" || base == "ncat" || base == "netcat") && argvHas(args, "-z") {
		add(CodeExecScanner, fn, fn, fmt.Sprintf("network scanner %q ran (argv %q)", base, x.Argv))
	}
	if cls&baseMiner != 0 || needles&needleMiner != 0 {
		add(CodeExecMiner, fn, fn, fmt.Sprintf("cryptocurrency miner %q (argv %q)", base, x.Argv))
	}
	if cls&baseUserTool != 0 {
		add(CodeAccountChange, fn, fn, fmt.Sprintf("user-management tool %q ran (argv %q)", base, x.Argv))
	}
	if cls&baseWiper != 0 || strings.HasPrefix(base, "mkfs") || base == "rm" && removesTree(args) {
		add(CodeBulkDelete, fn, fn, fmt.Sprintf("%q destroys data (argv %q)", base, x.Argv))
	}
	if base == "debugfs" {
		add(CodeMount, fn, fn, fmt.Sprintf("debugfs opens a filesystem's device directly (argv %q)", x.Argv))
	}
	if decodes(base, args) {
		add(CodeExecDecode, fn, fn, fmt.Sprintf("%q decodes a payload (argv %q)", base, x.Argv))
	}
	if base == "crontab" && !argvHas(args, "-l") {
		add(CodeCronPersist, fn, fn, fmt.Sprintf("crontab ran (argv %q)", x.Argv))
	}
	if base == "chattr" || base == "setcap" {
		add(CodeSetuidBit, fn, fn, fmt.Sprintf("%q changes file privileges (argv %q)", base, x.Argv))
	}
	if cls&baseSearchTool != 0 {
		if n := credNeedle(args); n != "" {
			add(CodeCredSearch, fn, fn+" "+n, fmt.Sprintf("%q searches for %q (argv %q)", base, n, x.Argv))
		}
	}
	out = append(out, classifyExecAttack(x, fn, base, cls, needles)...)
	if p := x.Proc; p != nil && p.Euid == 0 && p.Uid != 0 {
		add(CodePrivilegeGain, fn, fn, fmt.Sprintf("%q runs with euid 0 for uid %d (a setuid-root binary)", fn, p.Uid))
	}
	return out
}

// removesTree reports whether rm's arguments remove recursively the root,
// everything below a directory (dir/*) or a top-level directory (/etc,
// /var, /home, /data...), outside the temporary directories.
func removesTree(args []string) bool {
	recursive := false
	for _, a := range args {
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.ContainsAny(a, "rR") || a == "--recursive" {
			recursive = true
		}
	}
	if !recursive {
		return false
	}
	for _, a := range args {
		if !strings.HasPrefix(a, "/") || isTmpPath(a+"/") || under(a, "/tmp") {
			continue
		}
		c := path.Clean(a)
		if c == "/" || strings.HasSuffix(a, "/*") || strings.Count(c, "/") == 1 {
			return true
		}
	}
	return false
}

// decodes reports whether the command base64-, hex- or uu-decodes its
// input: base64 -d, openssl base64/enc -d, xxd -r, uudecode.
func decodes(base string, args []string) bool {
	switch base {
	case "base64", "base32", "basenc":
		return argvHas(args, "-d", "--decode", "-D", "-di", "-id")
	case "openssl":
		return len(args) > 0 && (args[0] == "base64" || args[0] == "enc") && argvHas(args, "-d")
	case "xxd":
		return argvHas(args, "-r", "-r -p", "-rp")
	case "uudecode":
		return true
	}
	return false
}

// credNeedle is the secret a search's arguments name, or "".
// Absolute paths are where a search looks, not what it looks for
// (`grep root /etc/passwd` is not a search for passwords).
func credNeedle(args []string) string {
	for _, a := range args {
		if strings.HasPrefix(a, "/") && !strings.ContainsAny(a, "*?") {
			continue
		}
		la := strings.ToLower(a)
		for _, n := range credNeedles {
			if strings.Contains(la, n) {
				return n
			}
		}
	}
	return ""
}

func isFilelessPath(p string) bool {
	return strings.HasPrefix(p, "/memfd:") || strings.HasPrefix(p, "memfd:") || strings.HasPrefix(p, "/dev/fd/") ||
		strings.HasPrefix(p, "/proc/self/fd/") || strings.HasSuffix(p, " (deleted)") ||
		strings.HasPrefix(p, "/proc/") && strings.Contains(p, "/fd/")
}

// under reports whether p is dir or below it.
func under(p, dir string) bool {
	return strings.HasPrefix(p, dir) && (len(p) == len(dir) || p[len(dir)] == '/')
}

func underAny(p string, dirs ...string) bool {
	for _, d := range dirs {
		if under(p, d) {
			return true
		}
	}
	return false
}

const (
	oTrunc  = 0o1000
	sIFMT   = 0o170000
	sIFCHR  = 0o020000
	sIFBLK  = 0o060000
	modeSID = 0o6000
)

// fileTarget is the path an operation changes: the new name of a rename,
// link or symlink, else the path.
func fileTarget(f *containv1.File) string {
	switch f.Op {
	case containv1.File_OP_RENAME, containv1.File_OP_LINK, containv1.File_OP_SYMLINK:
		if f.NewPath != "" {
			return f.NewPath
		}
	}
	return f.Path
}

// creates reports whether op makes a new name.
func creates(op containv1.File_Op) bool {
	switch op {
	case containv1.File_OP_CREATE, containv1.File_OP_RENAME, containv1.File_OP_LINK, containv1.File_OP_SYMLINK,
		containv1.File_OP_MKNOD, containv1.File_OP_MKDIR:
		return true
	}
	return false
}

// destroys reports whether f removes or empties existing data: an
// unlink, a truncate, an open of an existing file with O_TRUNC (not of a
// device or a kernel file). An open
// with O_CREAT|O_TRUNC is not counted: it is how most programs create a
// new file (Go's os.Create, a shell's >), existing or not.
func destroys(f *containv1.File) bool {
	// Device nodes and kernel files hold no data: a program opening
	// /dev/null with O_TRUNC a hundred times destroys nothing.
	if strings.HasPrefix(f.Path, "/dev/") || strings.HasPrefix(f.Path, "/proc/") || strings.HasPrefix(f.Path, "/sys/") {
		return false
	}
	switch f.Op {
	case containv1.File_OP_UNLINK, containv1.File_OP_TRUNCATE:
		return true
	case containv1.File_OP_OPEN_WRITE:
		return f.Flags&oTrunc != 0
	}
	return false
}

// empties is destroys or an open with O_CREAT|O_TRUNC: for a log or a
// history file, a `> file` empties it.
func empties(f *containv1.File) bool {
	return destroys(f) || f.Op == containv1.File_OP_CREATE && f.Flags&oTrunc != 0
}

var shellConfigs = map[string]bool{
	".bashrc": true, ".bash_profile": true, ".bash_login": true, ".bash_logout": true, ".profile": true,
	".zshrc": true, ".zprofile": true, ".zshenv": true, ".zlogin": true, ".zlogout": true, ".kshrc": true,
	".cshrc": true, ".tcshrc": true, ".mkshrc": true, ".inputrc": true,
}

var histories = map[string]bool{
	".bash_history": true, ".zsh_history": true, ".ash_history": true, ".sh_history": true, ".history": true,
	".mysql_history": true, ".psql_history": true, ".python_history": true, ".lesshst": true, ".viminfo": true,
	".node_repl_history": true, ".rediscli_history": true,
}

var loginRecords = map[string]bool{"wtmp": true, "btmp": true, "lastlog": true, "utmp": true, "faillog": true}

// devNodes are the device files every container has: an open with
// O_CREAT of one (a shell's `> /dev/null`) creates nothing. The
// termination log is Kubernetes' (terminationMessagePath).
var devNodes = map[string]bool{
	"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true, "/dev/urandom": true,
	"/dev/tty": true, "/dev/console": true, "/dev/ptmx": true, "/dev/stdin": true, "/dev/stdout": true,
	"/dev/stderr": true, "/dev/termination-log": true,
}

var hiddenRoots = []string{"/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/var", "/root", "/boot", "/opt", "/srv", "/dev"}

// isCredentialPath reports whether reading p reads credentials.
func isCredentialPath(p string) bool {
	if isSensitiveRead(p) {
		return true
	}
	base := path.Base(p)
	switch {
	case strings.Contains(p, "/.ssh/") && (strings.HasPrefix(base, "id_") || base == "config" || base == "authorized_keys" || base == "known_hosts"):
		return true
	case strings.HasSuffix(p, "/.aws/credentials"), strings.HasSuffix(p, "/.aws/config"),
		strings.Contains(p, "/.config/gcloud/"), strings.HasSuffix(p, "/.kube/config"),
		strings.HasSuffix(p, "/.docker/config.json"), strings.Contains(p, "/.azure/"),
		strings.HasSuffix(p, "/.netrc"), strings.HasSuffix(p, "/.pgpass"), strings.HasSuffix(p, "/.git-credentials"),
		strings.HasSuffix(p, "/.vault-token"):
		return true
	case strings.HasPrefix(p, "/proc/") && strings.HasSuffix(p, "/environ"):
		return true
	case strings.HasSuffix(base, ".pem") || strings.HasSuffix(base, ".key") || strings.HasSuffix(base, ".p12") || strings.HasSuffix(base, ".pfx"):
		return !underAny(p, "/etc/ssl/certs", "/usr/share/ca-certificates", "/usr/local/share/ca-certificates", "/etc/pki/ca-trust")
	case strings.HasPrefix(base, "id_") && (strings.HasSuffix(base, "rsa") || strings.HasSuffix(base, "dsa") || strings.HasSuffix(base, "ecdsa") || strings.HasSuffix(base, "ed25519")):
		return true
	}
	return false
}

var opNames = func() map[containv1.File_Op]string {
	m := map[containv1.File_Op]string{}
	for n, v := range containv1.File_Op_value {
		m[containv1.File_Op(v)] = strings.ToLower(strings.TrimPrefix(n, "OP_"))
	}
	return m
}()

// classifyFile names the behaviours a file operation shows.
func classifyFile(f *containv1.File) []hit {
	if f.Op == containv1.File_OP_OPEN_READ {
		p := f.Path
		if f.ResolvedPath != "" {
			p = f.ResolvedPath
		}
		if f.Sensitive || isCredentialPath(p) || isCredentialPath(f.Path) {
			via := ""
			if p != f.Path && f.Path != "" {
				via = fmt.Sprintf(" (opened as %s)", f.Path)
			}
			return []hit{{code: CodeReadSensitive, subject: p, key: p, msg: "read of credentials " + p + via}}
		}
		return nil
	}
	t := fileTarget(f)
	if t == "" {
		return nil
	}
	base := path.Base(t)
	var out []hit
	add := func(code, key, msg string) {
		out = append(out, hit{code: code, subject: t, key: key, msg: msg})
	}
	op := opNames[f.Op]
	if f.Op == containv1.File_OP_CONNECT {
		if isRuntimeSocket(t) {
			add(CodeRuntimeSocket, t, fmt.Sprintf("connect to container runtime socket %s (control of the host's containers)", t))
		}
		return out
	}
	// A name made for a credential file: a symlink to it or a hardlink of
	// it (the name then reads it without naming it).
	if f.Op == containv1.File_OP_LINK || f.Op == containv1.File_OP_SYMLINK {
		if src := linkSource(f); f.Sensitive || isCredentialPath(src) {
			add(CodeSensitiveLink, src, fmt.Sprintf("%s %s made to credential file %s", op, t, src))
		}
	}
	// Escapes through kernel knobs the host acts on.
	if base == "release_agent" || base == "notify_on_release" || t == "/proc/sys/kernel/core_pattern" ||
		t == "/proc/sys/kernel/modprobe" || t == "/proc/sysrq-trigger" || t == "/sys/kernel/uevent_helper" ||
		under(t, "/sys/fs/cgroup") && f.Op != containv1.File_OP_OPEN_READ {
		add(CodeCgroupEscape, t, fmt.Sprintf("%s of %s, a file the host kernel acts on (container escape)", op, t))
		return out
	}
	if strings.HasPrefix(t, "/proc/") || strings.HasPrefix(t, "/sys/") {
		switch {
		case under(t, "/proc/sys") || strings.HasPrefix(t, "/sys/"):
			// Kernel parameters: the host's, whatever the namespace
			// (most of /proc/sys and /sys is not namespaced).
			add(CodeKernelTunable, t, fmt.Sprintf("%s of kernel parameter %s", op, t))
		case base == "mem" && f.Op != containv1.File_OP_CREATE:
			add(CodeProcMemory, t, fmt.Sprintf("%s of %s: another process's memory written", op, t))
		}
		return append(out, procWrite(f, t)...)
	}
	// Device nodes and files below /dev (not its tmpfs and pty mounts).
	switch {
	case f.Op == containv1.File_OP_MKNOD && (under(t, "/dev") || f.Mode&sIFMT == sIFCHR || f.Mode&sIFMT == sIFBLK):
		add(CodeDevCreate, path.Dir(t), fmt.Sprintf("device node %s created (mode %#o)", t, f.Mode))
	case under(t, "/dev") && creates(f.Op) && !underAny(t, "/dev/shm", "/dev/pts", "/dev/mqueue", "/dev/hugepages", "/dev/fd") &&
		!(f.Op == containv1.File_OP_CREATE && devNodes[t]):
		add(CodeDevCreate, path.Dir(t), fmt.Sprintf("%s created below /dev by %s", t, op))
	}
	if under(t, "/dev") {
		return out
	}
	specific := false
	switch {
	case base == "authorized_keys" || base == "authorized_keys2" || strings.Contains(t, "/.ssh/") || under(t, "/etc/ssh"):
		if f.Op != containv1.File_OP_CHOWN {
			add(CodeSSHPersist, t, fmt.Sprintf("%s of %s (SSH access)", op, t))
			specific = true
		}
	case shellConfigs[base] || t == "/etc/profile" || under(t, "/etc/profile.d") || t == "/etc/bash.bashrc" ||
		t == "/etc/bashrc" || under(t, "/etc/zsh") || t == "/etc/environment" || t == "/etc/ld.so.preload":
		add(CodeShellConfig, t, fmt.Sprintf("%s of shell configuration %s", op, t))
		specific = true
	case histories[base]:
		specific = true
		// Appending is a shell's normal work; emptying, removing or
		// replacing (a symlink to /dev/null) the history is not.
		src := f.Path
		if empties(f) || f.Op == containv1.File_OP_SYMLINK || f.Op == containv1.File_OP_RENAME && histories[path.Base(src)] {
			add(CodeLogClear, t, fmt.Sprintf("shell history %s cleared (%s)", t, op))
		}
	}
	if f.Op == containv1.File_OP_RENAME && histories[path.Base(f.Path)] && !histories[base] {
		add(CodeLogClear, f.Path, fmt.Sprintf("shell history %s moved away to %s", f.Path, t))
		specific = true
	}
	if (under(t, "/var/log") || loginRecords[base]) && (empties(f) || f.Op == containv1.File_OP_RENAME && loginRecords[path.Base(f.Path)]) {
		add(CodeLogClear, pathPrefix(t, 3), fmt.Sprintf("log %s cleared (%s)", t, op))
		specific = true
	}
	if isCronPath(t, base) {
		add(CodeCronPersist, t, fmt.Sprintf("%s of %s (scheduled or boot persistence)", op, t))
		specific = true
	}
	switch t {
	case "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudoers", "/etc/master.passwd", "/etc/subuid", "/etc/subgid":
		add(CodeAccountChange, t, fmt.Sprintf("%s of %s (accounts)", op, t))
		specific = true
	default:
		if under(t, "/etc/sudoers.d") {
			add(CodeAccountChange, t, fmt.Sprintf("%s of %s (sudo rights)", op, t))
			specific = true
		}
	}
	if f.Mode&modeSID != 0 && (f.Op == containv1.File_OP_CHMOD || f.Op == containv1.File_OP_CREATE || f.Op == containv1.File_OP_MKNOD) {
		bit := "setuid"
		if f.Mode&0o4000 == 0 {
			bit = "setgid"
		}
		add(CodeSetuidBit, t, fmt.Sprintf("%s bit set on %s (%s mode %#o)", bit, t, op, f.Mode))
	}
	if !specific && creates(f.Op) && underAny(t, hiddenRoots...) {
		for _, comp := range strings.Split(strings.TrimPrefix(t, "/"), "/") {
			if len(comp) > 1 && comp[0] == '.' && comp != ".." {
				add(CodeHiddenFile, path.Dir(t), fmt.Sprintf("hidden %s %s created in a system path", strings.TrimSuffix(op, "_write"), t))
				break
			}
		}
	}
	return out
}

// isCronPath reports whether writing t (base its base name) schedules
// something or persists across boots: cron, anacron, systemd units and
// timers, init scripts. The directory the path starts in picks the
// comparisons (TestCronPath).
func isCronPath(t, base string) bool {
	if strings.HasSuffix(base, ".timer") {
		return true
	}
	switch {
	case strings.HasPrefix(t, "/etc/"):
		return under(t, "/etc/cron.d") || under(t, "/etc/cron.daily") || under(t, "/etc/cron.hourly") ||
			under(t, "/etc/cron.weekly") || under(t, "/etc/cron.monthly") || t == "/etc/crontab" || t == "/etc/anacrontab" ||
			under(t, "/etc/systemd") || under(t, "/etc/init.d") || t == "/etc/rc.local" || under(t, "/etc/periodic")
	case strings.HasPrefix(t, "/var/spool/"):
		return under(t, "/var/spool/cron") || under(t, "/var/spool/anacron")
	}
	return under(t, "/lib/systemd/system") || under(t, "/usr/lib/systemd/system")
}

// runtimeSockets are the API sockets of container engines and runtimes
// (by name: wherever a volume mounts them).
var runtimeSockets = map[string]bool{
	"docker.sock": true, "containerd.sock": true, "crio.sock": true, "podman.sock": true, "dockershim.sock": true,
	"cri-dockerd.sock": true, "kubelet.sock": true, "frakti.sock": true, "rktlet.sock": true, "buildkitd.sock": true,
	"containerd-shim.sock": true, "docker.socket": true,
}

func isRuntimeSocket(p string) bool {
	return runtimeSockets[path.Base(p)] || strings.Contains(p, "/containerd/") && strings.HasSuffix(p, ".sock")
}

// linkSource is the file a link or symlink names, cleaned; a relative
// symlink target is read from the link's directory.
func linkSource(f *containv1.File) string {
	src := f.Path
	if f.Op == containv1.File_OP_SYMLINK && !strings.HasPrefix(src, "/") && f.NewPath != "" {
		src = path.Join(path.Dir(f.NewPath), src)
	}
	return path.Clean(src)
}

// bulkThreshold destructive operations by one process tree within
// bulkWindow raise file.bulk_delete.
const (
	bulkThreshold = 50
	bulkWindowNs  = int64(5e9)
)

// Syscall numbers and flags read from arguments (x86-64).
const (
	ptraceTraceme = 0
	ptracePoke    = 4 // POKETEXT 4, POKEDATA 5, POKEUSER 6
	ptraceAttach  = 16
	ptraceSeize   = 0x4206
	afPacket      = 17
	sockRaw       = 3
	noID          = 0xffffffff
)

// syscallBehaviour maps syscalls that are a behaviour by their name alone.
var syscallBehaviour = map[string]string{
	"process_vm_readv": CodeProcMemory, "process_vm_writev": CodeProcMemory,
	"unshare": CodeNamespace, "setns": CodeNamespace,
	"mount": CodeMount, "umount": CodeMount, "umount2": CodeMount, "pivot_root": CodeMount, "fsopen": CodeMount,
	"fsmount": CodeMount, "move_mount": CodeMount, "open_tree": CodeMount, "mount_setattr": CodeMount,
	"chroot":      CodeChroot,
	"init_module": CodeKernelModule, "finit_module": CodeKernelModule, "delete_module": CodeKernelModule,
	"kexec_load": CodeKernelModule, "kexec_file_load": CodeKernelModule,
	"bpf":         CodeBPF,
	"userfaultfd": CodeUserfaultfd,
	"capset":      CodePrivilegeGain,
}

// classifySyscall names the behaviours a syscall shows. priorEuid is the
// caller's effective uid before it (from its earlier events), known says
// whether there was one.
func classifySyscall(s *containv1.Syscall, priorEuid uint32, known bool) []hit {
	name := syscallName(s)
	withArgs := len(s.Args) >= 6
	res := ""
	if s.Ret < 0 {
		res = fmt.Sprintf(" (attempt, failed with %d)", s.Ret)
	}
	one := func(code, subject, msg string) []hit {
		return []hit{{code: code, subject: subject, key: subject, msg: msg + res}}
	}
	switch name {
	case "ptrace":
		if !withArgs {
			return one(CodePtrace, "ptrace", "ptrace used")
		}
		switch req := s.Args[0]; {
		case req == ptraceAttach || req == ptraceSeize:
			return one(CodePtrace, "attach", fmt.Sprintf("ptrace attach to pid %d", s.Args[1]))
		case req == ptraceTraceme:
			return one(CodePtrace, "traceme", "ptrace(PTRACE_TRACEME): anti-debugging or a tracer's child")
		case req >= ptracePoke && req <= ptracePoke+2:
			return one(CodePtrace, "poke", fmt.Sprintf("ptrace writes the memory of pid %d", s.Args[1]))
		}
		return nil
	case "socket":
		if !withArgs {
			return nil
		}
		if s.Args[0] == afPacket || s.Args[1]&0xf == sockRaw {
			kind := "raw"
			if s.Args[0] == afPacket {
				kind = "packet (AF_PACKET)"
			}
			return one(CodeRawSocket, kind, fmt.Sprintf("%s socket opened (family %d type %d)", kind, s.Args[0], s.Args[1]&0xf))
		}
		return nil
	case "dup2", "dup3":
		// Reported by the collector only when a socket lands on stdin,
		// stdout or stderr (its result, the new descriptor).
		if !withArgs || s.Ret < 0 || s.Ret > 2 {
			return nil
		}
		return one(CodeReverseShell, "dup", fmt.Sprintf("%s: a network socket duplicated onto %s (reverse shell)", name, [3]string{"stdin", "stdout", "stderr"}[s.Ret]))
	case "setuid", "setreuid", "setresuid", "setfsuid":
		if !withArgs {
			return nil
		}
		target := false
		n := map[string]int{"setuid": 1, "setfsuid": 1, "setreuid": 2, "setresuid": 3}[name]
		for i := 0; i < n; i++ {
			if uint32(s.Args[i]) == 0 {
				target = true
			}
		}
		var p *containv1.Process = s.Proc
		from := known && priorEuid != 0 || !known && p != nil && (p.Uid != 0 || p.Euid != 0)
		if target && from {
			was := "a non-root user"
			if known {
				was = "uid " + strconv.FormatUint(uint64(priorEuid), 10)
			}
			return one(CodePrivilegeGain, name, fmt.Sprintf("%s to uid 0 from %s", name, was))
		}
		return nil
	}
	if code, ok := syscallBehaviour[name]; ok {
		msg := name
		switch code {
		case CodeNamespace:
			msg = name + ": the process changes namespaces"
		case CodeMount:
			msg = name + ": the process changes mounts"
		case CodeChroot:
			msg = "chroot: the process changes its root directory"
		case CodeKernelModule:
			msg = name + ": the process loads or unloads kernel code"
		case CodeBPF:
			msg = "bpf(): the process loads or reads eBPF programs or maps"
		case CodeUserfaultfd:
			msg = "userfaultfd(): often used to win kernel races"
		case CodeProcMemory:
			msg = name + ": the process accesses another process's memory"
		case CodePrivilegeGain:
			msg = "capset: the process changes its capabilities"
		}
		return one(code, name, msg)
	}
	return nil
}

// classifyNetwork names the behaviours a network event shows.
func classifyNetwork(n *containv1.Network) []hit {
	if api, ok := apiPorts[n.RemotePort]; ok && n.Op == containv1.Network_OP_CONNECT {
		port := strconv.FormatUint(uint64(n.RemotePort), 10)
		return []hit{{code: CodeRuntimeSocket, subject: port, key: port,
			msg: fmt.Sprintf("connection to port %d, the %s's (control of the host's containers)", n.RemotePort, api)}}
	}
	if n.Op == containv1.Network_OP_CONNECT && minerPorts[n.RemotePort] {
		return []hit{{code: CodeMinerPort, subject: strconv.FormatUint(uint64(n.RemotePort), 10), key: strconv.FormatUint(uint64(n.RemotePort), 10),
			msg: fmt.Sprintf("connection to port %d, a well-known mining pool port", n.RemotePort)}}
	}
	if n.Op == containv1.Network_OP_CONNECT {
		return metadataHit(n)
	}
	return nil
}
