package forensics

import (
	"io/fs"
	"syscall"
	"time"
)

// ctimeAfter reports whether the inode changed (chmod, rename, write) after t.
func ctimeAfter(info fs.FileInfo, t time.Time) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec).After(t)
}
