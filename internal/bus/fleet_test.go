package bus_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/containsec/contain/internal/bus"
	"github.com/containsec/contain/schemas/containv1"
)

// fleetOf is a fleet batch of parts, as the enricher writes it.
func fleetOf(parts ...[]byte) []byte {
	buf := bus.AppendFleetHeader(nil, "enricher", "p1", 7)
	for _, p := range parts {
		buf = bus.AppendFleetPart(buf, p)
	}
	return buf
}

// hostBatch is an encoded batch of host with one exec event per file;
// compact writes it with a container dictionary (schema_version 2).
func hostBatch(t testing.TB, host string, compact bool, files ...string) []byte {
	t.Helper()
	ids := containv1.NewIDGen()
	var evs []*containv1.Event
	for _, f := range files {
		ev := execEvent(ids, "c-"+host, f)
		ev.Host = host
		ev.ContainerName, ev.ImageRef, ev.ImageDigest = "web", "nginx:1.27", "sha256:abc"
		evs = append(evs, ev)
	}
	b := bus.NewProducer(host, "enricher").Batch(evs)
	if compact {
		b.Compact()
	}
	data, err := bus.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestFleetParts: FleetParts gives back the parts a fleet batch was
// written with, aliasing it, after what the caller passed; it refuses
// what has no place in a fleet batch, naming the field.
func TestFleetParts(t *testing.T) {
	parts := [][]byte{hostBatch(t, "h1", false, "/bin/a"), hostBatch(t, "h2", true, "/bin/b", "/bin/c"), hostBatch(t, "h3", false)}
	data := fleetOf(parts...)
	if !bus.IsFleet(data) || bus.IsFleet(parts[0]) {
		t.Fatal("IsFleet")
	}
	if n := bus.FleetHeaderSize("enricher", "p1", 7) + bus.FleetPartSize(parts[0]) + bus.FleetPartSize(parts[1]) + bus.FleetPartSize(parts[2]); n != len(data) {
		t.Fatalf("sizes say %d bytes, written %d", n, len(data))
	}
	prev := []byte("kept")
	got, err := bus.FleetParts(data, [][]byte{prev})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || !bytes.Equal(got[0], prev) {
		t.Fatalf("got %d parts, the caller's first %q", len(got), got[0])
	}
	for i, p := range got[1:] {
		if !bytes.Equal(p, parts[i]) {
			t.Fatalf("part %d differs", i)
		}
		if cap(p) != len(p) {
			t.Fatalf("part %d: cap %d > len %d: an append would write into the message", i, cap(p), len(p))
		}
	}

	event := protowire.AppendBytes(protowire.AppendTag(nil, 6, protowire.BytesType), []byte{0x12, 0x02, 'h', '1'})
	stage := func(s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, 3, protowire.BytesType), s)
	}
	full := fleetOf(parts[0])
	for _, c := range []struct {
		name, data, want string
	}{
		{"not fleet", string(parts[0]), "does not start with schema_version 3"},
		{"empty", "", "does not start with schema_version 3"},
		{"events", string(fleetOf(parts[0])) + string(event), "events (wire type 2) has no place"},
		{"containers", string(fleetOf(parts[0])) + "\x3a\x02\x0a\x00", "containers (wire type 2) has no place"},
		{"schema_version again", string(fleetOf(parts[0])) + "\x08\x01", "schema_version (wire type 0) has no place"},
		{"unknown field", string(fleetOf(parts[0])) + "\xf8\x06\x01", "field 111 (wire type 0) has no place"},
		{"parts as varint", string(fleetOf(parts[0])) + "\x40\x01", "parts (wire type 0) has no place"},
		{"nested fleet", string(fleetOf(parts[0], fleetOf(parts[1]))), "parts[1] is itself a fleet batch"},
		{"no parts", string(fleetOf()), "no parts"},
		{"truncated", string(full[:len(full)-1]), "parts: truncated"},
		{"truncated seq", string(fleetOf(parts[0])) + "\x20", "seq: truncated"},
		{"bad tag", string(fleetOf(parts[0])) + "\x80", "bad tag"},
		{"stage not UTF-8", string(fleetOf(parts[0])) + string(stage("\xff")), "stage: not a UTF-8 string"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := bus.FleetParts([]byte(c.data), [][]byte{prev})
			if !errors.Is(err, bus.ErrFleet) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want ErrFleet saying %q", err, c.want)
			}
			if len(got) != 1 {
				t.Fatalf("%d parts after a refusal, want the caller's 1", len(got))
			}
		})
	}
}

