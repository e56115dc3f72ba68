package enricher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/analyzer"
	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/internal/metrics"
	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

const testDigest2 = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

// oneFetch is a fetch of one message, checked as bus.Messages checks it:
// scanned when bus.ScanBatch and BoundTo accept it, else decoded and
// refused when Decode or CheckHost refuse it (bus's FuzzScanBatch holds
// the two to each other).
type oneFetch struct {
	subject string
	data    []byte
	refused bool
}

func (f *oneFetch) Len() int { return 1 }

func (f *oneFetch) Wire(_ int, wb *bus.WireBatch) bool {
	return bus.ScanBatch(f.data, wb) && wb.BoundTo(f.subject)
}

func (f *oneFetch) Batch(int) *containv1.Batch {
	b, err := bus.DecodeAliased(f.data)
	if err != nil || bus.CheckHost(f.subject, b) != nil {
		f.refused = true
		return nil
	}
	return b
}

// refMessages is the decoded path on one message, as bus.Consume and the
// enricher's handler did before the wire path: Decode, CheckHost, then
// enrichBatch, route and encoding (messages).
func refMessages(ctx context.Context, e *Enricher, subject string, data []byte) (msgs []*nats.Msg, sizes []int, refused bool, err error) {
	b, err := bus.DecodeAliased(data)
	if err != nil || bus.CheckHost(subject, b) != nil {
		return nil, nil, true, nil
	}
	msgs, sizes, err = e.messages(ctx, []*containv1.Batch{b})
	return msgs, sizes, false, err
}

// wireTestEnricher is an enricher whose cache knows four containers
// (with and without digest, reference, name and group), with the
// containers bucket kv, routing with router (nil: none).
func wireTestEnricher(kv any, router Router, limit int) *Enricher {
	e := benchEnricher(nil, 0)
	switch kv := kv.(type) {
	case jetstream.KeyValue:
		e.containers = kv
	case memKV:
		e.containers = memKVFull{m: kv}
	}
	e.services, e.maxPayload = map[svcKey]*svcProfile{}, limit
	e.SetRouter(router)
	e.profiles[testDigest] = testDigest + "@3"
	e.store(ContainerImage{Host: "h1", ContainerID: "c0", Name: "web-0", ImageRef: "registry.local/shop/web:1", ImageDigest: testDigest, Group: "compose:shop/web"})
	e.store(ContainerImage{Host: "h1", ContainerID: "c1", ImageRef: "registry.local/shop/api:2"})
	e.store(ContainerImage{Host: "h1", ContainerID: "c2", Name: "db", ImageDigest: testDigest2})
	e.store(ContainerImage{Host: "h1", ContainerID: "c3", Name: "cache", ImageRef: "redis:7", ImageDigest: testDigest2})
	return e
}

// routers are the routings the equivalence is checked under.
func routers() []Router {
	out := []Router{nil}
	for _, mode := range []string{analyzer.GroupByDigest, analyzer.GroupByRepository, analyzer.GroupByCompose} {
		out = append(out, analyzer.NewRouter(analyzer.Config{GroupBy: mode, Partitions: 3}))
	}
	return append(out, groupRouter{n: 100})
}

