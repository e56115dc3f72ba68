package analyzer

import (
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"

	"github.com/containsec/contain/schemas/containv1"
)

// observeProcess keeps the container's process table: a child forked by a
// known process inherits its executable; an exited process is forgotten.
func (e *Engine) observeProcess(c *container, p *containv1.ProcessLifecycle) {
	if p.Proc == nil {
		e.stats.Invalid++
		return
	}
	switch p.Op {
	case containv1.ProcessLifecycle_OP_FORK:
		if p.ChildTgid == 0 {
			break
		}
		if exe, ok := c.exe(p.Proc.Tgid); ok {
			c.setExe(p.ChildTgid, exe)
		} else {
			// A new process: what the table says of its tgid is of an
			// earlier process whose exit was not seen (host pids wrap
			// within minutes on a busy host: pid_max 32768 here).
			c.forgetExe(p.ChildTgid)
		}
		// The child runs with its parent's effective uid (not a reused
		// pid's).
		c.setEuid(p.ChildTgid, p.Proc.Euid)
	case containv1.ProcessLifecycle_OP_EXIT:
		c.forgetExe(p.Proc.Tgid)
	}
}

// observeApplet names a program a multi-call shell ran without exec: a
// busybox shell forks and runs many applets (awk, cat, ln, mkdir...) in
// the child, which only renames itself (its comm) to the applet. The
// first event of a process the table knows as a shell whose comm is
// another name is observed as an exec of that applet (its argv unknown),
// so that it is learned, scored and named like the exec it replaces.
func (e *Engine) observeApplet(c *container, b *Baseline, p *containv1.Process, learn bool) bool {
	if p == nil || p.Comm == "" || p.Comm == "exe" {
		return false
	}
	exe, ok := c.exe(p.Tgid)
	if !ok || !isShellPath(exe) || p.Comm == path.Base(exe) || strings.ContainsAny(p.Comm, "/:[ ") {
		return false
	}
	fn := path.Join(path.Dir(exe), p.Comm)
	return e.observeExec(c, b, &containv1.Exec{Proc: p, Filename: fn, Argv: []string{p.Comm}, Exe: exe}, learn)
}

// maxProcs bounds a container's process table.
const maxProcs = 4096

func (e *Engine) dev(code, subject, msg string, absorb func(), mitre ...string) {
	e.devs = append(e.devs, deviation{code: code, subject: subject, msg: msg, absorb: absorb, mitre: mitre})
}

// execName is the executable an exec is learned and scored as. A program
// that re-executes itself through /proc/self/exe (busybox does so for each
// applet a shell runs) is named by its real binary's directory and argv[0]:
// busybox's `sleep` is /bin/sleep whether the shell ran /bin/sleep or
// re-executed itself, and `wget` stays distinct from `sleep`.
func execName(x *containv1.Exec) string {
	if x.Filename != "/proc/self/exe" || x.Exe == "" || strings.HasPrefix(x.Exe, "/proc/") {
		return x.Filename
	}
	if len(x.Argv) > 0 {
		if a0 := path.Base(x.Argv[0]); a0 != "" && a0 != "." && a0 != "/" && a0 != path.Base(x.Exe) {
			return path.Join(path.Dir(x.Exe), a0)
		}
	}
	return x.Exe
}