// FuzzFleetParts: FleetParts is safe on any input, and what it accepts
// is parts that are, in order, byte-identical slices of the input, none
// a fleet batch, which a fleet batch written of them gives back.
func FuzzFleetParts(f *testing.F) {
	parts := [][]byte{hostBatch(f, "h1", false, "/bin/a"), hostBatch(f, "h2", true, "/bin/b", "/bin/c")}
	f.Add(fleetOf(parts...))
	f.Add(fleetOf(parts[0], []byte{}))
	f.Add(fleetOf(parts[0], fleetOf(parts[1])))
	f.Add(fleetOf())
	f.Add(append(fleetOf(parts[1]), 0x32, 0x00))
	f.Add(append(fleetOf(parts[1]), 0x1a, 0x01, 0xff))
	f.Add(parts[0])
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := bus.FleetParts(data, nil)
		if err != nil {
			if !errors.Is(err, bus.ErrFleet) || len(got) != 0 {
				t.Fatalf("refusal %v with %d parts", err, len(got))
			}
			return
		}
		if len(got) == 0 || !bus.IsFleet(data) {
			t.Fatalf("accepted %d parts of a batch that IsFleet says %v", len(got), bus.IsFleet(data))
		}
		rest := data
		for i, p := range got {
			if bus.IsFleet(p) {
				t.Fatalf("part %d is a fleet batch", i)
			}
			enc := bus.AppendFleetPart(nil, p)
			at := bytes.Index(rest, enc)
			if at < 0 {
				t.Fatalf("part %d is not the next part of the input", i)
			}
			rest = rest[at+len(enc):]
		}
		again, err := bus.FleetParts(fleetOf(got...), nil)
		if err != nil || len(again) != len(got) {
			t.Fatalf("re-encoded: %d parts, %v", len(again), err)
		}
		for i := range got {
			if !bytes.Equal(again[i], got[i]) {
				t.Fatalf("re-encoded part %d differs", i)
			}
		}
	})
}

// TestDecodersRefuseParts: a batch of schema_version 1 or 2 holding parts,
// and a fleet batch given whole, are malformed to every decoder (Decode,
// DecodeAliased, ScanBatch, the Arena): parts are read only once a fleet
// batch is split.
func TestDecodersRefuseParts(t *testing.T) {
	v1, v2 := hostBatch(t, "h1", false, "/bin/a"), hostBatch(t, "h2", true, "/bin/b")
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"version 1 with parts", bus.AppendFleetPart(append([]byte(nil), v1...), v2)},
		{"version 2 with parts", bus.AppendFleetPart(append([]byte(nil), v2...), v1)},
		{"version 1 with an empty part", bus.AppendFleetPart(append([]byte(nil), v1...), nil)},
		{"fleet batch", fleetOf(v1, v2)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := bus.Decode(c.data); !errors.Is(err, bus.ErrMalformed) {
				t.Errorf("Decode: %v, want ErrMalformed", err)
			}
			if _, err := bus.DecodeAliased(c.data); !errors.Is(err, bus.ErrMalformed) {
				t.Errorf("DecodeAliased: %v, want ErrMalformed", err)
			}
			var wb bus.WireBatch
			if bus.ScanBatch(c.data, &wb) {
				t.Error("ScanBatch accepted it")
			}
			var a bus.Arena
			if _, ok := bus.ArenaScan(&a, c.data); ok {
				t.Error("the Arena's scan accepted it")
			}
			if _, err := a.Decode(c.data); !errors.Is(err, bus.ErrMalformed) {
				t.Errorf("Arena.Decode: %v, want ErrMalformed", err)
			}
		})
	}
	// Each alone, the parts decode.
	for _, p := range [][]byte{v1, v2} {
		if _, err := bus.Decode(p); err != nil {
			t.Fatal(err)
		}
	}
}
