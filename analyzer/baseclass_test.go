package analyzer

import "testing"

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
