package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/enricher"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// pacerEnv, set by BenchmarkEnricherPaced, makes this test binary the
// benchmark's publisher ("<nats url> <rate> <steady batches>") instead of
// running tests, so that the publisher's CPU is not the measured
// process's.
const pacerEnv = "CONTAIN_BENCH_ENRICHER_PACER"

// Fleet shape of BenchmarkEnricherPaced: the fleet load test's hosts,
// containers and batch size (one batch per host per second at 50,000
// events/s).
const (
	pacedHosts      = 200
	pacedContainers = 50
	pacedBatch      = 245
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(pacerEnv); spec != "" {
		if err := runPacer(spec, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "pacer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkEnricherPaced is the enricher as a process on the fleet load
// test's shape: 200 hosts × 50 containers, raw batches of 245 events
// published on the raw stream at 200 batches/s (the fleet's 50,000
// events/s; the enricher runs dry between messages, as in the fleet,
// so a fetch takes about one message), routed over 3 analyzer
// partitions by image digest. The nats-server and the publisher (this
// binary re-executed) are processes of their own: the CPU measured
// (getrusage) is the enricher's alone, fetching, acknowledging and
// publishing included. Two phases per round, each on a fresh server:
// "announce" is each host's first batch (every container's
// KIND_CONTAINER event, ~49 a batch: 10,000 container records put in
// KV), "steady" is b.N more batches, the hosts in turn (containers
// known).
// CONTAIN_BENCH_STEADY_CPUPROFILE=<file> profiles the steady phase;
// CONTAIN_BENCH_STEADY_PAUSE=<duration> waits before it (to attach a
// tracer).
// Reported: announce cpu-µs/container, steady cpu-ns/event and
// cpu-µs/msg, and the server's steady cpu-µs/msg.
//
//	go test -c -o /tmp/x.test ./loadtest && cd loadtest && \
//	  /tmp/x.test -test.run '^$' -test.bench EnricherPaced -test.benchtime 2000x
func BenchmarkEnricherPaced(b *testing.B) {
	rate := 200
	if v := os.Getenv("CONTAIN_BENCH_RATE"); v != "" {
		var err error
		if rate, err = strconv.Atoi(v); err != nil || rate < 1 {
			b.Fatalf("CONTAIN_BENCH_RATE=%q: want a positive rate", v)
		}
	}
	// The fleet load test runs its stages with memory.gc_percent 400.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	srv := testenv.StartNATSServer(b)
	nc, js, err := bus.Connect(srv.URL, "enricher", testenv.Discard())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := DefaultConfig()
	cfg.Streams.MaxBytes = 256 << 20 // the solo server's file store is 4 GB
	if err := bus.EnsureStreams(ctx, js, cfg.Streams); err != nil {
		b.Fatal(err)
	}
	en, err := enricher.New(cfg.Enricher, js, metrics.New(), testenv.Discard())
	if err != nil {
		b.Fatal(err)
	}
	en.SetRouter(analyzer.NewRouter(analyzer.Config{GroupBy: analyzer.GroupByDigest, Partitions: 3}))
	pc := exec.Command(os.Args[0], "-test.run", "^$")
	pc.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", pacerEnv, srv.URL, rate, b.N))
	pc.Stderr = os.Stderr
	toPacer, err := pc.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	fromPacer, err := pc.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := pc.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = toPacer.Close(); _ = pc.Wait() }()
	lines := bufio.NewScanner(fromPacer)
	expect := func(want string) string {
		if !lines.Scan() {
			b.Fatalf("pacer ended: %v", lines.Err())
		}
		if got := lines.Text(); !strings.HasPrefix(got, want) {
			b.Fatalf("pacer said %q, want %q", got, want)
		}
		return lines.Text()
	}
	expect("ready")
	done := make(chan error, 1)
	go func() { done <- en.Run(ctx) }()
	defer func() { cancel(); <-done }()
	cons := waitConsumer(b, ctx, js, cfg.Enricher.Durable)
	pid := srv.Pid()
	var published uint64
	phase := func(name string) (cpu, server time.Duration, events, containers int) {
		cpu0, srv0 := processCPU(), procCPU(b, pid)
		if _, err := fmt.Fprintln(toPacer, name); err != nil {
			b.Fatal(err)
		}
		var n int
		if _, err := fmt.Sscanf(expect("done"), "done %d %d %d", &n, &events, &containers); err != nil {
			b.Fatal(err)
		}
		published += uint64(n)
		testenv.WaitForState(b, 5*time.Minute, "the enricher drained", func() (bool, string) {
			info, err := cons.Info(ctx)
			if err != nil {
				return false, err.Error()
			}
			return info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= published,
				fmt.Sprintf("pending %d, ack pending %d, ack floor %d of %d", info.NumPending, info.NumAckPending, info.AckFloor.Stream, published)
		})
		return processCPU() - cpu0, procCPU(b, pid) - srv0, events, containers
	}
	b.ResetTimer()
	acpu, _, _, ctrs := phase("announce")
	if v := os.Getenv("CONTAIN_BENCH_STEADY_PAUSE"); v != "" {
		// Time to attach a tracer (strace -c -f -p <pid>) to the steady
		// phase alone.
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(os.Stderr, "pid %d: steady phase in %v\n", os.Getpid(), d)
		time.Sleep(d)
	}
	if path := os.Getenv("CONTAIN_BENCH_STEADY_CPUPROFILE"); path != "" {
		pf, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	scpu, ssrv, events, _ := phase("steady")
	b.StopTimer()
	b.ReportMetric(float64(acpu.Microseconds())/float64(ctrs), "announce-cpu-µs/container")
	b.ReportMetric(float64(scpu.Nanoseconds())/float64(events), "cpu-ns/event")
	b.ReportMetric(float64(scpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(float64(ssrv.Microseconds())/float64(b.N), "server-cpu-µs/msg")
}

// waitConsumer returns the enricher's durable once Run created it.
func waitConsumer(b *testing.B, ctx context.Context, js jetstream.JetStream, durable string) jetstream.Consumer {
	var cons jetstream.Consumer
	testenv.WaitForState(b, time.Minute, "the enricher's durable", func() (bool, string) {
		var err error
		cons, err = js.Consumer(ctx, containv1.StreamRaw, durable)
		return err == nil, fmt.Sprint(err)
	})
	return cons
}

// procCPU is process pid's CPU time (ReadProcUsage).
func procCPU(b *testing.B, pid int) time.Duration {
	u, err := ReadProcUsage(pid)
	if err != nil {
		b.Fatal(err)
	}
	return u.CPU
}

// runPacer is BenchmarkEnricherPaced's publisher: it encodes each host's
// first batch (its containers' announcements) and steady batches in turn
// over the hosts, says "ready", then for each line "announce" or
// "steady" read from in publishes that phase's batches at rate a second
// on core NATS (the raw stream stores them) and says "done <batches>
// <events> <container events>".
func runPacer(spec string, in io.Reader, out io.Writer) error {
	f := strings.Fields(spec)
	if len(f) != 3 {
		return fmt.Errorf("%s=%q: want <url> <rate> <batches>", pacerEnv, spec)
	}
	rate, err1 := strconv.Atoi(f[1])
	steady, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%s=%q: want <url> <rate> <batches>", pacerEnv, spec)
	}
	nc, err := nats.Connect(f[0], nats.WriteBufferSize(256<<10))
	if err != nil {
		return err
	}
	defer nc.Close()
	type phaseMsgs struct {
		msgs               []*nats.Msg
		events, containers int
	}
	batchEvents := pacedBatch
	if v := os.Getenv("CONTAIN_BENCH_BATCH"); v != "" {
		if batchEvents, err = strconv.Atoi(v); err != nil || batchEvents < 1 {
			return fmt.Errorf("CONTAIN_BENCH_BATCH=%q: want a positive size", v)
		}
	}
	cfg := DefaultGeneratorConfig()
	cfg.Hosts, cfg.ContainersPerHost, cfg.DeviationFraction = pacedHosts, pacedContainers, 0
	start := time.Unix(1_700_000_000, 0)
	hosts := make([]*hostSim, cfg.Hosts)
	for i := range hosts {
		hosts[i] = newHostSim(cfg, i, start)
	}
	phases := map[string]*phaseMsgs{"announce": {}, "steady": {}}
	add := func(p *phaseMsgs, h *hostSim, k int) error {
		evs, _, ctrs := h.batch(batchEvents, start.Add(time.Duration(k)*time.Second))
		msg, err := bus.NewMsg(containv1.RawSubject(h.name), &containv1.Batch{SchemaVersion: containv1.SchemaVersion,
			Host: h.name, Stage: "collector", ProducerId: h.name, Seq: uint64(k + 1), Events: evs})
		if err != nil {
			return err
		}
		p.msgs = append(p.msgs, msg)
		p.events += len(evs)
		p.containers += ctrs
		return nil
	}
	for _, h := range hosts {
		if err := add(phases["announce"], h, 0); err != nil {
			return err
		}
	}
	for i := range steady {
		if err := add(phases["steady"], hosts[i%len(hosts)], 1+i/len(hosts)); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "ready")
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		p := phases[lines.Text()]
		if p == nil {
			return fmt.Errorf("unknown phase %q", lines.Text())
		}
		t := time.NewTicker(time.Second / time.Duration(rate))
		begin := time.Now()
		for sent := 0; sent < len(p.msgs); {
			<-t.C
			due := min(len(p.msgs), int(time.Since(begin).Seconds()*float64(rate)))
			for ; sent < due; sent++ {
				if err := nc.PublishMsg(p.msgs[sent]); err != nil {
					return err
				}
			}
		}
		t.Stop()
		if err := nc.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(out, "done %d %d %d\n", len(p.msgs), p.events, p.containers)
	}
	return lines.Err()
}
