// Package forensics captures a bounded snapshot of a container for the
// record of a quarantine: its processes with argv (from /proc), its open
// sockets (/proc/<pid>/net/{tcp,tcp6,udp,udp6} of each network namespace,
// tied to pids through /proc/<pid>/fd), and the files of its writable
// layer changed since the container started (for runc: the bundle rootfs).
//
// Everything it reads comes from a possibly hostile container: strings are
// bounded and made valid UTF-8, lists are capped and the cut is reported
// (Truncated), and a read that fails is noted in Errors instead of failing
// the snapshot. Nothing here logs.
package forensics

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containsec/contain/schemas/containv1"
)

// Limits bound a snapshot.
type Limits struct {
	MaxProcs   int `config:"max_procs"`   // processes listed
	MaxArgv    int `config:"max_argv"`    // bytes of argv kept per process
	MaxSockets int `config:"max_sockets"` // sockets listed
	MaxFiles   int `config:"max_files"`   // changed files listed
	MaxWalk    int `config:"max_walk"`    // rootfs entries visited
}

// DefaultLimits keep a snapshot within about 64 KiB of JSON.
func DefaultLimits() Limits {
	return Limits{MaxProcs: 64, MaxArgv: 512, MaxSockets: 64, MaxFiles: 100, MaxWalk: 50000}
}

// Snapshot is what was seen of a container.
type Snapshot struct {
	TakenAt      time.Time `json:"taken_at"`
	TookUs       int64     `json:"took_us"`
	Processes    []Process `json:"processes"`
	Sockets      []Socket  `json:"sockets,omitempty"`
	ChangedFiles []File    `json:"changed_files,omitempty"`
	// Truncated names the lists that were cut (processes, sockets, files).
	Truncated []string `json:"truncated,omitempty"`
	Errors    []string `json:"errors,omitempty"`
}

// Process is one process of the container.
type Process struct {
	Pid   int      `json:"pid"`
	PPid  int      `json:"ppid"`
	UID   int      `json:"uid"`
	Comm  string   `json:"comm"`
	Exe   string   `json:"exe,omitempty"`
	Argv  []string `json:"argv"`
	State string   `json:"state,omitempty"`
}

// Socket is one socket of the container's network namespaces.
type Socket struct {
	Proto  string `json:"proto"` // tcp, tcp6, udp, udp6
	Local  string `json:"local"`
	Remote string `json:"remote"`
	State  string `json:"state"`
	Inode  uint64 `json:"inode"`
	Pids   []int  `json:"pids,omitempty"`
}

// File is a file of the writable layer changed since the container started.
type File struct {
	Path  string    `json:"path"`
	Size  int64     `json:"size"`
	Mode  string    `json:"mode"`
	MTime time.Time `json:"mtime"`
}

// Input says what to capture.
type Input struct {
	// Pids are the container's processes (its cgroup.procs).
	Pids []int
	// ProcRoot is /proc, or another procfs mount.
	ProcRoot string
	// Rootfs is the container's writable root seen from the host, "" if
	// unknown; files changed after Since are listed.
	Rootfs string
	Since  time.Time
}

// Take captures a snapshot. It never fails: problems are listed in Errors.
func Take(ctx context.Context, in Input, lim Limits) *Snapshot {
	start := time.Now()
	s := &Snapshot{TakenAt: start.UTC()}
	if in.ProcRoot == "" {
		in.ProcRoot = "/proc"
	}
	s.processes(in, lim)
	s.sockets(in, lim)
	if in.Rootfs != "" && !in.Since.IsZero() && ctx.Err() == nil {
		s.files(ctx, in, lim)
	}
	s.TookUs = time.Since(start).Microseconds()
	return s
}

func (s *Snapshot) errorf(format string, args ...any) {
	if len(s.Errors) < 16 {
		s.Errors = append(s.Errors, fmt.Sprintf(format, args...))
	}
}

func safe(b []byte, max int) string {
	str, _, _ := containv1.SafeString(b, max)
	return str
}

func (s *Snapshot) processes(in Input, lim Limits) {
	pids := in.Pids
	if len(pids) > lim.MaxProcs {
		pids = pids[:lim.MaxProcs]
		s.Truncated = append(s.Truncated, "processes")
	}
	for _, pid := range pids {
		dir := filepath.Join(in.ProcRoot, strconv.Itoa(pid))
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			s.errorf("pid %d: %v", pid, err)
			continue
		}
		p := Process{Pid: pid}
		p.Comm, p.State, p.PPid = ParseStat(stat)
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			p.Argv = SplitArgv(b, lim.MaxArgv)
		}
		if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
			p.Exe = safe([]byte(exe), 256)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
			p.UID = statusUID(b)
		}
		s.Processes = append(s.Processes, p)
	}
}

// ParseStat reads comm, state and ppid from /proc/<pid>/stat. comm may
// hold spaces and parentheses, so it ends at the last ')'.
func ParseStat(b []byte) (comm, state string, ppid int) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return "", "", 0
	}
	comm = safe(b[open+1:end], 64)
	f := strings.Fields(string(b[end+1:]))
	if len(f) >= 2 {
		state = safe([]byte(f[0]), 4)
		ppid, _ = strconv.Atoi(f[1])
	}
	return comm, state, ppid
}

