package collector

import (
	"maps"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// The committed objects for amd64 and arm64 come from the same source:
// same programs, maps and variables, whatever GOARCH the test runs on.
func TestObjectsPerArchAgree(t *testing.T) {
	names := func(path string) (progs, mapNames, vars []string) {
		spec, err := ebpf.LoadCollectionSpec(path)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Sorted(maps.Keys(spec.Programs)), slices.Sorted(maps.Keys(spec.Maps)), slices.Sorted(maps.Keys(spec.Variables))
	}
	xp, xm, xv := names("collector_x86_bpfel.o")
	ap, am, av := names("collector_arm64_bpfel.o")
	if !slices.Equal(xp, ap) || !slices.Equal(xm, am) || !slices.Equal(xv, av) {
		t.Fatalf("amd64 and arm64 objects differ:\nprograms %v\n         %v\nmaps %v\n     %v\nvariables %v\n          %v", xp, ap, xm, am, xv, av)
	}
	if len(xp) < 8 || !slices.Contains(xp, "sys_exit_raw_tp") {
		t.Fatalf("programs %v", xp)
	}
}
