package testenv

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f)
}

func TestWaitFor(t *testing.T) {
	start := time.Now()
	n := 0
	WaitFor(t, time.Second, "three polls", func() bool { n++; return n == 3 })
	if n != 3 || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("polled %d times in %v", n, time.Since(start))
	}
	ft := &fakeT{TB: t}
	func() {
		defer func() {
			if r := recover(); r != ft {
				panic(r)
			}
		}()
		WaitForState(ft, 30*time.Millisecond, "never", func() (bool, string) { return false, "still no" })
	}()
	if !strings.Contains(ft.failed, "timed out after 30ms waiting for never (last: still no)") {
		t.Fatalf("failure %q", ft.failed)
	}
}