// SplitArgv splits a NUL-separated cmdline, keeping at most max bytes.
func SplitArgv(b []byte, max int) []string {
	if max > 0 && len(b) > max {
		b = b[:max]
	}
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	parts := bytes.Split(b, []byte{0})
	argv := make([]string, len(parts))
	for i, p := range parts {
		argv[i] = safe(p, 0)
	}
	return argv
}

func statusUID(b []byte) int {
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if rest, ok := bytes.CutPrefix(line, []byte("Uid:")); ok {
			if f := bytes.Fields(rest); len(f) > 0 {
				n, _ := strconv.Atoi(string(f[0]))
				return n
			}
		}
	}
	return -1
}

var tcpStates = map[string]string{
	"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
	"06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}

func (s *Snapshot) sockets(in Input, lim Limits) {
	// Which pid holds which socket inode.
	owners := map[uint64][]int{}
	netns := map[string]int{} // netns link -> a pid in it
	for _, pid := range in.Pids {
		dir := filepath.Join(in.ProcRoot, strconv.Itoa(pid))
		if ns, err := os.Readlink(filepath.Join(dir, "ns", "net")); err == nil {
			if _, ok := netns[ns]; !ok {
				netns[ns] = pid
			}
		}
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		for i, fd := range fds {
			if i >= 4096 {
				break
			}
			link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil {
				continue
			}
			if rest, ok := strings.CutPrefix(link, "socket:["); ok {
				if ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64); err == nil {
					if o := owners[ino]; len(o) < 8 {
						owners[ino] = append(o, pid)
					}
				}
			}
		}
	}
	nsList := make([]string, 0, len(netns))
	for ns := range netns {
		nsList = append(nsList, ns)
	}
	sort.Strings(nsList)
	for _, ns := range nsList {
		pid := netns[ns]
		for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
			b, err := os.ReadFile(filepath.Join(in.ProcRoot, strconv.Itoa(pid), "net", proto))
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					s.errorf("net/%s of pid %d: %v", proto, pid, err)
				}
				continue
			}
			socks, err := ParseNetTable(proto, b)
			if err != nil {
				s.errorf("net/%s of pid %d: %v", proto, pid, err)
			}
			for _, sk := range socks {
				sk.Pids = owners[sk.Inode]
				if len(s.Sockets) >= lim.MaxSockets {
					s.Truncated = append(s.Truncated, "sockets")
					return
				}
				s.Sockets = append(s.Sockets, sk)
			}
		}
	}
}

// ParseNetTable parses /proc/net/{tcp,tcp6,udp,udp6}. It is pure and safe
// on any input; malformed lines are skipped and counted in the error.
func ParseNetTable(proto string, b []byte) ([]Socket, error) {
	var (
		out []Socket
		bad int
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue // header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			bad++
			continue
		}
		local, err1 := parseHexAddr(f[1])
		remote, err2 := parseHexAddr(f[2])
		ino, err3 := strconv.ParseUint(f[9], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			bad++
			continue
		}
		state := f[3]
		if strings.HasPrefix(proto, "tcp") {
			if st, ok := tcpStates[strings.ToUpper(state)]; ok {
				state = st
			}
		} else if strings.EqualFold(state, "07") {
			state = "UNCONN"
		} else if strings.EqualFold(state, "01") {
			state = "ESTABLISHED"
		}
		out = append(out, Socket{Proto: proto, Local: local, Remote: remote, State: safe([]byte(state), 16), Inode: ino})
	}
	if err := sc.Err(); err != nil {
		return out, err
	}
	if bad > 0 {
		return out, fmt.Errorf("%d malformed lines", bad)
	}
	return out, nil
}

// parseHexAddr decodes "0100007F:1F90" (IPv4, host byte order per 32-bit
// word) or the 32-hex-digit IPv6 form into "addr:port".
func parseHexAddr(s string) (string, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return "", errors.New("no port")
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", err
	}
	raw, err := hex.DecodeString(h)
	if err != nil {
		return "", err
	}
	if len(raw) != 4 && len(raw) != 16 {
		return "", fmt.Errorf("address of %d bytes", len(raw))
	}
	// each 32-bit word is in host (little-endian) order.
	for i := 0; i+4 <= len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)).String(), nil
}

// skipDirs are not part of a writable layer.
var skipDirs = map[string]bool{"proc": true, "sys": true, "dev": true}

func (s *Snapshot) files(ctx context.Context, in Input, lim Limits) {
	visited := 0
	err := filepath.WalkDir(in.Rootfs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if visited++; visited > lim.MaxWalk {
			s.Truncated = append(s.Truncated, "walk")
			return fs.SkipAll
		}
		if visited%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		rel, _ := filepath.Rel(in.Rootfs, path)
		if d.IsDir() && skipDirs[rel] {
			return fs.SkipDir
		}
		if d.IsDir() || rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if !info.ModTime().After(in.Since) && !ctimeAfter(info, in.Since) {
			return nil
		}
		if len(s.ChangedFiles) >= lim.MaxFiles {
			s.Truncated = append(s.Truncated, "files")
			return fs.SkipAll
		}
		s.ChangedFiles = append(s.ChangedFiles, File{
			Path:  "/" + safe([]byte(rel), 512),
			Size:  info.Size(),
			Mode:  info.Mode().String(),
			MTime: info.ModTime().UTC(),
		})
		return nil
	})
	if err != nil {
		s.errorf("walking %s: %v", in.Rootfs, err)
	}
}
