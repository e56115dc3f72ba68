package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

// arenaEvents are events with every field of the kinds the arena reads
// set, and one of each other case: a container event, an event with no
// body, a syscall without a process.
func arenaEvents() []*containv1.Event {
	ids := containv1.NewIDGen()
	proc := func() *containv1.Process {
		return &containv1.Process{Pid: 11, Tgid: 10, Ppid: 1, NsPid: 2, Uid: 1000, Gid: 1001, Euid: 1002, Comm: "sh",
			Origin: containv1.Origin_ORIGIN_EXEC_SESSION, SessionTgid: 9}
	}
	env := func(kind containv1.Kind) *containv1.Event {
		return &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: "c1", ContainerName: "web", ImageRef: "demo:1",
			ImageDigest: "sha256:aa", MonoNs: 1 << 40, WallNs: -5, Kind: kind, SchemaVersion: 1, CgroupId: 77, ProfileRef: "p/web"}
	}
	exec := env(containv1.Kind_KIND_EXEC)
	exec.Body = &containv1.Event_Exec{Exec: &containv1.Exec{Proc: proc(), Filename: "/bin/sh", Argv: []string{"sh", "-c", "héllo"},
		ArgvTruncated: true, Argc: 3, Cwd: "/", Exe: "/bin/busybox", NonUtf8: true, ExeMemfd: true, ExeDeleted: true,
		ExeWritable: true, StdioInet: true}}
	sys := env(containv1.Kind_KIND_SYSCALL)
	sys.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Proc: proc(), Mode: containv1.Syscall_MODE_SEQUENCE, Nr: 59,
		Name: "execve", Args: []uint64{1, 1 << 63}, Ret: -11, Count: 3, Sequence: []uint32{0, 300, 1 << 31}}}
	nosys := env(containv1.Kind_KIND_SYSCALL)
	nosys.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Name: "read"}}
	net := env(containv1.Kind_KIND_NETWORK)
	net.Body = &containv1.Event_Network{Network: &containv1.Network{Proc: proc(), Op: containv1.Network_OP_CONNECT,
		Protocol: containv1.Network_PROTOCOL_TCP, Family: 10, LocalAddr: []byte{10, 0, 0, 1}, LocalPort: 40000,
		RemoteAddr: []byte{10, 0, 0, 2}, RemotePort: 443, Result: -111}}
	file := env(containv1.Kind_KIND_FILE)
	file.Body = &containv1.Event_File{File: &containv1.File{Proc: proc(), Op: containv1.File_OP_RENAME, Path: "/a", NewPath: "/b",
		Flags: 0o101, Mode: 0o644, Result: -2, NonUtf8: true, Uid: 5, Gid: 6, PathUnresolved: true, NewPathUnresolved: true,
		PathRelative: true, ResolvedPath: "/srv/a", Ino: 1 << 50, Dev: 8, Sensitive: true}}
	life := env(containv1.Kind_KIND_PROCESS)
	life.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: proc(), Op: containv1.ProcessLifecycle_OP_EXIT,
		ChildTgid: 12, ExitCode: -1}}
	ctr := env(containv1.Kind_KIND_CONTAINER)
	ctr.Body = &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc", Labels: map[string]string{"k": "v"}}}
	bare := env(containv1.Kind_KIND_EXEC)
	return []*containv1.Event{exec, sys, nosys, net, file, life, ctr, bare}
}

