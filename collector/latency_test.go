package collector

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// BenchmarkExecToPublished measures how long an exec event takes from the
// kernel hook (its mono_ns) to a JetStream consumer of the raw stream, with
// the collector's default configuration, for a container exec'ing ~40
// times a second for CONTAIN_LATENCY_SECONDS (default 3).
// CONTAIN_WORKLOAD_WAKEUP, CONTAIN_WORKLOAD_POLL, CONTAIN_WORKLOAD_FLUSH and
// CONTAIN_WORKLOAD_COALESCE change the configuration as in
// BenchmarkSyscallOverheadWorkload. Run with -benchtime=1x.
func BenchmarkExecToPublished(b *testing.B) {
	testenv.RequireRoot(b)
	secs := envInt("CONTAIN_LATENCY_SECONDS", 3)
	_, _, js := testenv.NATS(b)
	cfg := DefaultConfig()
	if d, err := time.ParseDuration(os.Getenv("CONTAIN_WORKLOAD_FLUSH")); err == nil {
		cfg.FlushInterval = d
	}
	if d, err := time.ParseDuration(os.Getenv("CONTAIN_WORKLOAD_COALESCE")); err == nil {
		cfg.WakeupCoalesce = d
	}
	if k, ok := os.LookupEnv("CONTAIN_WORKLOAD_WAKEUP"); ok {
		cfg.WakeupKinds = strings.FieldsFunc(k, func(r rune) bool { return r == ',' })
	}
	if d, err := time.ParseDuration(os.Getenv("CONTAIN_WORKLOAD_POLL")); err == nil {
		cfg.PollInterval = d
	}
	ctr := testenv.RunContainer(b, "latency", testenv.ContainerSpec{
		Args: []string{"/bin/sh", "-c", "while true; do /bin/true; /bin/sleep 0.05; done"},
	})
	c, err := New(cfg, js, metrics.New(), testenv.Discard())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	cons, err := js.OrderedConsumer(context.Background(), containv1.StreamRaw, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var lat []float64
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		now := monoNow()
		batch, err := bus.Decode(msg.Data())
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range batch.Events {
			if ev.Kind == containv1.Kind_KIND_EXEC && ev.ContainerId == ctr.ID && now > ev.MonoNs {
				lat = append(lat, float64(now-ev.MonoNs)/1e6)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	for b.Loop() {
		time.Sleep(time.Duration(secs) * time.Second)
	}
	mu.Lock()
	s := slices.Clone(lat)
	mu.Unlock()
	if len(s) < 10 {
		b.Fatalf("only %d exec events received", len(s))
	}
	slices.Sort(s)
	p := func(q float64) float64 { return s[int(q*float64(len(s)-1))] }
	fmt.Printf("exec->published: n=%d p50=%.2fms p99=%.2fms max=%.2fms wakeup_kinds=%v poll=%v flush=%v coalesce=%v\n", len(s), p(0.5), p(0.99), s[len(s)-1], cfg.WakeupKinds, cfg.PollInterval, cfg.FlushInterval, cfg.WakeupCoalesce)
	b.ReportMetric(p(0.5), "p50_ms")
	b.ReportMetric(p(0.99), "p99_ms")
}
