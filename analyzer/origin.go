// Origin: who a container event acted for (runtime, exec session,
// container) and the exec-session policy.

package analyzer

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containsec/contain/schemas/containv1"
)

// runtimeComms prefix the command names the container runtime gives its
// own processes inside a container before they exec the container's
// program: runc's init stages are "runc:[0:PARENT]", "runc:[1:CHILD]" and
// "runc:[2:INIT]".
var runtimeComms = []string{"runc:["}

// runtimeProcess reports whether ev was caused by the container runtime
// setting up the container or a `runc exec` (unshare, mount, pivot_root,
// keyctl, setuid, capset... on every start and exec) rather than by the
// image's own processes. It takes a runtime command name AND a process
// the container never executed or forked: a program of the image that
// renames itself (prctl PR_SET_NAME) is known by its exec or by its
// parent's fork, and is scored as usual.
func (e *Engine) runtimeProcess(c *container, ev *containv1.Event) bool {
	var p *containv1.Process
	switch body := ev.Body.(type) {
	case *containv1.Event_Syscall:
		p = body.Syscall.Proc
	case *containv1.Event_File:
		p = body.File.Proc
	case *containv1.Event_Network:
		p = body.Network.Proc
	default:
		return false
	}
	if p == nil {
		return false
	}
	for _, prefix := range runtimeComms {
		if strings.HasPrefix(p.Comm, prefix) {
			if _, known := c.exe(p.Tgid); !known {
				return true
			}
			// A thread of runc's init that the exec killed may be reported
			// after the exec; it ran before it.
			at, ok := c.execMono(p.Tgid)
			return ok && ev.MonoNs != 0 && ev.MonoNs < at
		}
	}
	return false
}

// procOf is the process that caused ev, or nil.
func procOf(ev *containv1.Event) *containv1.Process {
	switch body := ev.Body.(type) {
	case *containv1.Event_Exec:
		return body.Exec.GetProc()
	case *containv1.Event_Syscall:
		return body.Syscall.GetProc()
	case *containv1.Event_File:
		return body.File.GetProc()
	case *containv1.Event_Network:
		return body.Network.GetProc()
	case *containv1.Event_Process:
		return body.Process.GetProc()
	}
	return nil
}

// treeOf is the process tree an event belongs to for the incident
// combination and the bulk counter: its exec session, else 0 (the
// container's own program and its descendants).
func treeOf(p *containv1.Process) uint32 {
	if p.GetOrigin() == containv1.Origin_ORIGIN_EXEC_SESSION {
		if p.SessionTgid != 0 {
			return p.SessionTgid
		}
		return p.Tgid
	}
	return 0
}

// noteSession records an exec session's event; on the session's first
// event it adds the exec.session deviation naming its command, and
// reports true.
func (e *Engine) noteSession(c *container, b *Baseline, ev *containv1.Event, p *containv1.Process) bool {
	id := treeOf(p)
	if c.sessions[id] {
		return false
	}
	roomIn(&c.sessions, maxSessions)
	c.sessions[id] = true
	cmd := "comm " + strconv.Quote(p.GetComm())
	if x := ev.GetExec(); x != nil {
		cmd = fmt.Sprintf("%q", x.Argv)
		if len(x.Argv) == 0 {
			cmd = strconv.Quote(x.Filename)
		}
	}
	e.dev(CodeExecSession, strconv.FormatUint(uint64(id), 10),
		fmt.Sprintf("exec session %d entered the container running %s (uid %d); policy %s", id, cmd, p.GetEuid(), e.sessionPolicy()), nil)
	return true
}

func (e *Engine) sessionPolicy() string {
	if e.cfg.ExecSessions == "" {
		return ExecSessionsBehaviours
	}
	return e.cfg.ExecSessions
}

// SessionBehaviours are the reason codes an exec session is scored for
// under the "behaviours" policy: what an attacker with exec access does
// (ATT&CK T1609 and after it), not what an operator routinely does in a
// session (a shell, an interpreter, tools, a package manager, files and
// executables the image never showed), which stays recorded by the
// session's exec.session alert.
var SessionBehaviours = map[string]bool{
	CodeExecSession: true,
	// Credential access.
	CodeReadSensitive: true, CodeCredSearch: true, CodeSensitiveLink: true,
	// Execution that hides or brings its own code.
	CodeExecDrift: true, CodeExecFileless: true, CodeExecMiner: true, CodeMinerPort: true,
	CodeReverseShell: true, CodeExecScanner: true, CodeNetScan: true,
	// Escape and privilege.
	CodeNamespace: true, CodeMount: true, CodeChroot: true, CodeCgroupEscape: true,
	CodeKernelModule: true, CodeBPF: true, CodeUserfaultfd: true, CodeKernelTunable: true,
	CodeRuntimeSocket: true, CodePrivilegeGain: true, CodeSetuidBit: true, CodeDevCreate: true,
	CodePtrace: true, CodeProcMemory: true, CodeSyscallSensitive: true,
	// Persistence and impact.
	CodeSSHPersist: true, CodeShellConfig: true, CodeCronPersist: true, CodeAccountChange: true,
	CodeBulkDelete: true, CodeLogClear: true,
	// Added by the held-out audit (design 028).
	CodeCloudMetadata: true, CodeMasquerade: true,
}

// keepSessionBehaviours filters devs in place to SessionBehaviours.
func keepSessionBehaviours(devs []deviation) []deviation {
	out := devs[:0]
	for _, d := range devs {
		if SessionBehaviours[d.code] {
			out = append(out, d)
		}
	}
	return out
}