// arenaSeeds are the FuzzArenaMatchesDecode seeds: FuzzScanBatch's, a
// batch of arenaEvents, a body given in two pieces (merged), two bodies
// (the last wins), an event with an unknown field.
func arenaSeeds(t testing.TB) [][]byte {
	out := scanSeeds()
	p := bus.NewProducer("h1", "enricher")
	data, err := bus.Encode(p.Batch(arenaEvents()))
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, data)
	// Event{kind=exec, exec{filename=/x, proc{pid=1}}, exec{argv=a, proc{tgid=2}}, syscall{name=r}, exec{argc=1}}
	ev := []byte{0x48, 0x01, 0xa2, 0x01, 0x09, 0x12, 0x02, '/', 'x', 0x0a, 0x02, 0x08, 0x01,
		0xa2, 0x01, 0x07, 0x1a, 0x01, 'a', 0x0a, 0x02, 0x10, 0x02}
	out = append(out, append([]byte{0x08, 0x01, 0x32, byte(len(ev))}, ev...))
	ev2 := append(append([]byte{}, ev...), 0xaa, 0x01, 0x03, 0x22, 0x01, 'r', 0xa2, 0x01, 0x02, 0x28, 0x01)
	out = append(out, append([]byte{0x08, 0x01, 0x32, byte(len(ev2))}, ev2...))
	ev3 := append(append([]byte{}, ev...), 0xf8, 0x01, 0x05) // unknown field 31
	out = append(out, append([]byte{0x08, 0x01, 0x32, byte(len(ev3))}, ev3...))
	return out
}

// TestArenaDecodesAsDecode: a batch of every kind decodes in the arena
// (the fast walk, the container event alone) as DecodeAliased decodes
// it, again after the arena held other batches, with no allocation once
// the arena has grown; each seed decodes alike.
func TestArenaDecodesAsDecode(t *testing.T) {
	seeds := arenaSeeds(t)
	var a bus.Arena
	for _, data := range seeds {
		a.Decode(data) // dirty the storage
	}
	for _, data := range seeds {
		a.Reset()
		checkArena(t, &a, data)
	}
	data := seeds[len(seeds)-4]
	a.Reset()
	if _, ok := bus.ArenaScan(&a, data); !ok {
		t.Fatal("the arena left a canonical batch to decoding")
	}
	fast := bus.NewProducer("h1", "enricher").Batch(arenaEvents()[:6])
	fastData, _ := bus.Encode(fast)
	if n := testing.AllocsPerRun(100, func() {
		a.Reset()
		if _, ok := bus.ArenaScan(&a, fastData); !ok {
			t.Fatal("not scanned")
		}
	}); n != 0 {
		t.Errorf("%.1f allocations per batch of the kinds the arena reads", n)
	}
}

// checkArena decodes data twice in a (two batches of one fetch) and
// holds both to DecodeAliased.
func checkArena(t *testing.T, a *bus.Arena, data []byte) {
	t.Helper()
	want, werr := bus.DecodeAliased(data)
	first, err := a.Decode(data)
	_, scanned := bus.ArenaScan(a, data)
	second, err2 := a.Decode(data)
	if (err == nil) != (werr == nil) || (err2 == nil) != (werr == nil) {
		t.Fatalf("arena: %v, %v; DecodeAliased: %v", err, err2, werr)
	}
	if werr != nil {
		if scanned {
			t.Fatalf("the arena's walk accepted what DecodeAliased refuses: %v", werr)
		}
		return
	}
	if !proto.Equal(first, want) || !proto.Equal(second, want) {
		t.Fatalf("arena decoded\n%v\n%v\nDecodeAliased\n%v", first, second, want)
	}
}

// FuzzArenaMatchesDecode holds Arena.Decode to DecodeAliased on any input:
// the same refusals, the same batch, also when the arena's storage held
// other batches before (Reset) and when two batches share it (one fetch);
// the arena's own walk never accepts what DecodeAliased refuses, and a
// canonical batch without unknown fields takes it.
func FuzzArenaMatchesDecode(f *testing.F) {
	seeds := arenaSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a bus.Arena
		for _, s := range seeds[len(seeds)-4:] {
			a.Decode(s)
		}
		a.Reset()
		checkArena(t, &a, data)
		b, err := bus.DecodeAliased(data)
		if err != nil || hasUnknown(b.ProtoReflect()) {
			return
		}
		canon, err := bus.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		a.Reset()
		got, ok := bus.ArenaScan(&a, canon)
		if !ok {
			t.Fatalf("the arena left a canonical batch to decoding: %v", b)
		}
		if !proto.Equal(got, b) {
			t.Fatalf("canonical: arena %v, decoded %v", got, b)
		}
	})
}

