package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/schemas/containv1"
)

// Sample is one look at the running stages.
type Sample struct {
	At time.Time
	// In and Out are contain_events_in_total / out_total by stage.
	In, Out map[string]float64
	// Pending is NumPending + NumAckPending by "stream/durable".
	Pending   map[string]uint64
	HeapInuse uint64
	HeapSys   uint64
}

type pendingSet map[string]uint64

func (p pendingSet) total() uint64 {
	var n uint64
	for _, v := range p {
		n += v
	}
	return n
}

// sampler reads the metrics registry, the consumers and the Go heap.
type sampler struct {
	m  *metrics.Metrics
	js jetstream.JetStream

	mu      sync.Mutex
	last    []*dto.MetricFamily
	samples []Sample
	markIdx int
}

func newSampler(m *metrics.Metrics, js jetstream.JetStream) *sampler {
	return &sampler{m: m, js: js, markIdx: -1}
}

func (s *sampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.take(ctx)
		select {
		case <-ctx.Done():
			s.take(context.Background())
			return
		case <-t.C:
		}
	}
}

// mark takes a sample now and remembers it as the generator's end.
func (s *sampler) mark() {
	s.take(context.Background())
	s.mu.Lock()
	s.markIdx = len(s.samples) - 1
	s.mu.Unlock()
}

func (s *sampler) take(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pend, _ := s.pending(pctx)
	fams, _ := s.m.Registry.Gather()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	sm := Sample{At: time.Now(), In: map[string]float64{}, Out: map[string]float64{}, Pending: pend,
		HeapInuse: ms.HeapInuse, HeapSys: ms.HeapSys}
	for _, f := range fams {
		var into map[string]float64
		switch f.GetName() {
		case "contain_events_in_total":
			into = sm.In
		case "contain_events_out_total":
			into = sm.Out
		default:
			continue
		}
		for _, mt := range f.GetMetric() {
			into[label(mt, "stage")] += mt.GetCounter().GetValue()
		}
	}
	s.mu.Lock()
	s.last = fams
	s.samples = append(s.samples, sm)
	s.mu.Unlock()
}

func label(mt *dto.Metric, name string) string {
	for _, l := range mt.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// counter is the current value of a counter for a stage.
func (s *sampler) counter(name, stage string) float64 {
	fams, _ := s.m.Registry.Gather()
	var v float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			if label(mt, "stage") == stage {
				v += mt.GetCounter().GetValue()
			}
		}
	}
	return v
}

// labelled is every non-zero series of a counter, by its joined labels.
func (s *sampler) labelled(name string) map[string]float64 {
	fams, _ := s.m.Registry.Gather()
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			if v := mt.GetCounter().GetValue(); v != 0 {
				var parts []string
				for _, l := range mt.GetLabel() {
					parts = append(parts, l.GetValue())
				}
				out[strings.Join(parts, "/")] += v
			}
		}
	}
	return out
}

// pending is every consumer's NumPending + NumAckPending.
func (s *sampler) pending(ctx context.Context) (pendingSet, error) {
	out := pendingSet{}
	var errs []error
	for _, stream := range []string{containv1.StreamRaw, containv1.StreamEvents, containv1.StreamAlerts, containv1.StreamActions} {
		st, err := s.js.Stream(ctx, stream)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l := st.ListConsumers(ctx)
		for ci := range l.Info() {
			out[stream+"/"+ci.Name] = ci.NumPending + uint64(ci.NumAckPending)
		}
		if err := l.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// Usage is CPU time and memory at one moment.
type Usage struct {
	At time.Time
	// CPU is this process's user+system time (stages, embedded NATS and
	// the generator).
	CPU time.Duration
	// ClickHouseCPU is the user+system time of the clickhouse-server
	// processes on this machine (0 when none is visible).
	ClickHouseCPU time.Duration
	// MachineBusy and MachineTotal are the machine's CPU time (all cores)
	// spent busy and in total, from /proc/stat.
	MachineBusy, MachineTotal time.Duration
	// PeakRSS is this process's VmHWM.
	PeakRSS uint64
}

const clockTick = 100 // USER_HZ on Linux

func readUsage() Usage { return readUsageFor(nil) }

// readUsageFor is readUsage with ClickHouseCPU counting only the server
// that listens on one of chAddrs' ports, when it is found (other servers
// on the machine, e.g. other tests' shards, are not this run's cost).
func readUsageFor(chAddrs []string) Usage {
	u := Usage{At: time.Now()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		u.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	u.ClickHouseCPU = clickhouseCPU(listeningPIDs(chAddrs))
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i, v := range f[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			d := time.Duration(n) * time.Second / clockTick
			if i >= 8 { // guest time is already counted in user
				break
			}
			u.MachineTotal += d
			if i != 3 && i != 4 && i != 7 { // idle, iowait, steal
				u.MachineBusy += d
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				u.PeakRSS = kb << 10
			}
		}
	}
	return u
}

// clickhouseCPU sums the CPU time of the clickhouse-server processes
// whose pid is in only, or of all of them when only is empty.
func clickhouseCPU(only map[string]bool) time.Duration {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	var total time.Duration
	for _, p := range dirs {
		comm, err := os.ReadFile(p)
		if err != nil || !strings.HasPrefix(string(comm), "clickhouse-serv") {
			continue
		}
		if len(only) > 0 && !only[filepath.Base(filepath.Dir(p))] {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
		if err != nil {
			continue
		}
		// Fields after the ")" that ends comm: state is field 3; utime and
		// stime are fields 14 and 15.
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				total += time.Duration(ut+st) * time.Second / clockTick
			}
		}
	}
	return total
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// LagSummary is the distribution of a set of latencies.
type LagSummary struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

func summarize(d []time.Duration) LagSummary {
	if len(d) == 0 {
		return LagSummary{}
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return LagSummary{N: len(s), P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: s[len(s)-1]}
}

// listeningPIDs returns the pids of the clickhouse-server processes that
// listen on a TCP port of addrs (from /proc/net/tcp{,6} and each process's
// socket fds; needs the right to read them, else it finds none).
func listeningPIDs(addrs []string) map[string]bool {
	ports := map[string]bool{}
	for _, a := range addrs {
		if _, p, err := net.SplitHostPort(a); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				ports[fmt.Sprintf("%04X", n)] = true
			}
		}
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			if _, port, ok := strings.Cut(fs[1], ":"); ok && ports[port] {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	out := map[string]bool{}
	if len(inodes) == 0 {
		return out
	}
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range comms {
		comm, err := os.ReadFile(c)
		if err != nil || !strings.HasPrefix(string(comm), "clickhouse-serv") {
			continue
		}
		dir := filepath.Dir(c)
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && inodes[l] {
				out[filepath.Base(dir)] = true
				break
			}
		}
	}
	return out
}
