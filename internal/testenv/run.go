package testenv

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Go runs a stage's Run in the background until the returned stop is
// called or the test ends. stop cancels it and waits up to grace for it to
// return; an error from Run, or not returning in time, fails the test.
// stop may be called more than once.
func Go(t testing.TB, grace time.Duration, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(grace):
				t.Errorf("Run did not return %v after its context ended", grace)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