// TestConsumeReuseEvents: a consumer decoding into an arena (ReuseEvents)
// hands over every batch as published, fetch after fetch (the storage
// reused), also when the handler fails and the fetch is retried message
// by message; malformed and misbound messages are refused as without it.
func TestConsumeReuseEvents(t *testing.T) {
	_, nc, js := testenv.NATS(t)
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := bus.NewProducer("h1", "enricher")
	var want []*containv1.Event
	for i := range 30 {
		evs := arenaEvents()[i%5 : 6+i%3]
		want = append(want, evs...)
		if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), p.Batch(evs)); err != nil {
			t.Fatal(err)
		}
		switch i {
		case 7:
			if err := nc.Publish(containv1.EventsSubject("h1"), []byte("\xff\xfe not a batch")); err != nil {
				t.Fatal(err)
			}
		case 11:
			other := bus.NewProducer("h2", "enricher").Batch(arenaEvents()[:2])
			if err := bus.Publish(ctx, js, containv1.EventsSubject("h1"), other); err != nil {
				t.Fatal(err)
			}
		}
	}
	var (
		mu    sync.Mutex
		got   []*containv1.Event
		calls int
	)
	go func() {
		_ = bus.Consume(ctx, js, bus.ConsumerConfig{Stream: containv1.StreamEvents, Durable: "t", Stage: "test", Fetch: 4,
			RetryDelay: 20 * time.Millisecond, AliasPayload: true, ReuseEvents: true},
			func(ctx context.Context, batches []*containv1.Batch) error {
				mu.Lock()
				defer mu.Unlock()
				if calls++; calls == 2 {
					return errors.New("downstream unavailable")
				}
				for _, b := range batches {
					for _, ev := range b.Events {
						got = append(got, proto.Clone(ev).(*containv1.Event))
					}
				}
				return nil
			}, m, testenv.Logger(t))
	}()
	testenv.WaitFor(t, 10*time.Second, "all events consumed", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= len(want) })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("event %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if n := testutil.ToFloat64(m.Malformed.WithLabelValues("test")); n != 1 {
		t.Errorf("malformed %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.Refused.WithLabelValues("test", "host_mismatch")); n != 1 {
		t.Errorf("refused %v, want 1", n)
	}
}

// TestDictionaryReadByEveryDecoder: a batch with a container dictionary is
// read by the arena's walk and by ScanBatch (not left to the generated
// code), each giving Decode's events; a reference past the dictionary is
// refused by all.
func TestDictionaryReadByEveryDecoder(t *testing.T) {
	seeds := dictionarySeeds()
	good, bad := seeds[0], seeds[1]
	want, err := bus.Decode(good)
	if err != nil {
		t.Fatal(err)
	}
	if ev := want.Events[1]; ev.ContainerId != "c2" || ev.ImageRef != "own/ref:1" || ev.ContainerRef != 0 || want.Containers != nil {
		t.Fatalf("Decode read event 1 as %v", ev)
	}
	if ev := want.Events[0]; ev.ContainerName != "web" || ev.ProfileRef != "p@1" {
		t.Fatalf("Decode read event 0 as %v", ev)
	}
	var a bus.Arena
	got, ok := bus.ArenaScan(&a, good)
	if !ok {
		t.Fatal("the arena left a dictionary batch to decoding")
	}
	if !proto.Equal(got, want) {
		t.Fatalf("arena %v, Decode %v", got, want)
	}
	var wb bus.WireBatch
	if !bus.ScanBatch(good, &wb) || len(wb.Containers) != 2 {
		t.Fatalf("ScanBatch: %d containers", len(wb.Containers))
	}
	checkScanned(t, &wb, want)
	if _, err := bus.Decode(bad); err == nil {
		t.Fatal("Decode accepted a reference past the dictionary")
	}
	if _, err := a.Decode(bad); err == nil {
		t.Fatal("the arena accepted a reference past the dictionary")
	}
	if bus.ScanBatch(bad, &wb) {
		t.Fatal("ScanBatch accepted a reference past the dictionary")
	}
}
