// Command probe performs one attack behaviour per command-line argument
// with raw system calls, then sleeps until killed; "benign" does only what
// the learned image does. TestBehaviourCoverage builds it (static) into
// containers of a learned image.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const self = "/opt/probe/probe"

func must(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	}
}

func create(p string, mode uint32) {
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, mode)
	if err != nil {
		must("create "+p, err)
		return
	}
	unix.Write(fd, []byte("x\n"))
	unix.Close(fd)
}

func read(p string) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		must("read "+p, err)
		return
	}
	buf := make([]byte, 256)
	unix.Read(fd, buf)
	unix.Close(fd)
}

func writeOpen(p string, flags int) {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC|flags, 0)
	must("open for write "+p, err)
	if err == nil {
		unix.Close(fd)
	}
}

func execv(argv0 string, argv ...string) {
	err := unix.Exec(argv0, argv, []string{"PATH=/bin"})
	must("exec "+argv0, err)
}

// spawn starts argv as a child and does not wait.
func spawn(argv ...string) int {
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{Env: []string{"PATH=/bin"}, Files: []uintptr{0, 1, 2}})
	must("spawn "+argv[0], err)
	return pid
}

func copyFile(dst, src string, mode uint32) {
	data, err := os.ReadFile(src)
	must("read "+src, err)
	must("write "+dst, os.WriteFile(dst, data, os.FileMode(mode)))
}

func benign() {
	read("/etc/passwd")
	create("/data/state", 0o644)
	os.MkdirAll("/data/cache", 0o755)
	create("/data/cache/item", 0o644)
}

