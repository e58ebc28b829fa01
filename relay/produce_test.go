package relay

import (
	"slices"
	"sync"
	"testing"
	"time"
)

type gateLog struct {
	mu   sync.Mutex
	sent []int
}

func (l *gateLog) send(v int) { l.mu.Lock(); l.sent = append(l.sent, v); l.mu.Unlock() }
func (l *gateLog) got() []int { l.mu.Lock(); defer l.mu.Unlock(); return slices.Clone(l.sent) }

// TestProduceGateHoldsWithinWindow: the first publish of a quiet relay is
// sent before add returns; the ones after it, within the window, wait and
// then go together, in order.
func TestProduceGateHoldsWithinWindow(t *testing.T) {
	var l gateLog
	var batches []int
	g := newProduceGate(time.Hour, l.send, func(n int) { batches = append(batches, n) })
	g.add(1)
	if got := l.got(); !slices.Equal(got, []int{1}) {
		t.Fatalf("lone publish not sent at once: %v", got)
	}
	for v := 2; v <= 5; v++ {
		g.add(v)
	}
	if got := l.got(); !slices.Equal(got, []int{1}) {
		t.Fatalf("publishes within the window were not held: %v", got)
	}
	g.flush()
	if got := l.got(); !slices.Equal(got, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("after flush: %v", got)
	}
	if !slices.Equal(batches, []int{4}) {
		t.Fatalf("batch sizes %v, want [4]", batches)
	}
	g.flush() // nothing held: no-op
	// Still within the window of the flush's send: held again, not sent.
	g.add(6)
	if got := l.got(); len(got) != 5 {
		t.Fatalf("publish right after a batch was not held: %v", got)
	}
	g.flush()
	if got := l.got(); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("after second flush: %v", got)
	}
}

// TestProduceGateReleasesByItself: a held batch goes when the window ends,
// and a publish after a quiet window goes at once again.
func TestProduceGateReleasesByItself(t *testing.T) {
	var l gateLog
	const window = 20 * time.Millisecond
	g := newProduceGate(window, l.send, nil)
	want := []int{}
	for v := 0; v < 100; v++ {
		g.add(v)
		want = append(want, v)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(l.got(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("held publishes not released: got %d of %d", len(l.got()), len(want))
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(2 * window) // quiet
	g.add(100)
	if got := l.got(); len(got) != 101 || got[100] != 100 {
		t.Fatalf("publish after a quiet window not sent at once: %d sent", len(got))
	}
}

// TestProduceGateOff: a window ≤ 0 sends every publish at once.
func TestProduceGateOff(t *testing.T) {
	var l gateLog
	g := newProduceGate(-1, l.send, nil)
	for v := 0; v < 10; v++ {
		g.add(v)
		if len(l.got()) != v+1 {
			t.Fatalf("publish %d held with the window off", v)
		}
	}
}

// TestProduceGateConcurrentOrder: publishers on several goroutines; each
// one's publishes reach send in its own order, none lost or doubled.
func TestProduceGateConcurrentOrder(t *testing.T) {
	var l gateLog
	g := newProduceGate(time.Millisecond, l.send, nil)
	const writers, per = 8, 2000
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				g.add(w*per + i)
				if i%100 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	g.flush()
	got := l.got()
	if len(got) != writers*per {
		t.Fatalf("sent %d, want %d", len(got), writers*per)
	}
	next := make([]int, writers)
	for _, v := range got {
		w, i := v/per, v%per
		if i != next[w] {
			t.Fatalf("writer %d: got %d, want %d (reordered or duplicated)", w, i, next[w])
		}
		next[w]++
	}
}
