package collector

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// countEvents counts ctr's events that match.
func countEvents(evs []*containv1.Event, ctrID string, match func(*containv1.Event) bool) int {
	n := 0
	for _, ev := range evs {
		if ev.ContainerId == ctrID && match(ev) {
			n++
		}
	}
	return n
}

func isCatExec(ev *containv1.Event) bool {
	x := ev.GetExec()
	return x != nil && slices.Equal(x.Argv, []string{"cat", "/dev/null"})
}

// Exec-heavy and connect-heavy loops at their full rate, under the
// default limit: every exec and every connect the loop counts arrives.
func TestIntegrationLoopsLoseNothing(t *testing.T) {
	_, js, _ := startCollector(t, nil)
	raw := consumeRaw(t, js)
	ctr := testenv.RunContainer(t, "colloop", testenv.ContainerSpec{HostNetwork: true})

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	const execs, connects = 1000, 300
	start := time.Now()
	out, err := ctr.Exec(2*time.Minute, "/bin/sh", "-c", fmt.Sprintf(
		`i=0; while [ $i -lt %d ]; do cat /dev/null; i=$((i+1)); done; echo $i;
j=0; while [ $j -lt %d ]; do nc 127.0.0.1 %d </dev/null; j=$((j+1)); done; echo $j`, execs, connects, port))
	if err != nil {
		t.Fatalf("runc exec: %v: %s", err, out)
	}
	elapsed := time.Since(start)
	loopCounts := strings.Fields(out)
	if len(loopCounts) != 2 || loopCounts[0] != strconv.Itoa(execs) || loopCounts[1] != strconv.Itoa(connects) {
		t.Fatalf("loop output %q", out)
	}
	isConnect := func(ev *containv1.Event) bool {
		n := ev.GetNetwork()
		return n != nil && n.Op == containv1.Network_OP_CONNECT && n.RemotePort == uint32(port)
	}
	evs := raw.waitFor(t, 20*time.Second, "every exec and connect of the loops", func(evs []*containv1.Event) bool {
		return countEvents(evs, ctr.ID, isCatExec) >= execs && countEvents(evs, ctr.ID, isConnect) >= connects
	})
	gotExec, gotConn := countEvents(evs, ctr.ID, isCatExec), countEvents(evs, ctr.ID, isConnect)
	if gotExec != execs || gotConn != connects {
		t.Fatalf("exec events %d (loop counted %d), connect events %d (loop counted %d)", gotExec, execs, gotConn, connects)
	}
	if n := accepted.Load(); n != connects {
		t.Fatalf("listener accepted %d, loop counted %d", n, connects)
	}
	if n := countEvents(evs, ctr.ID, func(ev *containv1.Event) bool { return ev.Kind == containv1.Kind_KIND_LOSS }); n != 0 {
		t.Fatalf("%d loss events for the loop's container", n)
	}
	all := countEvents(evs, ctr.ID, func(*containv1.Event) bool { return true })
	t.Logf("loops: %d execs + %d connects in %v (%.0f loop iterations/s), %d events from the container",
		execs, connects, elapsed.Round(time.Millisecond), float64(execs+connects)/elapsed.Seconds(), all)
}

// A container over its limit is rate-limited in the kernel and counted
// (KIND_LOSS, reason rate_limited, with its container id); another
// container's events still arrive in full. Only bulk records (file,
// network) are limited: the flood's execs, its sensitive syscall and an
// exec after the flood all arrive.
func TestIntegrationFloodRateLimited(t *testing.T) {
	_, js, _ := startCollector(t, func(c *Config) {
		// Above the file and network records the quiet container makes
		// (its execs are never limited), below what the flood produces.
		c.RatePerSec = 300
		c.RateBurst = 300
	})
	raw := consumeRaw(t, js)
	flood := testenv.RunContainer(t, "colflood", testenv.ContainerSpec{})
	quiet := testenv.RunContainer(t, "colquiet", testenv.ContainerSpec{})

	done := make(chan error, 1)
	go func() {
		// 3000 write-opens (file records) and 300 execs, then an exec and
		// a sensitive syscall (mount, refused without CAP_SYS_ADMIN).
		_, err := flood.Exec(time.Minute, "/bin/sh", "-c", `i=0; while [ $i -lt 3000 ]; do echo x > /tmp/f; [ $((i % 10)) = 0 ] && cat /dev/null; i=$((i+1)); done
/bin/echo after-flood; mount -t tmpfs none /tmp; true`)
		done <- err
	}()
	// Meanwhile, the quiet container: 20 execs, well within its own bucket.
	time.Sleep(200 * time.Millisecond) // let the flood start; the assertion below does not depend on it
	if out, err := quiet.Exec(30*time.Second, "/bin/sh", "-c", `i=0; while [ $i -lt 20 ]; do cat /dev/null; i=$((i+1)); done`); err != nil {
		t.Fatalf("quiet: %v: %s", err, out)
	}
	if err := <-done; err != nil {
		t.Fatalf("flood: %v", err)
	}
	isLimited := func(ev *containv1.Event) bool {
		l := ev.GetLoss()
		return l != nil && l.Reason == reasonRateLimited && l.Source == "kernel"
	}
	isWrite := func(ev *containv1.Event) bool { return ev.GetFile().GetPath() == "/tmp/f" }
	isAfter := func(ev *containv1.Event) bool {
		return slices.Equal(ev.GetExec().GetArgv(), []string{"/bin/echo", "after-flood"})
	}
	isMount := func(ev *containv1.Event) bool {
		s := ev.GetSyscall()
		return s.GetMode() == containv1.Syscall_MODE_SENSITIVE && s.GetName() == "mount"
	}
	var last string
	defer func() {
		if t.Failed() {
			t.Log(last)
		}
	}()
	evs := raw.waitFor(t, 20*time.Second, "the quiet container's execs, the flood's loss, execs, exec and mount after it", func(evs []*containv1.Event) bool {
		last = fmt.Sprintf("quiet: %d execs, %d loss; flood: %d writes, %d execs, %d loss, %d after, %d mount", countEvents(evs, quiet.ID, isCatExec), countEvents(evs, quiet.ID, isLimited),
			countEvents(evs, flood.ID, isWrite), countEvents(evs, flood.ID, isCatExec), countEvents(evs, flood.ID, isLimited),
			countEvents(evs, flood.ID, isAfter), countEvents(evs, flood.ID, isMount))
		return countEvents(evs, quiet.ID, isCatExec) == 20 && countEvents(evs, flood.ID, isLimited) > 0 &&
			countEvents(evs, flood.ID, isCatExec) == 300 && countEvents(evs, flood.ID, isAfter) == 1 && countEvents(evs, flood.ID, isMount) >= 1
	})
	var lost uint64
	for _, ev := range evs {
		if ev.ContainerId == flood.ID && isLimited(ev) {
			lost += ev.GetLoss().Count
		}
	}
	delivered := countEvents(evs, flood.ID, isWrite)
	if delivered >= 3000 || lost == 0 {
		t.Fatalf("flood: %d of 3000 writes delivered, %d records rate-limited", delivered, lost)
	}
	if n := countEvents(evs, quiet.ID, isLimited); n != 0 {
		t.Fatalf("the quiet container was rate-limited (%d loss events)", n)
	}
	t.Logf("flood: %d of 3000 writes delivered, %d records rate-limited, 300 of 300 execs, the exec and mount after it; quiet: 20 of 20", delivered, lost)
}
