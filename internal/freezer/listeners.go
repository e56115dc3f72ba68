package freezer

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxProcScan bounds the processes ListenerPids looks at.
const maxProcScan = 65536

// ListenerPids returns the processes of this network namespace holding a
// TCP socket listening on one of ports (e.g. the NATS server's 4222 and
// ClickHouse's 9000), read from procRoot's net/tcp, net/tcp6 and
// <pid>/fd links. It is how the responder protects the local services
// contain depends on without being told their pids.
func ListenerPids(procRoot string, ports []int) ([]int, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	if procRoot == "" {
		procRoot = "/proc"
	}
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	inodes := map[string]bool{}
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		b, err := readBounded(filepath.Join(procRoot, f))
		if err != nil {
			continue // no IPv6, say
		}
		for ino := range parseListeners(b, want) {
			inodes["socket:["+ino+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", procRoot, err)
	}
	var pids []int
	for i, e := range ents {
		if i >= maxProcScan {
			break
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join(procRoot, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && inodes[l] {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids, nil
}

// parseListeners returns the socket inodes of /proc/net/tcp{,6} lines in
// state LISTEN (0A) on one of the ports.
func parseListeners(b []byte, ports map[int]bool) map[string]bool {
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		_, port, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(port, 16, 16)
		if err != nil || !ports[int(n)] {
			continue
		}
		out[f[9]] = true
	}
	return out
}
