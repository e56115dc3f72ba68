package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/testenv"
	"github.com/containsec/contain/schemas/containv1"
)

func seqBytes(nr uint16, tid, tgid uint32, cgid, ktime uint64) []byte {
	b := make([]byte, seqSize)
	le := binary.LittleEndian
	b[0] = recordSeq
	le.PutUint16(b[2:], nr)
	le.PutUint32(b[4:], tid)
	le.PutUint32(b[8:], tgid)
	le.PutUint64(b[16:], cgid)
	le.PutUint64(b[24:], ktime)
	return b
}

func TestSeqLayoutMatchesBTF(t *testing.T) {
	var e collectorSeqEvent
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(seq_event)", unsafe.Sizeof(e), seqSize},
		{"seq.nr", unsafe.Offsetof(e.Nr), 2},
		{"seq.tid", unsafe.Offsetof(e.Tid), 4},
		{"seq.tgid", unsafe.Offsetof(e.Tgid), 8},
		{"seq.cgroup_id", unsafe.Offsetof(e.CgroupId), 16},
		{"seq.ktime_ns", unsafe.Offsetof(e.KtimeNs), 24},
		{"seq.origin", unsafe.Offsetof(e.Origin), 1},
		{"seq.session_tgid", unsafe.Offsetof(e.SessionTgid), 12},
	} {
		if c.got != c.want {
			t.Errorf("%s: C layout %d, decoder %d", c.name, c.got, c.want)
		}
	}
}

