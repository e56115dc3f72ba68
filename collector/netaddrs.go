package collector

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// maxAddrs bounds the addresses reported per container.
const maxAddrs = 64

// netAddrs reads the IP addresses of the network namespace of pid from
// procRoot (/proc/<pid>/net/fib_trie and /proc/<pid>/net/if_inet6, which
// show the namespace of the process, not the reader's: no setns needed).
// hostNet is true when pid shares the host's network namespace (see
// hostNetNS).
// Addresses are 16 bytes, IPv4-mapped for IPv4, sorted.
func netAddrs(procRoot string, pid uint32) (addrs [][]byte, hostNet bool, err error) {
	if pid == 0 {
		return nil, false, fmt.Errorf("net addresses: no init pid")
	}
	dir := procRoot + "/" + strconv.FormatUint(uint64(pid), 10)
	ns, err := os.Readlink(dir + "/ns/net")
	if err != nil {
		return nil, false, fmt.Errorf("net addresses: %w", err)
	}
	if hostNs, err := hostNetNS(procRoot); err == nil && hostNs == ns {
		hostNet = true
	}
	var all []netip.Addr
	fib, err := os.ReadFile(dir + "/net/fib_trie")
	if err != nil && !os.IsNotExist(err) {
		return nil, hostNet, fmt.Errorf("net addresses: %w", err)
	}
	all = append(all, parseFibTrie(fib)...)
	if v6, err := os.ReadFile(dir + "/net/if_inet6"); err == nil { // absent without IPv6
		all = append(all, parseIfInet6(v6)...)
	}
	// The process may have exited between the reads: its namespace would
	// then be another's.
	if again, err := os.Readlink(dir + "/ns/net"); err != nil || again != ns {
		return nil, false, fmt.Errorf("net addresses: pid %d exited", pid)
	}
	return addrBytes(all), hostNet, nil
}

// addrBytes sorts and de-duplicates addrs and returns them as 16-byte
// (IPv4-mapped) slices, at most maxAddrs.
func addrBytes(addrs []netip.Addr) [][]byte {
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	addrs = slices.Compact(addrs)
	if len(addrs) > maxAddrs {
		addrs = addrs[:maxAddrs]
	}
	out := make([][]byte, 0, len(addrs))
	for _, a := range addrs {
		b := a.As16()
		out = append(out, b[:])
	}
	return out
}

// parseFibTrie returns the local IPv4 addresses listed in a
// /proc/net/fib_trie: each "|-- a.b.c.d" line followed by "/32 host
// LOCAL". Loopback addresses are left out. It is pure and safe on any
// input.
func parseFibTrie(b []byte) []netip.Addr {
	var out []netip.Addr
	var last netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "|-- "); ok {
			last, _ = netip.ParseAddr(strings.TrimSpace(rest))
			continue
		}
		if strings.HasPrefix(line, "/32 host LOCAL") && last.Is4() && !last.IsLoopback() && !last.IsUnspecified() {
			out = append(out, last)
		}
	}
	return out
}

// IPv6 address scopes in /proc/net/if_inet6.
const (
	scopeHost = 0x10
	scopeLink = 0x20
)

// parseIfInet6 returns the IPv6 addresses of a /proc/net/if_inet6 (lines
// "<32 hex> <ifindex> <prefix len> <scope> <flags> <name>"), without
// loopback and link-local ones. It is pure and safe on any input.
func parseIfInet6(b []byte) []netip.Addr {
	var out []netip.Addr
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || len(f[0]) != 32 {
			continue
		}
		raw, err := hex.DecodeString(f[0])
		if err != nil {
			continue
		}
		scope, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil || scope == scopeHost || scope == scopeLink {
			continue
		}
		a := netip.AddrFrom16([16]byte(raw))
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.Is4In6() {
			continue
		}
		out = append(out, a)
	}
	return out
}

// hostNetNS names the host's network namespace: that of pid 1, else (when
// pid 1's is not readable, e.g. under a restricted ptrace policy) the
// collector's own, which runs in the host's network namespace.
func hostNetNS(procRoot string) (string, error) {
	if ns, err := os.Readlink(procRoot + "/1/ns/net"); err == nil {
		return ns, nil
	}
	return os.Readlink(procRoot + "/self/ns/net")
}
