package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
	"github.com/containsec/contain/store"
)

// benchHistory makes n events over 50 containers: execs, syscalls,
// connects and file writes in turn, 1 ms apart.
func benchHistory(n int, t0 time.Time) []*containv1.Event {
	ids := containv1.NewIDGen()
	peer := netip.MustParseAddr("::ffff:10.1.2.3").As16()
	out := make([]*containv1.Event, n)
	for i := range out {
		p := &containv1.Process{Pid: uint32(100 + i%7), Tgid: uint32(100 + i%7), Ppid: 1, Comm: "worker"}
		ev := &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: fmt.Sprintf("c-%02d", i%50), ContainerName: "web",
			ImageRef: "demo:1", ImageDigest: "sha256:d", WallNs: t0.Add(time.Duration(i) * time.Millisecond).UnixNano(),
			SchemaVersion: containv1.SchemaVersion}
		switch i % 4 {
		case 0:
			ev.Kind, ev.Body = containv1.Kind_KIND_EXEC, &containv1.Event_Exec{Exec: &containv1.Exec{Proc: p, Filename: "/bin/sh", Argv: []string{"sh", "-c", "true"}}}
		case 1:
			ev.Kind, ev.Body = containv1.Kind_KIND_SYSCALL, &containv1.Event_Syscall{Syscall: &containv1.Syscall{Proc: p, Nr: 0, Name: "read", Count: 12}}
		case 2:
			ev.Kind, ev.Body = containv1.Kind_KIND_NETWORK, &containv1.Event_Network{Network: &containv1.Network{Proc: p, Op: containv1.Network_OP_CONNECT,
				Protocol: containv1.Network_PROTOCOL_TCP, Family: 2, RemoteAddr: peer[:], RemotePort: 443}}
		default:
			ev.Kind, ev.Body = containv1.Kind_KIND_FILE, &containv1.Event_File{File: &containv1.File{Proc: p, Op: containv1.File_OP_OPEN_WRITE, Path: "/tmp/out"}}
		}
		out[i] = ev
	}
	return out
}

// BenchmarkForensicsRates measures, on one stored history of 100k events
// (real ClickHouse, embedded NATS), the rates of: reading events back
// (store.Reader.Events), exporting them as NDJSON and as Parquet, and
// replaying them into a core NATS subject and into a JetStream stream
// (batches of 256, no rate limit). The configurations run interleaved
// in one process, so their ratios are comparable on a loaded machine.
func BenchmarkForensicsRates(b *testing.B) {
	const n = 100_000
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	_, cfg := seedStore(b, benchHistory(n, t0)...)
	r, err := store.OpenReader(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	_, nc, js := testenv.NATS(b)
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamsConfig{}); err != nil {
		b.Fatal(err)
	}
	sel := store.Selection{From: t0.Add(-time.Second)}
	ctx := context.Background()
	run := func(b *testing.B, fn func(*containv1.Event) error, done func() error) {
		total := 0
		for b.Loop() {
			got := 0
			if err := r.Events(ctx, sel, func(ev *containv1.Event) error { got++; return fn(ev) }); err != nil {
				b.Fatal(err)
			}
			if err := done(); err != nil {
				b.Fatal(err)
			}
			if got != n {
				b.Fatalf("read %d events, want %d", got, n)
			}
			total += got
		}
		b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
	}
	nop := func() error { return nil }
	b.Run("read", func(b *testing.B) {
		run(b, func(*containv1.Event) error { return nil }, nop)
	})
	for _, format := range []string{formatNDJSON, formatParquet} {
		b.Run("export="+format, func(b *testing.B) {
			var ew *exportWriter
			run(b, func(ev *containv1.Event) error {
				if ew == nil {
					ew = newExportWriter(io.Discard, format)
				}
				return ew.write(ev)
			}, func() error { err := ew.close(); ew = nil; return err })
		})
	}
	for _, sink := range []string{"core", "jetstream"} {
		b.Run("replay="+sink, func(b *testing.B) {
			subject := "bench.replay"
			if sink == "jetstream" {
				subject = containv1.EventsSubject("bench-replay")
			}
			rp := &replayer{batch: 256, pub: newPublisher(nc, js, subject, "bench")}
			run(b, rp.event, func() error {
				if err := rp.flush(ctx); err != nil {
					return err
				}
				return rp.pub.finish()
			})
		})
	}
}
