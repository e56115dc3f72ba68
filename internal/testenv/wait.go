package testenv

import (
	"testing"
	"time"
)

// waitPoll is how often WaitFor asks again.
const waitPoll = 10 * time.Millisecond

// WaitFor polls cond every 10ms until it holds; after timeout it fails the
// test with "timed out after <timeout> waiting for <what>". Tests poll for
// a condition rather than sleep (STYLE.md 12).
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitForState(t, timeout, what, func() (bool, string) { return cond(), "" })
}

// WaitForState is WaitFor with a cond that also describes the state it
// saw; the last description is in the failure message.
func WaitForState(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if state != "" {
				t.Fatalf("timed out after %v waiting for %s (last: %s)", timeout, what, state)
			}
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(waitPoll)
	}
}
