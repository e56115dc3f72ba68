package collector

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/containsec/contain/internal/cgroups"
	"github.com/containsec/contain/internal/logfields"
	"github.com/containsec/contain/internal/metrics"
)

// Sensitive files by identity. The kernel marks an open sensitive when the
// opened inode is one of a container's sensitive files, whatever name it
// was opened through (hardlink, symlink, "..", /proc/self/root/...): at a
// container's announcement user space resolves collector.sensitive_files,
// and every user's ~/.ssh keys and config (homes from the container's
// /etc/passwd), inside the container's root and puts their (dev, ino) in
// sensitive_inodes; they are removed when its cgroup goes. Files created
// later are matched in the kernel by name (sensitive_names): their walked
// path against sensitive_files, or a parent directory named ".ssh".

// sensitive_names values (bpf/common.h NAME_*).
const (
	nameByPath  = 1
	nameEnviron = 2
	nameSSH     = 4
)

// sshKeyNames are sensitive in any directory named .ssh.
var sshKeyNames = []string{
	"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk",
	"authorized_keys", "authorized_keys2", "config",
}

// Bounds on what one container's resolution reads.
const (
	maxPasswdBytes = 256 << 10
	maxHomes       = 256
)

// sensitiveNames is the kernel's sensitive_names content for paths.
func sensitiveNames(paths []string) map[string]uint8 {
	out := map[string]uint8{"environ": nameEnviron}
	for _, p := range paths {
		out[path.Base(path.Clean(p))] |= nameByPath
	}
	for _, n := range sshKeyNames {
		out[n] |= nameSSH
	}
	return out
}

func fillSensitiveNames(m *ebpf.Map, paths []string) error {
	for name, kind := range sensitiveNames(paths) {
		if len(name) >= sensitivePathLen {
			continue // a leaf this long cannot be read whole by the kernel
		}
		var key [sensitivePathLen]byte
		copy(key[:], name)
		if err := m.Put(key, kind); err != nil {
			return fmt.Errorf("sensitive name %q: %w", name, err)
		}
	}
	return nil
}

// fileID is a file's identity as the kernel's super_block.s_dev and i_ino
// (the key of sensitive_inodes).
type fileID struct {
	dev uint32 // MAJOR << 20 | MINOR
	ino uint64
}

// kernelDev turns stat's st_dev into the kernel's internal dev_t.
func kernelDev(dev uint64) uint32 {
	return unix.Major(dev)<<20 | unix.Minor(dev)&(1<<20-1)
}