func (e *Engine) observeExec(c *container, b *Baseline, x *containv1.Exec, learn bool) bool {
	if x.Filename == "" {
		e.stats.Invalid++
		return false
	}
	fn := execName(x)
	parent := ""
	var euid uint32
	hasProc := x.Proc != nil
	if hasProc {
		parent, _ = c.exe(x.Proc.Ppid)
		euid = x.Proc.Euid
		if old, ok := c.exe(x.Proc.Tgid); !ok || old != fn {
			// Kept (x may point into a payload): one owned copy for
			// every process that runs it.
			c.setExe(x.Proc.Tgid, e.own(fn))
		} else if c.exeCount() >= maxProcs {
			c.setExe(x.Proc.Tgid, old) // a full table is cleared at each exec
		}
	}
	edge := ""
	if parent != "" {
		edge = parent + "\x00" + fn
	}
	nonRoot := len(b.UIDs) > 0
	if _, ok := b.UIDs[0]; ok {
		nonRoot = false
	}
	hits := classifyExec(x, execInfo{name: fn, parent: parent, written: c.written[fn] || x.Exe != "" && c.written[x.Exe],
		nonRootImage: nonRoot && !learn})
	if c.fifos != nil {
		hits = append(hits, fifoRelayHit(c, x, path.Base(fn), c.lastNs)...)
	}
	hits = append(hits, loaderHits(c, x, path.Base(fn))...)
	// The argv shape's key, built in a scratch buffer: looking it up
	// allocates nothing, only learning it or a deviation does.
	e.keyBuf = appendArgvShape(append(append(e.keyBuf[:0], fn...), 0), x.Argv)
	if learn {
		novel := e.learnKey(b.Exec, fn)
		novel = e.learnKey(b.Argv, string(e.keyBuf)) || novel
		if edge != "" {
			novel = e.learnKey(b.Edges, edge) || novel
		}
		if hasProc {
			novel = e.learnU32(b.UIDs, euid) || novel
		}
		novel = e.behave(b, fn, hits, true) || novel
		if s := seedOf(c, b); hasProc && s != nil && s.users != nil && !s.users[euid] {
			e.dev(CodeExecUndeclaredUID, strconv.FormatUint(uint64(euid), 10),
				fmt.Sprintf("%q runs as uid %d, which image %s does not declare", fn, euid, b.Image), nil)
		}
		return novel
	}
	if _, ok := b.Exec[fn]; !ok {
		by := ""
		if parent != "" {
			by = fmt.Sprintf(", started by %q", parent)
		}
		e.dev(CodeExecUnseen, fn, fmt.Sprintf("%q was never executed by image %s during learning (learned %d executables over %s)%s",
			fn, b.Image, len(b.Exec), learnedOver(b), by), func() { e.learnKey(b.Exec, fn) })
	} else {
		if _, ok := b.Argv[string(e.keyBuf)]; !ok {
			shape := string(e.keyBuf)
			e.dev(CodeExecArgv, shape, fmt.Sprintf("%q ran with an unseen command line shape %q", fn, argvShape(x.Argv)),
				func() { e.learnKey(b.Argv, shape) })
		}
		if edge != "" {
			if _, ok := b.Edges[edge]; !ok {
				e.dev(CodeExecEdge, edge, fmt.Sprintf("%q was never started by %q during learning", fn, parent),
					func() { e.learnKey(b.Edges, edge) })
			}
		}
	}
	e.behave(b, fn, hits, false)
	if hasProc {
		if _, ok := b.UIDs[euid]; !ok {
			code, msg := CodeUIDUnseen, fmt.Sprintf("%q runs as uid %d, never seen for image %s", fn, euid, b.Image)
			if euid == 0 {
				code, msg = CodeUIDRoot, fmt.Sprintf("%q runs as root, image %s never ran as root during learning", fn, b.Image)
			}
			e.dev(code, strconv.FormatUint(uint64(euid), 10), msg, func() { e.learnU32(b.UIDs, euid) })
		}
		if s := seedOf(c, b); s != nil && s.users != nil && !s.users[euid] {
			e.dev(CodeExecUndeclaredUID, strconv.FormatUint(uint64(euid), 10),
				fmt.Sprintf("%q runs as uid %d, which image %s does not declare", fn, euid, b.Image), nil)
		}
	}
	return false
}

func syscallName(s *containv1.Syscall) string {
	if s.Name != "" {
		return s.Name
	}
	return "nr:" + strconv.FormatUint(uint64(s.Nr), 10)
}