var behaviours = map[string]func(){
	"benign":  benign,
	"shadow":  func() { read("/etc/shadow") },
	"environ": func() { read("/proc/1/environ") },
	"ptrace": func() {
		pid := spawn(self, "sleep")
		time.Sleep(200 * time.Millisecond)
		runtime.LockOSThread()
		must("ptrace attach", syscall.PtraceAttach(pid))
	},
	"traceme": func() {
		runtime.LockOSThread()
		unix.Syscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
	},
	"vmwrite": func() {
		buf := make([]byte, 8)
		local := unix.Iovec{Base: &buf[0], Len: 8}
		remote := unix.RemoteIovec{Base: uintptr(unsafe.Pointer(&buf[0])), Len: 8}
		_, err := unix.ProcessVMWritev(os.Getpid(), []unix.Iovec{local}, []unix.RemoteIovec{remote}, 0)
		must("process_vm_writev", err)
	},
	"setns": func() {
		fd, err := unix.Open("/proc/1/ns/uts", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		must("open ns", err)
		runtime.LockOSThread()
		must("setns", unix.Setns(fd, unix.CLONE_NEWUTS))
	},
	// scan: TCP connects to 40 ports of an unroutable host, each failing
	// at once in the container's network namespace (no route).
	"scan": func() {
		for port := 20; port < 60; port++ {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				must("socket", err)
				return
			}
			unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{10, 255, 255, 1}})
			unix.Close(fd)
		}
	},
	// deleted: a copy of the probe opened, unlinked, then run through its
	// descriptor (execveat AT_EMPTY_PATH): a deleted binary.
	"deleted": func() {
		copyFile("/data/d", self, 0o755)
		fd, err := unix.Open("/data/d", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		must("open copy", err)
		must("unlink copy", unix.Unlink("/data/d"))
		argv0, _ := unix.BytePtrFromString("probe")
		sl, _ := unix.BytePtrFromString("sleep")
		empty, _ := unix.BytePtrFromString("")
		argv := []*byte{argv0, sl, nil}
		env := []*byte{nil}
		_, _, e := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(empty)),
			uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&env[0])), unix.AT_EMPTY_PATH, 0)
		must("execveat", e)
	},
	// revshell: a TCP connection to the test's listener (host network)
	// duplicated onto stdin, stdout and stderr, with no exec after it.
	"revshell": func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		must("socket", err)
		port, _ := strconv.Atoi(os.Getenv("PORT"))
		if len(os.Args) > 2 {
			port, _ = strconv.Atoi(os.Args[2])
		}
		must("connect", unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}))
		for i := 0; i < 3; i++ {
			must("dup2", unix.Dup2(fd, i))
		}
	},
	// dockersock: a connect to the container runtime's socket (mounted
	// at /var/run/docker.sock by the test).
	"dockersock": func() {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		must("socket", err)
		if err == nil {
			must("connect docker.sock", unix.Connect(fd, &unix.SockaddrUnix{Name: "/var/run/docker.sock"}))
			unix.Close(fd)
		}
	},
	"unshare": func() { must("unshare", unix.Unshare(unix.CLONE_NEWUTS)) },
	"mount":   func() { must("mount", unix.Mount("none", "/mnt", "tmpfs", 0, "")) },
	"chroot":  func() { must("chroot", unix.Chroot("/")) },
	"setuid": func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 65534, 65534, 0); e != 0 {
			must("setresuid 65534", e)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); e != 0 {
			must("setresuid 0", e)
		}
	},
	"capset": func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		must("capget", unix.Capget(&hdr, &data[0]))
		data[0].Effective |= 1 << unix.CAP_SYS_ADMIN
		unix.Capset(&hdr, &data[0])
	},
	"packet": func() {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0x0300)
		must("socket AF_PACKET", err)
		if err == nil {
			unix.Close(fd)
		}
	},
	"bpf": func() {
		attr := [64]byte{}
		*(*uint32)(unsafe.Pointer(&attr[0])) = 1 // BPF_MAP_TYPE_HASH
		*(*uint32)(unsafe.Pointer(&attr[4])) = 4
		*(*uint32)(unsafe.Pointer(&attr[8])) = 4
		*(*uint32)(unsafe.Pointer(&attr[12])) = 1
		unix.Syscall(unix.SYS_BPF, 0, uintptr(unsafe.Pointer(&attr[0])), 64)
	},
	"userfaultfd": func() { unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0) },
	"vmread": func() {
		buf := make([]byte, 8)
		local := unix.Iovec{Base: &buf[0], Len: 8}
		remote := unix.RemoteIovec{Base: uintptr(unsafe.Pointer(&buf[0])), Len: 8}
		_, err := unix.ProcessVMReadv(os.Getpid(), []unix.Iovec{local}, []unix.RemoteIovec{remote}, 0)
		must("process_vm_readv", err)
	},
	"kmod": func() { unix.Syscall(unix.SYS_FINIT_MODULE, ^uintptr(0), 0, 0) },
	"mknod": func() {
		must("mknod", unix.Mknodat(unix.AT_FDCWD, "/dev/evil", unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
	},
	"devfile":   func() { create("/dev/evilfile", 0o644) },
	"hidden":    func() { create("/etc/.hidden", 0o644) },
	"setuidbit": func() { create("/data/suid", 0o755); must("chmod", unix.Chmod("/data/suid", 0o4755)) },
	"etcwrite":  func() { create("/etc/evil.conf", 0o644) },
	"authkeys": func() {
		os.MkdirAll("/root/.ssh", 0o700)
		create("/root/.ssh/authorized_keys", 0o600)
	},
	"shellrc": func() { os.MkdirAll("/root", 0o700); create("/root/.bashrc", 0o644) },
	"cron":    func() { os.MkdirAll("/etc/cron.d", 0o755); create("/etc/cron.d/evil", 0o644) },
	"passwd":  func() { writeOpen("/etc/passwd", unix.O_APPEND) },
	"logclear": func() {
		os.MkdirAll("/var/log", 0o755)
		create("/var/log/messages", 0o644)
		writeOpen("/var/log/messages", unix.O_TRUNC)
	},
	"bulk": func() {
		os.MkdirAll("/data/bulk", 0o755)
		for i := range 80 {
			create(fmt.Sprintf("/data/bulk/f%d", i), 0o644)
		}
		for i := range 80 {
			unix.Unlink(fmt.Sprintf("/data/bulk/f%d", i))
		}
	},
	"releaseagent": func() { writeOpen("/sys/fs/cgroup/release_agent", 0) },
	"corepattern":  func() { writeOpen("/proc/sys/kernel/core_pattern", 0) },
	"shell":        func() { spawn("/bin/sh", "-c", "sleep 1000000") },
	"credsearch":   func() { spawn("/bin/grep", "-r", "BEGIN RSA PRIVATE KEY", "/etc") },
	"miner":        func() { execv(self, "probe", "sleep", "stratum+tcp://pool.example:3333") },
	"tmpexec": func() {
		copyFile("/tmp/p", self, 0o755)
		execv("/tmp/p", "p", "sleep")
	},
	"memfd": func() {
		data, err := os.ReadFile(self)
		must("read self", err)
		fd, err := unix.MemfdCreate("x", 0)
		must("memfd_create", err)
		unix.Write(fd, data)
		argv0, _ := unix.BytePtrFromString("probe")
		sl, _ := unix.BytePtrFromString("sleep")
		empty, _ := unix.BytePtrFromString("")
		argv := []*byte{argv0, sl, nil}
		env := []*byte{nil}
		_, _, e := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(empty)),
			uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&env[0])), unix.AT_EMPTY_PATH, 0)
		must("execveat", e)
	},
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe behaviour")
		os.Exit(2)
	}
	if f := behaviours[os.Args[1]]; f != nil {
		f()
	} else if os.Args[1] != "sleep" {
		fmt.Fprintf(os.Stderr, "unknown behaviour %q\n", os.Args[1])
		os.Exit(2)
	}
	for {
		time.Sleep(time.Hour)
	}
}