// checkWireMatches runs the decoded path on ref and the wire path on got
// (enrichers in the same state) over one message and fails unless they
// refuse alike, fail alike, publish the same messages (subjects,
// Nats-Msg-Ids, batches equal once decoded), count alike and leave the
// same container cache.
func checkWireMatches(t *testing.T, ref, got *Enricher, subject string, data []byte) (messages int) {
	t.Helper()
	ctx := context.Background()
	wantMsgs, wantSizes, wantRefused, wantErr := refMessages(ctx, ref, subject, data)
	f := &oneFetch{subject: subject, data: data}
	gotMsgs, gotSizes, gotErr := got.fetchMessages(ctx, f)
	if f.refused != wantRefused || (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("wire path refused %v, error %v; decoded path refused %v, error %v", f.refused, gotErr, wantRefused, wantErr)
	}
	if gotErr != nil {
		return 0
	}
	if len(gotMsgs) != len(wantMsgs) || !slices.Equal(gotSizes, wantSizes) {
		t.Fatalf("wire path: %d messages of %v events, decoded path: %d of %v", len(gotMsgs), gotSizes, len(wantMsgs), wantSizes)
	}
	for i, w := range wantMsgs {
		g := gotMsgs[i]
		schema := g.Header.Get(bus.HeaderSchema)
		if schema == strconv.Itoa(containv1.SchemaVersionDictionary) && got.cfg.ContainerDictionary {
			schema = w.Header.Get(bus.HeaderSchema) // checked with the batch below
		}
		if g.Subject != w.Subject || g.Header.Get(jetstream.MsgIDHeader) != w.Header.Get(jetstream.MsgIDHeader) ||
			schema != w.Header.Get(bus.HeaderSchema) || g.Header.Get(bus.HeaderContentType) != w.Header.Get(bus.HeaderContentType) {
			t.Fatalf("message %d: wire path %s %v, decoded path %s %v", i, g.Subject, g.Header, w.Subject, w.Header)
		}
		gb, err := bus.Decode(g.Data)
		if err != nil {
			t.Fatalf("message %d: the wire path's output does not decode: %v", i, err)
		}
		wb, err := bus.Decode(w.Data)
		if err != nil {
			t.Fatal(err)
		}
		// The wire path writes a container dictionary (the decoded
		// path does not): the same events once decoded.
		if gb.SchemaVersion == containv1.SchemaVersionDictionary && got.cfg.ContainerDictionary {
			if g.Header.Get(bus.HeaderSchema) != strconv.Itoa(containv1.SchemaVersionDictionary) {
				t.Fatalf("message %d: a dictionary batch with header %s %q", i, bus.HeaderSchema, g.Header.Get(bus.HeaderSchema))
			}
			gb.SchemaVersion = wb.SchemaVersion
			wireDictionaryMsgs.Add(1)
		}
		if !proto.Equal(gb, wb) {
			t.Fatalf("message %d:\nwire path    %v\ndecoded path %v", i, gb, wb)
		}
	}
	for _, c := range []struct {
		name     string
		got, ref float64
	}{
		{"enriched", testutil.ToFloat64(got.em.enriched), testutil.ToFloat64(ref.em.enriched)},
		{"unknown", testutil.ToFloat64(got.em.unknown), testutil.ToFloat64(ref.em.unknown)},
		{"host", testutil.ToFloat64(got.em.host), testutil.ToFloat64(ref.em.host)},
	} {
		if c.got != c.ref {
			t.Fatalf("%s events: wire path %v, decoded path %v", c.name, c.got, c.ref)
		}
	}
	if len(got.cache) != len(ref.cache) {
		t.Fatalf("wire path caches %d containers, decoded path %d", len(got.cache), len(ref.cache))
	}
	for k, en := range ref.cache {
		if g := got.cache[k]; g == nil || !reflect.DeepEqual(g.rec, en.rec) || g.profileRef != en.profileRef {
			t.Fatalf("container %v: wire path %+v, decoded path %+v", k, g, en)
		}
	}
	return len(gotMsgs)
}

// wireBuckets are the containers buckets of the decoded (ref) and the
// wire path's enrichers; both see the same puts as long as the paths
// match.
// The server runs in its own process: an embedded one's goroutines
// would make the fuzzer's coverage of each input unstable.
func wireBuckets(t testing.TB) (ref, wire jetstream.KeyValue) {
	srv := testenv.StartNATSServer(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var kvs [2]jetstream.KeyValue
	for i, name := range []string{"wire_ref", "wire_new"} {
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, Storage: jetstream.MemoryStorage, History: 1})
		if err != nil {
			t.Fatal(err)
		}
		kvs[i] = kv
	}
	return kvs[0], kvs[1]
}