// kernelSyscalls are entered by the kernel, not asked for by a program:
// restart_syscall resumes a sleep or wait that a stop interrupted
// (SIGSTOP/SIGCONT, a ptrace stop, the cgroup freezer). They say nothing
// about the image, and every release of a quarantined container makes its
// sleeping processes enter restart_syscall: scoring it would re-raise the
// container the responder just released. Learned when seen, never scored.
var kernelSyscalls = map[string]bool{"restart_syscall": true}

// waitSyscalls block until something happens. One that returns an
// ERESTART* code was interrupted (a signal, a stop, the cgroup2 freezer)
// and had been waiting since before: a first use seen that way is a wait
// the container was already in, often since before learning began (the
// collector sees a syscall when it returns), not a new behaviour; every
// release of a sleeping container produces them. Learned, not scored.
var waitSyscalls = map[string]bool{
	"nanosleep": true, "clock_nanosleep": true, "pause": true, "rt_sigsuspend": true, "rt_sigtimedwait": true,
	"wait4": true, "waitid": true, "futex": true, "poll": true, "ppoll": true, "select": true, "pselect6": true,
	"epoll_wait": true, "epoll_pwait": true, "epoll_pwait2": true, "accept": true, "accept4": true,
	"read": true, "recvfrom": true, "recvmsg": true, "msgrcv": true, "semtimedop": true, "io_getevents": true,
}

// interrupted reports whether ret is one of the kernel's ERESTART* codes
// (ERESTARTSYS 512, ERESTARTNOINTR 513, ERESTARTNOHAND 514,
// ERESTART_RESTARTBLOCK 516), which user space never sees.
func interrupted(ret int64) bool { return ret <= -512 && ret >= -516 && ret != -515 }

func (e *Engine) observeSyscall(c *container, b *Baseline, s *containv1.Syscall, learn bool) bool {
	if s.Mode == containv1.Syscall_MODE_SEQUENCE {
		return e.observeSequence(b, c, s.GetProc(), s.Sequence, learn)
	}
	name := syscallName(s)
	if !learn && (kernelSyscalls[name] || waitSyscalls[name] && interrupted(s.Ret)) {
		e.stats.Kernel++
		if !kernelSyscalls[name] && b.Phase == PhaseConverged && e.learnKey(b.Syscalls, name) {
			b.Version++ // a locked baseline learns nothing
			b.dirty = true
		}
		return false
	}
	p := s.Proc
	var prior uint32
	known := false
	if p != nil {
		if prior, known = c.euidOf(p.Pid); !known {
			prior, known = c.euidOf(p.Tgid)
		}
	}
	hits := classifySyscall(s, prior, known)
	if learn {
		novel := e.learnKey(b.Syscalls, name)
		return e.behaveBy(b, c, p, hits, true) || novel
	}
	e.behaveBy(b, c, p, hits, false)
	if _, ok := b.Syscalls[name]; ok || len(hits) > 0 {
		// Learned, or named by its behaviour.
		return false
	}
	if mitre, ok := sensitiveSyscalls[name]; ok {
		e.dev(CodeSyscallSensitive, name, fmt.Sprintf("sensitive syscall %s, never used by image %s during learning", name, b.Image),
			nil, mitre...)
		return false
	}
	code := CodeSyscallUnseen
	if routineSyscalls[name] {
		code = CodeSyscallRoutine
	}
	e.dev(code, name, fmt.Sprintf("syscall %s was never used by image %s during learning (learned %d syscalls)",
		name, b.Image, len(b.Syscalls)), func() { e.learnKey(b.Syscalls, name) })
	return false
}

func peerAddr(raw []byte) (netip.Addr, bool) {
	switch len(raw) {
	case 16:
		return netip.AddrFrom16([16]byte(raw)).Unmap(), true
	case 4:
		return netip.AddrFrom4([4]byte(raw)), true
	}
	return netip.Addr{}, false
}

