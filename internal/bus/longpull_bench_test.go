package bus_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// BenchmarkConsumePaced: a consumer configured as an analyzer's
// partition consumer (Eager, Fetch 16, events decoded into reused
// storage) takes b.N batches of 80 events (~20 KB) published at a steady
// 400 batches/s (the fleet's ~200 per analyzer consumer, doubled), the
// case where an Eager consumer runs dry between messages. The server is
// its own process. Three variants run in interleaved rounds
// (CONTAIN_BENCH_ROUNDS, default 5): publish_only (the pacer alone, no
// consumer), request_per_fetch (the path before design 032: jetstream
// Fetch/FetchNoWait per fetch) and long_pull. Logged per round and
// reported as medians, per batch: this process's CPU (consumer and
// pacer), the server's, handler calls; and the consumer's CPU (this
// process's minus publish_only's) and the server's extra CPU (minus
// publish_only's) of long_pull over request_per_fetch.
//
//	go test ./internal/bus -run '^$' -bench ConsumePaced -benchtime 3000x
func BenchmarkConsumePaced(b *testing.B) {
	srv := testenv.StartNATSServer(b)
	nc, js, err := bus.Connect(srv.URL, b.Name(), testenv.Discard())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.StreamsConfig{}); err != nil {
		b.Fatal(err)
	}
	rounds := 5
	if v := os.Getenv("CONTAIN_BENCH_ROUNDS"); v != "" {
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 1 {
			b.Fatalf("CONTAIN_BENCH_ROUNDS=%q: want a positive count", v)
		}
	}
	payload := pacedBatch(b, 80)
	pid := strconv.Itoa(srv.Pid())
	variants := []string{"publish_only", "request_per_fetch", "long_pull"}
	res := map[string][]pacedResult{}
	b.ResetTimer()
	for r := range rounds {
		for _, v := range variants {
			pr := pacedRound(b, ctx, js, nc, payload, pid, v)
			b.Logf("round %d %-17s cpu %6.1f µs/msg, server %6.1f µs/msg, %.2f calls/msg", r, v, pr.cpu/1e3, pr.server/1e3, pr.calls)
			res[v] = append(res[v], pr)
		}
	}
	b.StopTimer()
	med := func(v string, f func(pacedResult) float64) float64 {
		xs := make([]float64, 0, rounds)
		for _, pr := range res[v] {
			xs = append(xs, f(pr))
		}
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	cpu := func(p pacedResult) float64 { return p.cpu }
	srvCPU := func(p pacedResult) float64 { return p.server }
	for _, v := range variants {
		b.ReportMetric(med(v, cpu), v+"-cpu-ns/msg")
		b.ReportMetric(med(v, srvCPU), v+"-server-ns/msg")
		b.ReportMetric(med(v, func(p pacedResult) float64 { return p.calls }), v+"-calls/msg")
	}
	// Per round, so that a round's noise meets its own baseline.
	ratio := func(f func(pacedResult) float64) float64 {
		xs := make([]float64, 0, rounds)
		for i := range rounds {
			base := f(res["publish_only"][i])
			xs = append(xs, (f(res["long_pull"][i])-base)/(f(res["request_per_fetch"][i])-base))
		}
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	b.ReportMetric(ratio(cpu), "consumer-cpu-new/old")
	b.ReportMetric(ratio(srvCPU), "server-cpu-new/old")
}

// pacedResult is one round of one variant of BenchmarkConsumePaced, per
// batch.
type pacedResult struct{ cpu, server, calls float64 }

// pacedRound runs one variant of BenchmarkConsumePaced for b.N batches.
func pacedRound(b *testing.B, ctx context.Context, js jetstream.JetStream, nc *nats.Conn, payload []byte, pid, variant string) pacedResult {
	st, err := js.Stream(ctx, containv1.StreamEvents)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Purge(ctx); err != nil {
		b.Fatal(err)
	}
	cfg := bus.ConsumerConfig{
		Stream: containv1.StreamEvents, Durable: fmt.Sprintf("paced_%d", time.Now().UnixNano()), Stage: "test",
		Fetch: 16, Eager: true, AliasPayload: true, ReuseEvents: true, DeliverNew: true,
	}
	if variant == "request_per_fetch" {
		cfg = bus.RequestPerFetch(cfg)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var handled, calls, events atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		if variant == "publish_only" {
			return
		}
		_ = bus.Consume(cctx, js, cfg, func(_ context.Context, bs []*containv1.Batch) error {
			calls.Add(1)
			for _, bt := range bs {
				events.Add(int64(len(bt.Events)))
			}
			handled.Add(int64(len(bs)))
			return nil
		}, metrics.New(), testenv.Discard())
	}()
	time.Sleep(300 * time.Millisecond) // the durable created, its pull waiting
	cpu0, srv0 := cpuTime(), procCPUTime(b, pid)
	pace(b, nc, payload, b.N, 400)
	if variant == "publish_only" {
		handled.Store(int64(b.N))
		events.Store(80 * int64(b.N))
	}
	testenv.WaitFor(b, time.Minute, "every batch handled", func() bool { return handled.Load() >= int64(b.N) })
	cpu, srvCPU := cpuTime()-cpu0, procCPUTime(b, pid)-srv0
	cancel()
	<-done
	if events.Load() != 80*handled.Load() {
		b.Fatalf("%d events in %d batches", events.Load(), handled.Load())
	}
	if variant != "publish_only" {
		if err := js.DeleteConsumer(ctx, cfg.Stream, cfg.Durable); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N)
	return pacedResult{cpu: float64(cpu) / n, server: float64(srvCPU) / n, calls: float64(calls.Load()) / n}
}

// pace publishes payload n times on core NATS at rate a second, evenly.
func pace(b *testing.B, nc *nats.Conn, payload []byte, n, rate int) {
	subj := containv1.EventsSubject("h1")
	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
	start := time.Now()
	for sent := 0; sent < n; {
		<-t.C
		due := min(n, int(time.Since(start).Seconds()*float64(rate)))
		for ; sent < due; sent++ {
			if err := nc.Publish(subj, payload); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
}

// pacedBatch is the encoding of a batch of host h1 with n exec events,
// ~250 bytes each.
func pacedBatch(b *testing.B, n int) []byte {
	ids := containv1.NewIDGen()
	evs := make([]*containv1.Event, n)
	for i := range evs {
		evs[i] = execEvent(ids, "c"+strings.Repeat("0", 63), "/usr/bin/"+strings.Repeat("x", 100))
	}
	data, err := bus.Encode(bus.NewProducer("h1", "test").Batch(evs))
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// procCPUTime is the user+system CPU time of process pid in ns (10 ms
// ticks).
func procCPUTime(b *testing.B, pid string) int64 {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%s/stat: %q", pid, data)
	}
	return (ut + st) * int64(10*time.Millisecond)
}