// randomBatch is a raw batch of host h1 in runs of one container's events:
// known and unknown containers, host events, container events (some
// announcing a known container anew, with compose labels), events whose
// collector already set image, digest, profile or name (unless bare),
// an event about another host now and then (unless bound).
// At most maxEvents events (about), each exec's argument up to maxArg
// bytes.
func randomBatch(r *rand.Rand, bare, bound bool, maxEvents, maxArg int) *containv1.Batch {
	ids := containv1.NewIDGen()
	var evs []*containv1.Event
	for len(evs) < 1+r.IntN(maxEvents) {
		ctr := []string{"", "c0", "c1", "c2", "c3", "c4", "c5"}[r.IntN(7)]
		host := []string{"", "h1", "h1", "h2"}[r.IntN(4)]
		if bound && host == "h2" {
			host = "h1"
		}
		for range 1 + r.IntN(min(6, maxEvents)) {
			ev := &containv1.Event{Id: ids.Next(), Host: host, ContainerId: ctr, MonoNs: r.Uint64(), WallNs: r.Int64(), SchemaVersion: 1,
				Kind: containv1.Kind_KIND_EXEC, Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/sh", Argv: []string{"sh", strings.Repeat("x", r.IntN(maxArg+1))}}}}
			if !bare && r.IntN(4) == 0 {
				ev.ImageRef, ev.ImageDigest, ev.ProfileRef, ev.ContainerName = "collector/ref:1", testDigest2, "p@1", "named"
			}
			switch r.IntN(10) {
			case 0:
				ev.Kind = containv1.Kind_KIND_CONTAINER
				img := []string{"", "registry.local/shop/web:2", "shop/new:1"}[r.IntN(3)]
				ev.Body = &containv1.Event_Container{Container: &containv1.ContainerInfo{Runtime: "runc", ImageRef: img,
					ImageDigest: []string{"", testDigest, testDigest2}[r.IntN(3)],
					Labels:      map[string]string{"com.docker.compose.project": "shop", "com.docker.compose.service": fmt.Sprint("svc", r.IntN(3))}}}
			case 1:
				ev.Kind = containv1.Kind_KIND_SYSCALL
				ev.Body = &containv1.Event_Syscall{Syscall: &containv1.Syscall{Name: "read", Args: []uint64{1, 2}, Sequence: []uint32{3}}}
			}
			evs = append(evs, ev)
		}
	}
	return &containv1.Batch{SchemaVersion: 1, Host: "h1", Stage: "collector", ProducerId: "p1", Seq: r.Uint64N(1000), Events: evs}
}

// TestWireMatchesDecoded: on random batches under every routing, and with
// a payload limit small enough to split, the wire path publishes what the
// decoded path publishes (checkWireMatches), refuses what it refuses
// (events about another host, a malformed batch) and splits where it
// splits.
func TestWireMatchesDecoded(t *testing.T) {
	refKV, wireKV := wireBuckets(t)
	r := rand.New(rand.NewPCG(1, 2))
	subject := containv1.RawSubject("h1")
	for ri, router := range routers() {
		for _, limit := range []int{0, 6 << 10} {
			t.Run(fmt.Sprintf("router%d/limit=%d", ri, limit), func(t *testing.T) {
				// One pair for every batch: what a batch leaves (cache,
				// misses, remembered partitions) meets the next ones.
				ref, got := wireTestEnricher(refKV, router, limit), wireTestEnricher(wireKV, router, limit)
				split := false
				dictBefore := wireDictionaryMsgs.Load()
				rawDicts := 0
				for i := range 60 {
					b := randomBatch(r, limit > 0, limit > 0 && i%4 != 0, 60, 300)
					if i%3 == 1 {
						// As the collector writes it (collector.
						// container_dictionary): read on the wire.
						b.Compact()
					}
					data, err := bus.Encode(b)
					if err != nil {
						t.Fatal(err)
					}
					if wb := (bus.WireBatch{}); bus.ScanBatch(data, &wb) && len(wb.Containers) > 0 && wireReadable(&wb) {
						rawDicts++
					}
					if checkWireMatches(t, ref, got, subject, data) > 1 && router == nil {
						split = true
					}
					if i%3 != 0 {
						got.recycle() // as after a publish: the next batch writes over these messages
					}
					if i%10 == 0 {
						checkWireMatches(t, ref, got, subject, data[:len(data)-1]) // truncated: refused
					}
				}
				if router == nil && limit > 0 && !split {
					t.Error("no batch was split")
				}
				if wireDictionaryMsgs.Load() == dictBefore {
					t.Error("no message of this subtest was written with a container dictionary")
				}
				if rawDicts == 0 {
					t.Error("no raw batch with a container dictionary went on the wire")
				}
			})
		}
	}
}

// FuzzWireMatchesDecoded: on any message, under any routing, the wire
// path refuses, publishes and counts exactly what the decoded path does
// (checkWireMatches). Its containers buckets are fresh memKVs: the
// fuzzer needs each input to cover the same code every time it runs, which
// a bucket kept from input to input (or a NATS client's goroutines) does
// not give (TestWireMatchesDecoded runs on real buckets).
func FuzzWireMatchesDecoded(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 8 {
		// Small: the fuzzer minimizes every input that finds new code.
		b := randomBatch(r, false, i%2 == 0, 6, 4)
		if i%4 == 1 {
			b.Compact() // with a dictionary, as the collector writes it
		}
		data, _ := bus.Encode(b)
		f.Add(data, uint8(i))
	}
	f.Add([]byte{0x08, 0x01, 0x12, 0x02, 'h', '1', 0x32, 0x04, 0x1a, 0x02, 'c', '0'}, uint8(1))
	f.Add([]byte{0x08, 0x01, 0x12, 0x02, 'h', '1', 0x32, 0x06, 0x1a, 0x02, 'c', '0', 0x10, 0x05}, uint8(2)) // host as a varint
	rs := routers()
	f.Fuzz(func(t *testing.T, data []byte, route uint8) {
		router := rs[int(route)%len(rs)]
		ref, got := wireTestEnricher(memKV{}, router, 0), wireTestEnricher(memKV{}, router, 0)
		checkWireMatches(t, ref, got, containv1.RawSubject("h1"), data)
		got.recycle() // again, into the first's arena
		checkWireMatches(t, ref, got, containv1.RawSubject("h1"), data)
	})
}

// memKV is the part of a containers bucket the enricher's paths use (Get,
// Put), in memory, for FuzzWireMatchesDecoded.
type memKV map[string][]byte

type memKVEntry struct {
	jetstream.KeyValueEntry
	key   string
	value []byte
}

func (e memKVEntry) Key() string   { return e.key }
func (e memKVEntry) Value() []byte { return e.value }

// memKVFull embeds jetstream.KeyValue: a method memKV lacks panics.
type memKVFull struct {
	jetstream.KeyValue
	m memKV
}

func (kv memKVFull) Get(_ context.Context, key string) (jetstream.KeyValueEntry, error) {
	v, ok := kv.m[key]
	if !ok {
		return nil, jetstream.ErrKeyNotFound
	}
	return memKVEntry{key: key, value: v}, nil
}

func (kv memKVFull) Put(_ context.Context, key string, value []byte) (uint64, error) {
	kv.m[key] = append([]byte(nil), value...)
	return uint64(len(kv.m)), nil
}

// TestWireEntryFields: an entry's encoded enrichment is its fields.
func TestWireEntryFields(t *testing.T) {
	en := newEntry(ContainerImage{ImageRef: "r", ImageDigest: testDigest, Name: "n"}, "p@1")
	var ev containv1.Event
	if err := proto.Unmarshal(append(append([]byte{}, en.wire...), en.nameWire...), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.ImageRef != "r" || ev.ImageDigest != testDigest || ev.ProfileRef != "p@1" || ev.ContainerName != "n" {
		t.Fatalf("entry fields read %v", &ev)
	}
	if en := newEntry(ContainerImage{}, ""); len(en.wire)+len(en.nameWire) != 0 {
		t.Fatalf("an empty entry appends %d bytes", len(en.wire)+len(en.nameWire))
	}
}

// TestWireRefusesAsDecoding runs the enricher on NATS with the messages
// the wire path must leave to decoding: an event about another host
// (refused: event_host_mismatch), a container id that is not UTF-8
// (refused: malformed), and an event whose host field has another wire
// type (read by proto.Unmarshal as an unknown field: accepted, enriched
// decoded); a plain batch goes on the wire. Every refusal is counted as
// by every consumer and the accepted batches come out enriched, in order.
func TestWireRefusesAsDecoding(t *testing.T) {
	_, _, js := testenv.NATS(t)
	m := metrics.New()
	startEnricher(t, testConfig(), js, m)
	out := newEventsReader(t, js)
	p := bus.NewProducer("h1", metrics.StageCollector)
	publishRaw(t, js, p, containerEvent("h1", "c1", map[string]string{"io.contain.image.digest": testDigest}))

	seq := uint64(0)
	encode := func(evs ...[]byte) []byte {
		seq++ // each its own Nats-Msg-Id
		b := protowire.AppendTag(nil, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, containv1.SchemaVersion)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, "h1")
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, seq)
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendString(b, "raw")
		for _, ev := range evs {
			b = protowire.AppendTag(b, 6, protowire.BytesType)
			b = protowire.AppendBytes(b, ev)
		}
		return b
	}
	event := func(host, id string, mono uint64) []byte {
		b, err := execEvent(host, id, mono).MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	notUTF8 := append(event("h1", "", 10), 0x1a, 0x02, 0xc3, 0x28) // container_id "\xc3\x28"
	hostVarint := append(event("h1", "c1", 11), 0x10, 0x05)        // host as a varint
	ctx := context.Background()
	for _, data := range [][]byte{
		encode(event("h1", "c1", 9), event("h2", "c1", 9)),
		encode(notUTF8),
		encode(hostVarint),
		encode(event("h1", "c1", 12), event("", "c1", 13)),
	} {
		if _, err := js.Publish(ctx, containv1.RawSubject("h1"), data); err != nil {
			t.Fatal(err)
		}
	}
	got := out.next(3)[1:] // after the container event's batch
	var mono []uint64
	for _, b := range got {
		for _, ev := range b.Events {
			mono = append(mono, ev.MonoNs)
			if ev.ImageDigest != testDigest {
				t.Errorf("event %d not enriched: %v", ev.MonoNs, ev)
			}
		}
	}
	if fmt.Sprint(mono) != "[11 12 13]" {
		t.Errorf("events %v, want [11 12 13]", mono)
	}
	testenv.WaitFor(t, 10*time.Second, "refusals counted", func() bool {
		return testutil.ToFloat64(m.Malformed.WithLabelValues(metrics.StageEnricher)) == 1 &&
			testutil.ToFloat64(m.Refused.WithLabelValues(metrics.StageEnricher, bus.ReasonEventHost)) == 1
	})
	if n := testutil.ToFloat64(m.EventsIn.WithLabelValues(metrics.StageEnricher)); n != 4 {
		t.Errorf("events in %v, want 4 (container, 11, 12, 13)", n)
	}
}

// wireDictionaryMsgs counts the wire path's messages written with a
// container dictionary (checkWireMatches).
var wireDictionaryMsgs atomic.Int64

// TestWireDictionary: the enricher's output of many events of a few
// containers lists each container once, is smaller than without the
// dictionary, and reads as the same events; with the dictionary off it
// is written as before (schema_version 1).
func TestWireDictionary(t *testing.T) {
	ids := containv1.NewIDGen()
	var evs []*containv1.Event
	for i := range 300 {
		ctr := []string{"c0", "c1", "c2"}[i%3]
		evs = append(evs, &containv1.Event{Id: ids.Next(), Host: "h1", ContainerId: ctr, ContainerName: "name-" + ctr, MonoNs: uint64(i), SchemaVersion: 1,
			Kind: containv1.Kind_KIND_EXEC, Body: &containv1.Event_Exec{Exec: &containv1.Exec{Filename: "/bin/sh", Argv: []string{"sh"}}}})
	}
	data, err := bus.Encode(&containv1.Batch{SchemaVersion: 1, Host: "h1", Stage: "collector", ProducerId: "p1", Seq: 7, Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	subject := containv1.RawSubject("h1")
	out := map[bool][]byte{}
	for _, dict := range []bool{false, true} {
		kv := memKV{}
		e := wireTestEnricher(kv, nil, 0)
		e.cfg.ContainerDictionary = dict
		msgs, _, err := e.fetchMessages(context.Background(), &oneFetch{subject: subject, data: data})
		if err != nil || len(msgs) != 1 {
			t.Fatalf("dictionary %v: %d messages, %v", dict, len(msgs), err)
		}
		out[dict] = msgs[0].Data
		var wb bus.WireBatch
		if !bus.ScanBatch(msgs[0].Data, &wb) {
			t.Fatalf("dictionary %v: the output does not scan", dict)
		}
		want, version := 0, uint32(containv1.SchemaVersion)
		if dict {
			want, version = 3, containv1.SchemaVersionDictionary
		}
		if len(wb.Containers) != want || wb.SchemaVersion != version {
			t.Fatalf("dictionary %v: %d containers, schema_version %d; want %d, %d", dict, len(wb.Containers), wb.SchemaVersion, want, version)
		}
	}
	plain, err := bus.Decode(out[false])
	if err != nil {
		t.Fatal(err)
	}
	compact, err := bus.Decode(out[true])
	if err != nil {
		t.Fatal(err)
	}
	compact.SchemaVersion = plain.SchemaVersion
	if !proto.Equal(plain, compact) {
		t.Fatalf("with the dictionary the output reads\n%v\nwithout\n%v", compact, plain)
	}
	if ev := compact.Events[4]; ev.ContainerId != "c1" || ev.ImageRef != "registry.local/shop/api:2" || ev.ContainerName != "name-c1" {
		t.Fatalf("event 4 read back as %v", ev)
	}
	ratio := float64(len(out[true])) / float64(len(out[false]))
	t.Logf("%d bytes with the dictionary, %d without (%.2f)", len(out[true]), len(out[false]), ratio)
	if ratio > 0.8 {
		t.Errorf("the dictionary saves too little: %.2f of the bytes", ratio)
	}
}