func (e *Engine) observeNetwork(c *container, b *Baseline, s *seed, n *containv1.Network, learn bool, now int64) bool {
	switch n.Op {
	case containv1.Network_OP_CONNECT:
		a, ok := peerAddr(n.RemoteAddr)
		if !ok {
			e.stats.Invalid++
			return false
		}
		// The peer's key, looked up from a scratch buffer: a string is
		// made only when it is learned, named or counted.
		e.keyBuf = netip.AddrPortFrom(a, uint16(n.RemotePort)).AppendTo(e.keyBuf[:0])
		_, seen := b.Peers[string(e.keyBuf)]
		peer := ""
		if learn || !seen || s != nil && s.peers != nil {
			peer = string(e.keyBuf)
		}
		if s != nil && s.peers != nil && !s.allowsPeer(a, n.RemotePort) && !a.IsLoopback() {
			e.dev(CodePeerUndeclared, peer, fmt.Sprintf("connection to %s, which image %s does not declare as a peer", peer, b.Image), nil)
		}
		hits := classifyNetwork(n)
		portKnown := !seen && learnedPort(b, n.RemotePort)
		// A scan counts the endpoints a tree reaches at ports the image
		// never used (all of them while learning, so that a service's own
		// fan-out is learned): new addresses of a learned service (an
		// upstream's rollout, DNS re-resolution) are not a scan.
		var scan []hit
		if learn || !seen && !portKnown {
			scan = scanHit(c, n, peer, now)
		}
		scanned := e.behaveBy(b, c, n.Proc, scan, learn)
		if learn {
			novel := e.learnKey(b.Peers, peer)
			return e.behaveBy(b, c, n.Proc, hits, true) || novel || scanned
		}
		if !seen && (s == nil || s.peers == nil || !s.allowsPeer(a, n.RemotePort)) {
			e.behaveBy(b, c, n.Proc, hits, false)
			if len(hits) == 0 && portKnown && !a.IsLoopback() {
				// A service's peer re-resolved: the port it learned at a
				// new address (DNS rotation, failover). Informational,
				// absorbed into the baseline.
				e.dev(CodePeerNewAddress, peer, fmt.Sprintf("connection to %s: a new address at port %d, which image %s connected to during learning",
					peer, n.RemotePort, b.Image), func() { e.learnKey(b.Peers, peer) })
				return false
			}
			e.dev(CodePeerUnseen, peer, fmt.Sprintf("connection to %s, a peer image %s never connected to during learning (learned %d peers)",
				peer, b.Image, len(b.Peers)), func() { e.learnKey(b.Peers, peer) })
		}
	case containv1.Network_OP_LISTEN, containv1.Network_OP_BIND:
		if n.Op == containv1.Network_OP_BIND && n.Protocol != containv1.Network_PROTOCOL_UDP {
			return false // a TCP server is learned at listen
		}
		if n.LocalPort == 0 {
			return false
		}
		proto := uint32(n.Protocol)
		key := proto<<16 | n.LocalPort
		label := portLabel(key)
		declared := s != nil && s.ports != nil
		if declared && !s.allowsPort(proto, n.LocalPort) {
			e.dev(CodeListenUndeclared, label, fmt.Sprintf("listening on %s, which image %s does not declare", label, b.Image), nil)
		}
		if learn {
			return e.learnU32(b.Ports, key)
		}
		if _, ok := b.Ports[key]; !ok && !(declared && s.allowsPort(proto, n.LocalPort)) {
			e.dev(CodeListenNew, label, fmt.Sprintf("listening on %s, a port image %s never listened on during learning", label, b.Image),
				func() { e.learnU32(b.Ports, key) })
		}
	}
	return false
}

// learnedPort reports whether the baseline learned a peer at port
// (scans the peers, bounded by MaxItems; only for an unseen peer).
func learnedPort(b *Baseline, port uint32) bool {
	suffix := ":" + strconv.FormatUint(uint64(port), 10)
	for p := range b.Peers {
		if strings.HasSuffix(p, suffix) {
			return true
		}
	}
	return false
}

