package syscalls_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"

	"github.com/containsec/contain/collector"
	"github.com/containsec/contain/internal/syscalls"
)

func TestNameNumberRoundTrip(t *testing.T) {
	if syscalls.Len() < 250 {
		t.Fatalf("%d syscalls in the table", syscalls.Len())
	}
	for _, name := range []string{"openat", "execve", "connect", "exit_group", "fchmodat2"} {
		nr, ok := syscalls.Number(name)
		if !ok || syscalls.Name(nr) != name || nr >= syscalls.Max {
			t.Fatalf("%s: %d %v, back %q", name, nr, ok, syscalls.Name(nr))
		}
	}
	if got := syscalls.Numbers("openat", "no_such_syscall"); len(got) != 1 {
		t.Fatalf("Numbers kept %v", got)
	}
}

// archNames reads a generated table (table_<arch>.go) as source, so every
// architecture's table is checked whatever GOARCH the test runs on.
func archNames(t *testing.T, arch string) map[string]uint32 {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "table_"+arch+".go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	ast.Inspect(f, func(n ast.Node) bool {
		kv, ok := n.(*ast.KeyValueExpr)
		if !ok {
			return true
		}
		nr, err1 := strconv.ParseUint(kv.Key.(*ast.BasicLit).Value, 10, 32)
		name, err2 := strconv.Unquote(kv.Value.(*ast.BasicLit).Value)
		if err1 != nil || err2 != nil {
			t.Fatalf("table_%s.go: %v %v", arch, err1, err2)
		}
		out[name] = uint32(nr)
		return false
	})
	return out
}

// The default configuration is valid on every architecture: each default
// sensitive syscall exists there, below the kernel programs' bound.
func TestEveryArchHasTheDefaultSensitiveSyscalls(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		names := archNames(t, arch)
		if len(names) < 250 {
			t.Fatalf("%s: %d syscalls", arch, len(names))
		}
		for _, s := range collector.DefaultSensitiveSyscalls {
			if nr, ok := names[s]; !ok || nr >= syscalls.Max {
				t.Errorf("%s: default sensitive syscall %q: %d %v", arch, s, nr, ok)
			}
		}
		for _, s := range []string{"openat", "connect", "socket", "exit_group", "execve"} {
			if _, ok := names[s]; !ok {
				t.Errorf("%s: no %s", arch, s)
			}
		}
	}
	if a, b := archNames(t, "amd64")["openat"], archNames(t, "arm64")["openat"]; a != 257 || b != 56 {
		t.Fatalf("openat: amd64 %d (want 257), arm64 %d (want 56)", a, b)
	}
}
