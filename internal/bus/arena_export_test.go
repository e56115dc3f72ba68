package bus

import "github.com/containsec/contain/schemas/containv1"

// ArenaScan is a.scan, for the tests of package bus_test.
func ArenaScan(a *Arena, data []byte) (*containv1.Batch, bool) { return a.scan(data) }
