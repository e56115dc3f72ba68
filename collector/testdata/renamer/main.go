// renamer is a container program for TestIntegrationLineageRenamedProcess:
// it names itself like runc's init (prctl PR_SET_NAME "runc:[2:INIT]"),
// then does what a runtime does (mount, a write under /run/runc) and
// execs a shell, to prove that origin does not follow comm.
package main

import (
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// The main goroutine stays on the thread it renames.
func init() { runtime.LockOSThread() }

func main() {
	name := []byte("runc:[2:INIT]\x00")
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0); e != 0 {
		os.Exit(2)
	}
	_ = syscall.Mount("none", "/tmp", "tmpfs", 0, "")
	_ = os.MkdirAll("/run/runc/fake", 0o755)
	_ = os.WriteFile("/run/runc/fake/state.json", []byte("{}"), 0o644)
	_ = syscall.Exec("/bin/sh", []string{"/bin/sh", "-c", "while true; do sleep 1; done"}, os.Environ())
	os.Exit(3)
}