func portLabel(key uint32) string {
	proto := "any"
	switch containv1.Network_Protocol(key >> 16) {
	case containv1.Network_PROTOCOL_TCP:
		proto = "tcp"
	case containv1.Network_PROTOCOL_UDP:
		proto = "udp"
	}
	return strconv.FormatUint(uint64(key&0xffff), 10) + "/" + proto
}

func isWrite(op containv1.File_Op) bool {
	switch op {
	case containv1.File_OP_OPEN_WRITE, containv1.File_OP_CREATE, containv1.File_OP_RENAME,
		containv1.File_OP_UNLINK, containv1.File_OP_CHMOD, containv1.File_OP_CHOWN,
		containv1.File_OP_MKNOD, containv1.File_OP_LINK, containv1.File_OP_SYMLINK,
		containv1.File_OP_TRUNCATE, containv1.File_OP_MKDIR:
		return true
	}
	return false
}

func (e *Engine) observeFile(c *container, b *Baseline, s *seed, f *containv1.File, learn bool, now int64) bool {
	// The name changed: a rename's or link's new name, not its source.
	p := f.Path
	if f.Op != containv1.File_OP_OPEN_READ {
		p = fileTarget(f)
	}
	if p == "" {
		e.stats.Invalid++
		return false
	}
	refused := e.readonlyRefused(b, f) // named, scored, never learned
	if !refused {
		trackWritten(c, b, f)
	}
	noteFifo(c, f, now)
	hits := rotationFilter(c, f, now, append(classifyFile(f), bulkHit(c, f, now)...), learn)
	if f.Op == containv1.File_OP_OPEN_READ {
		if learn {
			novel := false
			if isSensitiveRead(p) {
				novel = e.learnKey(b.Reads, p)
			}
			return e.behaveBy(b, c, f.Proc, hits, true) || novel
		}
		if _, ok := b.Reads[p]; !ok || len(hits) > 0 {
			e.behaveBy(b, c, f.Proc, hits, false)
		}
		return false
	}
	if f.Op == containv1.File_OP_CONNECT {
		return e.behaveBy(b, c, f.Proc, hits, learn)
	}
	if !isWrite(f.Op) {
		return false
	}
	// A write below a system directory that no behaviour names more
	// precisely is one of image content.
	declaredOK := s != nil && s.writable != nil && s.allowsWrite(p)
	if len(hits) == 0 && isSystemPath(p) && !strings.HasPrefix(p, "/var/") && !declaredOK {
		hits = []hit{{code: CodeWriteSystem, subject: p, key: path.Dir(p),
			msg: fmt.Sprintf("%s of %s, below a system directory (image content)", strings.ToLower(strings.TrimPrefix(f.Op.String(), "OP_")), p)}}
	}
	novel := e.behaveBy(b, c, f.Proc, hits, learn)
	if strings.HasPrefix(p, "/dev/") || strings.HasPrefix(p, "/proc/") || strings.HasPrefix(p, "/sys/") {
		return novel
	}
	declared := s != nil && s.writable != nil
	if declared && !s.allowsWrite(p) {
		e.dev(CodeWriteUndeclared, pathPrefix(p, 2), fmt.Sprintf("write to %s, outside the volumes image %s declares", p, b.Image), nil)
	}
	pre := pathPrefix(p, 2)
	if refused {
		return novel
	}
	if learn {
		return e.learnKey(b.Writes, pre) || novel
	}
	if _, ok := b.Writes[pre]; ok || (declared && s.allowsWrite(p)) || len(hits) > 0 {
		return false
	}
	e.dev(CodeWriteUnseen, pre, fmt.Sprintf("write to %s under %s, never written by image %s during learning", p, pre, b.Image),
		func() { e.learnKey(b.Writes, pre) })
	return false
}
