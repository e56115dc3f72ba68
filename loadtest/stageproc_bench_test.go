package loadtest

import (
	"context"
	"fmt"
	"runtime"
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

// stageProcEvents is how many events each run of BenchmarkStageProcessCPU
// hands the stage.
const stageProcEvents = 200_000

// stageStream is the generator's default fleet (4 hosts × 25 containers,
// 10 images) at 10,000 events/s as batches of n events, each host's
// batches in wall-time order (one every n/2,500 s), the hosts
// interleaved; enriched carries each event's image as the enricher sets
// it (the analyzer's input) and drops the containers' announcements.
func stageStream(n, events int, enriched bool) (subjects []string, batches []*containv1.Batch) {
	cfg := DefaultGeneratorConfig()
	cfg.DeviationFraction = 0
	start := time.Unix(1_700_000_000, 0)
	hosts := make([]*hostSim, cfg.Hosts)
	ctrs := map[string]*ctrSim{}
	for i := range hosts {
		hosts[i] = newHostSim(cfg, i, start)
		for _, c := range hosts[i].containers {
			ctrs[c.id] = c
		}
	}
	every := time.Duration(float64(n) / (cfg.Rate / float64(cfg.Hosts)) * float64(time.Second))
	for k, total := 0, 0; total < events; k++ {
		for _, h := range hosts {
			evs, _, _ := h.batch(n, start.Add(time.Duration(k)*every))
			subject := containv1.RawSubject(h.name)
			if enriched {
				subject = containv1.EventsSubject(h.name)
				kept := evs[:0]
				for _, ev := range evs {
					if ev.Kind == containv1.Kind_KIND_CONTAINER {
						continue
					}
					c := ctrs[ev.ContainerId]
					ev.ImageRef, ev.ImageDigest = imageRef(c.image), imageDigest(c.image)
					kept = append(kept, ev)
				}
				evs = kept
			}
			stage := "collector"
			if enriched {
				stage = metrics.StageEnricher
			}
			subjects = append(subjects, subject)
			batches = append(batches, &containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: h.name, Stage: stage,
				ProducerId: h.name, Seq: uint64(k + 1), Events: evs})
			total += len(evs)
		}
	}
	return subjects, batches
}

// BenchmarkStageProcessCPU is a stage's CPU per event as a process: the
// enricher or the analyzer (unpartitioned) consuming a backlog of
// 200,000 events of the generator's fleet in batches of 20, 50 and 100
// from a nats-server in its own process (so the server's CPU is not
// counted), with everything the stage does around its handler: fetching,
// acknowledging, publishing (the enricher's output batches, the
// analyzer's baselines), GC. The backlog is published and acknowledged
// before the stage starts; cpu-ns/event is this process's CPU time
// (getrusage) from the stage's start to its durable consumer having
// nothing pending, divided by the events. Run with -benchtime 1x.
func BenchmarkStageProcessCPU(b *testing.B) {
	for _, stage := range []string{metrics.StageEnricher, metrics.StageAnalyzer} {
		for _, n := range []int{20, 50, 100} {
			b.Run(fmt.Sprintf("%s/n=%d", stage, n), func(b *testing.B) {
				// Encoded once: the benchmark keeps bytes only, so the
				// stage's garbage collections do not mark 200,000 events.
				subjects, batches := stageStream(n, stageProcEvents, stage == metrics.StageAnalyzer)
				events := 0
				msgs := make([]*nats.Msg, len(batches))
				for i, bt := range batches {
					events += len(bt.Events)
					msg, err := bus.NewMsg(subjects[i], bt)
					if err != nil {
						b.Fatal(err)
					}
					msgs[i] = msg
				}
				subjects, batches = nil, nil
				for range b.N {
					runStageProc(b, stage, msgs, events)
				}
			})
		}
	}
}

func runStageProc(b *testing.B, stage string, msgs []*nats.Msg, events int) {
	b.StopTimer()
	srv := testenv.StartNATSServer(b)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := DefaultConfig()
	cfg.Streams.MaxBytes = 256 << 20 // the solo server's file store is 4 GB
	if err := bus.EnsureStreams(ctx, js, cfg.Streams); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < len(msgs); i += 256 {
		if err := bus.PublishAll(ctx, js, msgs[i:min(i+256, len(msgs))], "bench"); err != nil {
			b.Fatal(err)
		}
	}
	m := metrics.New()
	log := testenv.Discard()
	var run func(context.Context) error
	stream, durable := containv1.StreamRaw, cfg.Enricher.Durable
	switch stage {
	case metrics.StageEnricher:
		en, err := enricher.New(cfg.Enricher, js, m, log)
		if err != nil {
			b.Fatal(err)
		}
		run = en.Run
	default:
		ac := cfg.Analyzer
		ac.Host = "bench"
		an, err := analyzer.New(ac, js, m, log)
		if err != nil {
			b.Fatal(err)
		}
		run = an.Run
		stream, durable = containv1.StreamEvents, ac.Durable
	}
	runtime.GC()
	before := processCPU()
	b.StartTimer()
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	testenv.WaitForState(b, 5*time.Minute, "the stage's consumer drained", func() (bool, string) {
		cons, err := js.Consumer(ctx, stream, durable)
		if err != nil {
			return false, err.Error()
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream > 0,
			fmt.Sprintf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
	})
	used := processCPU() - before
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(used.Nanoseconds())/float64(events), "cpu-ns/event")
	b.ReportMetric(float64(events)/float64(len(msgs)), "events/batch")
}
