package loadtest

import (
	"os"
	"path/filepath"
	"strings"
)

// The file system under ClickHouse's data decides a large share of its CPU
// per event on some hosts: every part is ~190 new files, and on ext4
// without a journal the kernel's inode allocator skips every inode freed
// in the last minute or more (fs/ext4/ialloc.c, recently_deleted: checked
// only when the file system has no journal), one buffer-cache lookup each,
// from the start of the block group, for every file created. After a run
// dropped its database (thousands of files), or while other clients of
// the host delete files, that scan was ~50% of the server's CPU in the
// 20,000 events/s load test (docs/benchmarks.md, "ClickHouse at 20,000
// events/s (chcost, 2026-12-03)"). The report names such a file system,
// so that its µs/event are not read as ClickHouse's own.

// dataFSNote is the report's line about such a file system.
func dataFSNote(fs string) string {
	return "clickhouse data on " + fs + ": creating its part files scans past recently deleted inodes (as much as ~50% of the server's CPU after deletions); " +
		"measure it on a journaled file system (docs/benchmarks.md, \"ClickHouse at 20,000 events/s (chcost\")"
}

// clickhouseDataFS describes the file system holding the data of the
// clickhouse-server among pids (its <path>, found from the status file
// it keeps open, else its working directory) when that is ext4 without a
// journal; "" otherwise or when it cannot tell.
func clickhouseDataFS(pids map[string]bool) string {
	for pid := range pids {
		dir := serverDataDir(pid)
		if dir == "" {
			continue
		}
		if dev, ok := ext4NoJournal(dir); ok {
			return "ext4 without a journal (" + dev + ", " + dir + ")"
		}
		return ""
	}
	return ""
}

// serverDataDir is the directory of the "status" file the server holds
// open in its data path, or its working directory.
func serverDataDir(pid string) string {
	fdDir := filepath.Join("/proc", pid, "fd")
	fds, _ := os.ReadDir(fdDir)
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err == nil && filepath.Base(l) == "status" && filepath.IsAbs(l) {
			return filepath.Dir(l)
		}
	}
	cwd, err := os.Readlink(filepath.Join("/proc", pid, "cwd"))
	if err != nil {
		return ""
	}
	return cwd
}

// ext4NoJournal reports whether dir is on an ext4 file system that has no
// journal (no /proc/fs/jbd2/<device>-* entry), and its block device.
func ext4NoJournal(dir string) (string, bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	mnt, fstype, majMin := mountOf(string(b), dir)
	if mnt == "" || fstype != "ext4" {
		return "", false
	}
	// The kernel's name of the device (vda, loop0, dm-0), as jbd2 uses it.
	l, err := os.Readlink("/sys/dev/block/" + majMin)
	if err != nil {
		return "", false
	}
	dev := filepath.Base(l)
	if js, _ := filepath.Glob("/proc/fs/jbd2/" + dev + "-*"); len(js) > 0 {
		return "", false
	}
	return dev, true
}

// mountOf returns the mount point, file system type and major:minor of
// the mount in mountinfo (proc(5)) that holds dir: the longest mount
// point that is dir or a parent of it (the last one mounted, if several).
func mountOf(mountinfo, dir string) (mnt, fstype, majMin string) {
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 {
			continue
		}
		mp := unescapeMount(f[4])
		if !under(dir, mp) || len(mp) < len(mnt) {
			continue
		}
		mnt, fstype, majMin = mp, g[0], f[2]
	}
	return mnt, fstype, majMin
}

// under reports whether dir is mp or below it.
func under(dir, mp string) bool {
	return mp == "/" || dir == mp || strings.HasPrefix(dir, mp+"/")
}

// unescapeMount undoes mountinfo's octal escapes of space, tab, newline
// and backslash.
func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}
