package tick

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// Every ticks until its context ends and then returns without another call.
func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, time.Millisecond, func(now time.Time) {
			if now.IsZero() {
				t.Error("zero tick time")
			}
			if calls.Add(1) == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after its context ended")
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3 (no call after cancel)", n)
	}
}
