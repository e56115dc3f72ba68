package collector

import (
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
)

const fibTrieSample = `Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 10.231.9.0/24 2 0 2
        |-- 10.231.9.2
           /32 host LOCAL
        |-- 10.231.9.255
           /32 link BROADCAST
Local:
  +-- 10.231.9.0/24 2 0 2
        |-- 10.231.9.2
           /32 host LOCAL
        |-- 172.17.0.5
           /32 host LOCAL
`

const ifInet6Sample = `00000000000000000000000000000001 01 80 10 80       lo
fd000231000000000000000000000002 03 40 00 82       v0
fe80000000000000a8bbccfffedd0001 03 40 20 80       v0
20010db8000000000000000000000009 04 40 00 80     eth1
zz000231000000000000000000000002 03 40 00 82       bad
`

func TestParseFibTrie(t *testing.T) {
	got := parseFibTrie([]byte(fibTrieSample))
	want := []netip.Addr{netip.MustParseAddr("10.231.9.2"), netip.MustParseAddr("10.231.9.2"), netip.MustParseAddr("172.17.0.5")}
	if !slices.Equal(got, want) {
		t.Errorf("parseFibTrie = %v, want %v", got, want)
	}
}

func TestParseIfInet6(t *testing.T) {
	got := parseIfInet6([]byte(ifInet6Sample))
	want := []netip.Addr{netip.MustParseAddr("fd00:231::2"), netip.MustParseAddr("2001:db8::9")}
	if !slices.Equal(got, want) {
		t.Errorf("parseIfInet6 = %v, want %v", got, want)
	}
}

func TestAddrBytes(t *testing.T) {
	got := addrBytes(append(parseFibTrie([]byte(fibTrieSample)), parseIfInet6([]byte(ifInet6Sample))...))
	var s []string
	for _, b := range got {
		if len(b) != 16 {
			t.Fatalf("address of %d bytes", len(b))
		}
		s = append(s, netip.AddrFrom16([16]byte(b)).Unmap().String())
	}
	if want := []string{"10.231.9.2", "172.17.0.5", "2001:db8::9", "fd00:231::2"}; !slices.Equal(s, want) {
		t.Errorf("addrBytes = %v, want %v", s, want)
	}
}

// TestNetAddrs reads the addresses of a network namespace this test
// creates (a veth end with 10.231.9.2/24 and fd00:231::2/64), through a
// process in it, and the host namespace of the test process itself.
func TestNetAddrs(t *testing.T) {
	testenv.RequireRoot(t)
	ip := testenv.RequireCommand(t, "ip")
	ns := "ctest-" + strconv.Itoa(os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", ns).Run() })
	run("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	run("-n", ns, "addr", "add", "10.231.9.2/24", "dev", "v0")
	run("-n", ns, "addr", "add", "fd00:231::2/64", "dev", "v0", "nodad")
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "link", "set", "v0", "up")
	sleep := exec.Command(ip, "netns", "exec", ns, "sleep", "30")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })
	pid := uint32(sleep.Process.Pid)
	var got []string
	var hostNet bool
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) { // until ip has entered the namespace and exec'd sleep
		if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/comm"); string(comm) != "sleep\n" {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		addrs, hn, err := netAddrs(procRoot, pid)
		if err != nil {
			t.Fatal(err)
		}
		got, hostNet = nil, hn
		for _, b := range addrs {
			got = append(got, netip.AddrFrom16([16]byte(b)).Unmap().String())
		}
		break
	}
	if want := []string{"10.231.9.2", "fd00:231::2"}; !slices.Equal(got, want) || hostNet {
		t.Errorf("namespace addresses %v host_network %v, want %v false", got, hostNet, want)
	}
	_, hostNet, err := netAddrs(procRoot, uint32(os.Getpid()))
	if err != nil || !hostNet {
		t.Errorf("own process: host_network %v err %v, want true", hostNet, err)
	}
	if _, _, err := netAddrs(procRoot, 0); err == nil {
		t.Error("pid 0: no error")
	}
}

func FuzzParseFibTrie(f *testing.F) {
	f.Add([]byte(fibTrieSample))
	f.Add([]byte("|-- 999.1.1.1\n/32 host LOCAL\n|--\n/32 host LOCAL"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range parseFibTrie(b) {
			if !a.Is4() || a.IsLoopback() {
				t.Fatalf("address %v", a)
			}
		}
	})
}

func FuzzParseIfInet6(f *testing.F) {
	f.Add([]byte(ifInet6Sample))
	f.Add([]byte("00000000000000000000ffff0a000001 01 80 00 80 x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range parseIfInet6(b) {
			if !a.Is6() || a.Is4In6() || a.IsLoopback() || a.IsLinkLocalUnicast() {
				t.Fatalf("address %v", a)
			}
		}
	})
}