// resolveInRoot finds, inside the directory tree root (a container's
// /proc/<pid>/root), the regular files named by paths (absolute, as seen
// in that root) and every user's ~/.ssh/<sshKeyNames> (homes from the
// root's /etc/passwd). Names resolve as in the container: symlinks and
// ".." never leave root (openat2 RESOLVE_IN_ROOT), magic links are
// refused. Missing files are skipped; so are non-regular files (runc masks
// /proc/kcore with /dev/null: its identity is every /dev/null's) and
// /proc and /sys, whose inodes come and go (the kernel matches /proc/*/environ
// by name).
func resolveInRoot(root string, paths []string) ([]fileID, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", root, err)
	}
	defer unix.Close(rfd)
	want := []string{}
	for _, p := range paths {
		if c := path.Clean(p); !strings.HasPrefix(c, "/proc/") && !strings.HasPrefix(c, "/sys/") {
			want = append(want, c)
		}
	}
	for _, home := range passwdHomes(rfd) {
		if !dirInRoot(rfd, path.Join(home, ".ssh")) {
			continue // one lookup per user without keys
		}
		for _, n := range sshKeyNames {
			want = append(want, path.Join(home, ".ssh", n))
		}
	}
	seen := map[fileID]bool{}
	var out []fileID
	for _, p := range want {
		id, err := statInRoot(rfd, p)
		if err != nil {
			continue // absent, or not a regular file
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

var errNotRegular = errors.New("not a regular file")

// statInRoot is the identity of p resolved inside the root rfd.
func statInRoot(rfd int, p string) (fileID, error) {
	fd, err := unix.Openat2(rfd, strings.TrimPrefix(p, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fileID{}, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileID{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileID{}, errNotRegular
	}
	return fileID{dev: kernelDev(st.Dev), ino: st.Ino}, nil
}

// dirInRoot reports whether p is a directory inside the root rfd.
func dirInRoot(rfd int, p string) bool {
	fd, err := unix.Openat2(rfd, strings.TrimPrefix(p, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// passwdHomes reads the home directories from /etc/passwd inside rfd
// (bounded; "/" and relative homes skipped).
func passwdHomes(rfd int) []string {
	fd, err := unix.Openat2(rfd, "etc/passwd", &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), "passwd")
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil // a FIFO or device planted at /etc/passwd
	}
	b, _ := io.ReadAll(io.LimitReader(f, maxPasswdBytes))
	return parsePasswdHomes(b)
}

// parsePasswdHomes returns the distinct absolute home directories of a
// passwd file, at most maxHomes.
func parsePasswdHomes(b []byte) []string {
	seen := map[string]bool{}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 4096)
	for sc.Scan() && len(out) < maxHomes {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 7 {
			continue
		}
		h := path.Clean(fields[5])
		if !strings.HasPrefix(h, "/") || h == "/" || len(h) > 1024 || seen[h] {
			continue
		}
		seen[h] = true
		out = append(out, h)
	}
	return out
}

// sensitiveInodes keeps the kernel's sensitive_inodes: the identities each
// container's announcement registered, counted (two containers may share
// a file through a volume).
type sensitiveInodes struct {
	m     *ebpf.Map
	paths []string
	refs  map[fileID]int
	byCg  map[uint64]sensitiveEntry
}

type sensitiveEntry struct {
	cgroupPath string
	ids        []fileID
}

func newSensitiveInodes(m *ebpf.Map, paths []string) *sensitiveInodes {
	return &sensitiveInodes{m: m, paths: paths, refs: map[fileID]int{}, byCg: map[uint64]sensitiveEntry{}}
}

// add resolves the sensitive files of the container of cgid, whose init
// is initPID, and registers them; it returns how many it registered.
func (s *sensitiveInodes) add(cgid uint64, cgroupPath string, initPID uint32) (int, error) {
	if _, ok := s.byCg[cgid]; ok {
		return 0, nil
	}
	ids, err := resolveInRoot(path.Join(procRoot, strconv.FormatUint(uint64(initPID), 10), "root"), s.paths)
	if err != nil {
		return 0, err
	}
	var errs []error
	var kept []fileID
	for _, id := range ids {
		if s.refs[id] == 0 {
			if err := s.m.Put(collectorInodeKey{Ino: id.ino, Dev: id.dev}, uint8(1)); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		s.refs[id]++
		kept = append(kept, id)
	}
	s.byCg[cgid] = sensitiveEntry{cgroupPath: cgroupPath, ids: kept}
	if len(errs) > 0 {
		return len(kept), fmt.Errorf("sensitive_inodes: %w", errors.Join(errs...))
	}
	return len(kept), nil
}

// remove unregisters the files of the container of cgid.
func (s *sensitiveInodes) remove(cgid uint64) {
	e, ok := s.byCg[cgid]
	if !ok {
		return
	}
	delete(s.byCg, cgid)
	for _, id := range e.ids {
		s.refs[id]--
		if s.refs[id] <= 0 {
			delete(s.refs, id)
			_ = s.m.Delete(collectorInodeKey{Ino: id.ino, Dev: id.dev})
		}
	}
}

// registerSensitive registers ctr's sensitive files by identity, once its
// init is known (at its announcement; mu held). Before that, and for files
// created later, the kernel matches by name and walked path.
func (c *Collector) registerSensitive(ctr *container) {
	if c.sens == nil || !ctr.isContainer || ctr.info.InitPID == 0 {
		return
	}
	n, err := c.sens.add(ctr.cgroupID, ctr.cgroupPath, uint32(ctr.info.InitPID))
	if err != nil {
		c.m.Errors.WithLabelValues(metrics.StageCollector, errKindSensitiveInodes).Inc()
		c.log.Warn("sensitive files not registered by identity; matched by name only", logfields.ContainerID, ctr.ref.ID, logfields.Err, err)
		return
	}
	c.log.Debug("sensitive files registered", logfields.ContainerID, ctr.ref.ID, logfields.Files, n)
}

// pruneSensitive unregisters the files of containers whose cgroup is gone
// (every loss_interval; mu held): a freed overlay dev and inode number are
// reused by later mounts.
func (c *Collector) pruneSensitive() {
	if c.sens == nil {
		return
	}
	for cgid, e := range c.sens.byCg {
		if id, err := cgroups.ID(filepath.Join(c.cfg.CgroupRoot, e.cgroupPath)); err != nil || id != cgid {
			c.sens.remove(cgid)
		}
	}
}

// errKindSensitiveInodes counts failed registrations
// (contain_errors_total{stage="collector",kind="sensitive_inodes"}).
const errKindSensitiveInodes = "sensitive_inodes"
