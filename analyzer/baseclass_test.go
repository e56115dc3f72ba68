package analyzer

import (
	"path"
	"testing"
)

// TestBaseClasses: baseClasses names, for every name of every table and
// for names of none, exactly the tables that hold it.
func TestBaseClasses(t *testing.T) {
	tables := baseClassTables()
	names := []string{"", "app", "python3", "sh ", "BASH", "busybox"}
	for _, table := range tables {
		for name := range table {
			names = append(names, name)
		}
	}
	for _, name := range names {
		var want baseClass
		for cls, table := range tables {
			if table[name] {
				want |= cls
			}
		}
		if got := baseClasses[name]; got != want {
			t.Errorf("baseClasses[%q] = %b, want %b", name, got, want)
		}
	}
}

var shellPathSeeds = []string{"", "/", "/bin/sh", "/bin/sh/", "/bin/bash", "/usr/bin/fish", "/bin/busybox", "busybox",
	"/usr/local/bin/app", "/bin/ssh", "/bin/zsh//", "sh", "/bin/shx", "/bin/Sh"}

// TestShellPath: isShellPath answers as shells[path.Base(exe)], for
// every shell under a directory, bare, and with trailing slashes.
func TestShellPath(t *testing.T) {
	exes := append([]string(nil), shellPathSeeds...)
	for name := range shells {
		exes = append(exes, name, "/bin/"+name, "/bin/"+name+"/", "/x/"+name+"x", "/x/x"+name)
	}
	for _, exe := range exes {
		checkShellPath(t, exe)
	}
}

func checkShellPath(t *testing.T, exe string) {
	t.Helper()
	if got, want := isShellPath(exe), shells[path.Base(exe)]; got != want {
		t.Fatalf("isShellPath(%q) = %v, want %v", exe, got, want)
	}
}

func FuzzShellPath(f *testing.F) {
	for _, exe := range shellPathSeeds {
		f.Add(exe)
	}
	f.Fuzz(checkShellPath)
}
