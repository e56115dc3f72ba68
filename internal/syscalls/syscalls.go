// Package syscalls names Linux syscalls by number for the architecture the
// binary is built for (amd64, arm64). The tables are generated from the
// kernel's uapi headers (gen.sh); the collector's eBPF programs use the same
// numbers through collector/bpf/syscall_nr.h.
package syscalls

// Max bounds every syscall number on a supported architecture (the kernel
// programs' SYSCALL_MAX).
const Max = 512

var numbers = func() map[string]uint32 {
	m := make(map[string]uint32, len(names))
	for nr, n := range names {
		m[n] = nr
	}
	return m
}()

// Name is nr's name, "" when unknown.
func Name(nr uint32) string { return names[nr] }

// Number is name's number; ok is false when this architecture has no such
// syscall (arm64 has no open, only openat).
func Number(name string) (nr uint32, ok bool) {
	nr, ok = numbers[name]
	return nr, ok
}

// Numbers are the numbers of the named syscalls this architecture has, in
// order; the others are left out.
func Numbers(names ...string) []uint32 {
	var out []uint32
	for _, n := range names {
		if nr, ok := numbers[n]; ok {
			out = append(out, nr)
		}
	}
	return out
}

// Len is the number of syscalls in the table.
func Len() int { return len(names) }