func TestDecodeSeq(t *testing.T) {
	r, err := decodeSeq(seqBytes(110, 7, 5, 99, 12345))
	if err != nil {
		t.Fatal(err)
	}
	if r != (seqRecord{nr: 110, tid: 7, tgid: 5, cgroupID: 99, ktime: 12345}) {
		t.Fatalf("decoded %+v", r)
	}
	b := seqBytes(110, 7, 5, 99, 12345)
	b[1] = uint8(containv1.Origin_ORIGIN_EXEC_SESSION)
	binary.LittleEndian.PutUint32(b[12:], 4242)
	if r, err := decodeSeq(b); err != nil || r.origin != containv1.Origin_ORIGIN_EXEC_SESSION || r.sessionTgid != 4242 {
		t.Fatalf("decoded %+v, %v; want an exec session of 4242", r, err)
	}
	for name, b := range map[string][]byte{
		"short":        seqBytes(1, 1, 1, 1, 1)[:seqSize-1],
		"empty":        nil,
		"wrong type":   append([]byte{recordSyscall}, seqBytes(1, 1, 1, 1, 1)[1:]...),
		"nr too large": seqBytes(syscallMax, 1, 1, 1, 1),
		"bad origin":   func() []byte { b := seqBytes(1, 1, 1, 1, 1); b[1] = 9; return b }(),
	} {
		if _, err := decodeSeq(b); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func FuzzDecodeSeq(f *testing.F) {
	f.Add(seqBytes(110, 7, 5, 99, 12345))
	f.Add(seqBytes(0xffff, 0, 0, 0, 0))
	f.Add([]byte{recordSeq})
	f.Add(make([]byte, seqSize))
	f.Add(append([]byte{recordSeq, 3}, seqBytes(1, 1, 1, 1, 1)[2:]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeSeq(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedRecord) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		if r.nr >= syscallMax || b[0] != recordSeq || r.origin > containv1.Origin_ORIGIN_EXEC_SESSION {
			t.Fatalf("accepted %+v from %x", r, b)
		}
	})
}

func TestSelectors(t *testing.T) {
	labels := map[string]string{"io.contain.image.ref": "docker.io/library/nginx:1.27", "team": "payments"}
	for _, c := range []struct {
		sel  string
		want bool
	}{
		{"name=web-*", true},
		{"name=db-*", false},
		{"image=docker.io/library/nginx:*", true},
		{"image=*redis*", false},
		{"label=team=pay*", true},
		{"label=team=ops", false},
		{"label=tier=*", false}, // absent key
		{"id=abc1", true},
		{"id=abd", false},
	} {
		sels, err := parseSelectors([]string{c.sel})
		if err != nil {
			t.Fatalf("%s: %v", c.sel, err)
		}
		if got := matchAny(sels, "abc123", "web-1", labels); got != c.want {
			t.Errorf("%s: match %v, want %v", c.sel, got, c.want)
		}
	}
	for _, bad := range []string{"web-*", "pod=x", "label=team", "label==x", "id=", "name=[", "label=a=[x"} {
		if _, err := parseSelectors([]string{bad}); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
	for key, edit := range map[string]func(*Config){
		"collector.sequence_select":     func(c *Config) { c.SequenceSelect = []string{"nope"} },
		"collector.sequence_ring_bytes": func(c *Config) { c.SequenceRingBytes = 3 << 20 },
		"collector.sequence_batch":      func(c *Config) { c.SequenceBatch = 0 },
		"collector.sequence_flush":      func(c *Config) { c.SequenceFlush = 0 },
	} {
		c := DefaultConfig()
		edit(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s: err = %v", key, err)
		}
	}
}

type emitted struct {
	cgid      uint64
	tgid, tid uint32
	first     uint64
	nrs       []uint32
}

func TestSequencer(t *testing.T) {
	var out []emitted
	s := newSequencer(4, 100, func(k seqKey, tid uint32, first uint64, nrs []uint32) {
		out = append(out, emitted{k.cgid, k.tgid, tid, first, nrs})
	})
	s.maxThreads = 3
	rec := func(tid, tgid uint32, cgid, ktime uint64, nr uint32) {
		s.add(seqRecord{nr: nr, tid: tid, tgid: tgid, cgroupID: cgid, ktime: ktime})
	}
	// Two interleaved threads: cut per thread at 4, in order.
	for i := range 5 {
		rec(10, 10, 1, uint64(i), uint32(i))
		rec(11, 10, 1, uint64(i), uint32(100+i))
	}
	if len(out) != 2 || !slices.Equal(out[0].nrs, []uint32{0, 1, 2, 3}) || out[0].tid != 10 ||
		!slices.Equal(out[1].nrs, []uint32{100, 101, 102, 103}) || out[1].tid != 11 || out[1].first != 0 {
		t.Fatalf("full batches: %+v", out)
	}
	// Partial sequences wait for flushNs after their first syscall.
	out = nil
	s.sweep(50)
	if len(out) != 0 {
		t.Fatalf("flushed early: %+v", out)
	}
	s.sweep(104)
	if len(out) != 2 || !slices.Equal(out[0].nrs, []uint32{4}) && !slices.Equal(out[0].nrs, []uint32{104}) {
		t.Fatalf("partial flush: %+v", out)
	}
	// A reused tid (another tgid) starts a new sequence.
	out = nil
	rec(10, 10, 1, 200, 1)
	rec(10, 20, 1, 201, 2)
	if len(out) != 1 || !slices.Equal(out[0].nrs, []uint32{1}) || out[0].tgid != 10 {
		t.Fatalf("tid reuse: %+v", out)
	}
	// More than maxThreads: everything is flushed and forgotten, nothing lost.
	out = nil
	rec(12, 12, 1, 300, 7)
	rec(13, 13, 1, 300, 8) // the 4th thread
	if s.overflows.Load() != 1 || len(s.threads) != 1 {
		t.Fatalf("overflow: %d overflows, %d threads", s.overflows.Load(), len(s.threads))
	}
	s.flushAll()
	var all []uint32
	for _, e := range out {
		all = append(all, e.nrs...)
	}
	slices.Sort(all)
	if !slices.Equal(all, []uint32{2, 7, 8}) {
		t.Fatalf("after overflow: %+v", out)
	}
	// Idle threads are forgotten.
	rec(14, 14, 1, 1000, 1)
	s.flushAll()
	rec(14, 14, 1, 1000, 1)
	s.sweep(1000 + seqIdleNs + 1)
	if len(s.threads) != 0 {
		t.Fatalf("%d threads kept after idling", len(s.threads))
	}
}

// The sys_exit program writes one record per syscall of a selected
// cgroup, in order, only while seq_active is set; a full ring counts the
// loss in the cgroup's seq_cgroups value.
func TestBPFSequenceRecords(t *testing.T) {
	testenv.RequireRoot(t)
	me := myCgroupID(t)
	load := func(active uint32, ring int) *ebpf.Collection {
		spec, err := loadCollector()
		if err != nil {
			t.Fatal(err)
		}
		for name := range spec.Programs {
			if name != "sys_exit_test" {
				delete(spec.Programs, name)
			}
		}
		spec.Maps["events"].MaxEntries = 1 << 16
		spec.Maps["seq_events"].MaxEntries = uint32(ring)
		_ = spec.Variables["host_cgroup_id"].Set(me + 1)
		_ = spec.Variables["track_counts"].Set(uint8(0))
		if err := spec.Variables["seq_active"].Set(active); err != nil {
			t.Fatal(err)
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(coll.Close)
		return coll
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := uint32(unix.Gettid())
	run := func(coll *ebpf.Collection, nrs ...uint64) {
		t.Helper()
		for _, nr := range nrs {
			if _, err := coll.Programs["sys_exit_test"].Run(&ebpf.RunOptions{Context: []uint64{0, nr}}); err != nil {
				if errors.Is(err, ebpf.ErrNotSupported) {
					testenv.Unavailable(t, "BPF_PROG_TEST_RUN for raw tracepoints")
				}
				t.Fatal(err)
			}
		}
	}
	read := func(coll *ebpf.Collection) []seqRecord {
		t.Helper()
		rb := coll.Maps["seq_events"]
		rr, err := newRingRead(rb.FD(), int(rb.MaxEntries()))
		if err != nil {
			t.Fatal(err)
		}
		defer rr.close()
		var out []seqRecord
		if _, err := rr.drain(1<<20, func(b []byte) {
			r, err := decodeSeq(b)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	pattern := []uint64{110, 102, 104, 110, 102, 104}

	coll := load(1, 1<<16)
	run(coll, pattern...)
	if got := read(coll); len(got) != 0 {
		t.Fatalf("unselected cgroup: %d records", len(got))
	}
	if err := coll.Maps["seq_cgroups"].Put(me, collectorSeqCgroup{}); err != nil {
		t.Fatal(err)
	}
	run(coll, pattern...)
	got := read(coll)
	var nrs []uint64
	for _, r := range got {
		if r.tid != tid || r.tgid != uint32(unix.Getpid()) || r.cgroupID != me || r.ktime == 0 {
			t.Fatalf("record %+v (tid %d, cgroup %d)", r, tid, me)
		}
		nrs = append(nrs, uint64(r.nr))
	}
	if !slices.Equal(nrs, pattern) {
		t.Fatalf("sequence %v, want %v", nrs, pattern)
	}

	off := load(0, 1<<16)
	if err := off.Maps["seq_cgroups"].Put(me, collectorSeqCgroup{}); err != nil {
		t.Fatal(err)
	}
	run(off, pattern...)
	if got := read(off); len(got) != 0 {
		t.Fatalf("seq_active 0: %d records", len(got))
	}

	// A one-page ring holds 4096/40 records; the rest are counted lost.
	small := load(1, 4096)
	if err := small.Maps["seq_cgroups"].Put(me, collectorSeqCgroup{}); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		run(small, 39)
	}
	var v collectorSeqCgroup
	if err := small.Maps["seq_cgroups"].Lookup(me, &v); err != nil {
		t.Fatal(err)
	}
	kept := len(read(small))
	if kept == 0 || v.Lost == 0 || uint64(kept)+v.Lost != 200 {
		t.Fatalf("small ring: %d kept + %d lost, want 200 (%s)", kept, v.Lost, fmt.Sprint(kept*40))
	}
}

// BenchmarkSequenceRecord is the user-space cost per sequence record:
// decode, per-thread aggregation and, per sequence_batch records, the
// event's protobuf encoding (what the batcher does with it).
func BenchmarkSequenceRecord(b *testing.B) {
	recs := make([][]byte, 4)
	for i := range recs {
		recs[i] = seqBytes(uint16(100+i), 42, 42, 7, uint64(i))
	}
	var bytes int
	s := newSequencer(256, 1e8, func(k seqKey, tid uint32, first uint64, nrs []uint32) {
		ev := &containv1.Event{Kind: containv1.Kind_KIND_SYSCALL, MonoNs: first, CgroupId: k.cgid,
			Body: &containv1.Event_Syscall{Syscall: &containv1.Syscall{Mode: containv1.Syscall_MODE_SEQUENCE,
				Proc: &containv1.Process{Pid: tid, Tgid: k.tgid}, Sequence: nrs, Count: uint64(len(nrs))}}}
		out, err := proto.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(out)
	})
	i := 0
	for b.Loop() {
		r, err := decodeSeq(recs[i&3])
		if err != nil {
			b.Fatal(err)
		}
		s.add(r)
		i++
	}
	b.ReportMetric(float64(bytes)/float64(i), "bytes/syscall")
}
