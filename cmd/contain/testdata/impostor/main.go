// impostor is a container program for TestPauseAfterFloodAndRename: it
// sleeps (what its image learns), and once /tmp/go exists it names itself
// like runc's init (prctl PR_SET_NAME "runc:[2:INIT]") and mounts a tmpfs:
// a runtime's name must buy no exemption for a container's own process.
package main

import (
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

// The main goroutine stays on the thread it renames.
func init() { runtime.LockOSThread() }

func main() {
	for {
		if _, err := os.Stat("/tmp/go"); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	name := []byte("runc:[2:INIT]\x00")
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0); e != 0 {
		os.Exit(2)
	}
	_ = os.MkdirAll("/mnt/x", 0o755)
	_ = syscall.Mount("none", "/mnt/x", "tmpfs", 0, "")
	for {
		time.Sleep(time.Second)
	}
}
