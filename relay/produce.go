package relay

import (
	"sync"
	"time"
)

// produceGate paces the relay's Kafka produce requests. A publish that
// finds the relay quiet (nothing produced for a window) is produced at once,
// so a lone message waits for nothing; publishes arriving within a window of
// the last send are held and produced together when it ends. Under a chat
// load that turns one produce request — and downstream one fetch, one poll
// and one stream message to each relay — per publish into one per window.
// At 1,000 msg/s of chat, windows of 2 / 3 / 4 ms cut relay + controller
// CPU per delivery from ~80 µs to ~64 / ~60 / ~49 µs and Kafka's by 40-60 %,
// adding ~1.3 / 2.3 / 2.8 ms to the median (docs/performance.md, "Produce
// window"); a lone message gets none of it.
//
// franz-go's own linger cannot do this: it holds every batch, the first
// record after a quiet period included, for the whole linger.
//
// Order is kept: records are handed to send under the gate's lock, in
// arrival order, and nothing is sent at once while a batch is held.
type produceGate[T any] struct {
	window time.Duration
	send   func(T) // hands one record to the producer; must not block

	mu      sync.Mutex
	last    time.Time // when the last record or batch was sent
	held    []T
	spare   []T // the previous batch's slice, reused
	armed   bool
	timer   *time.Timer
	batches func(n int) // observes each held batch's size (metrics); may be nil
}

func newProduceGate[T any](window time.Duration, send func(T), batches func(int)) *produceGate[T] {
	g := &produceGate[T]{window: window, send: send, batches: batches}
	g.timer = time.AfterFunc(time.Hour, g.release)
	g.timer.Stop()
	return g
}

// add sends v now when the relay is quiet, else holds it for the window's
// end. It never blocks on I/O.
func (g *produceGate[T]) add(v T) {
	if g.window <= 0 {
		g.send(v)
		return
	}
	now := time.Now()
	g.mu.Lock()
	if !g.armed && now.Sub(g.last) >= g.window {
		g.last = now
		g.send(v)
		g.mu.Unlock()
		return
	}
	g.held = append(g.held, v)
	if !g.armed {
		g.armed = true
		g.timer.Reset(g.last.Add(g.window).Sub(now))
	}
	g.mu.Unlock()
}

// release sends the held batch (the timer's goroutine).
func (g *produceGate[T]) release() {
	g.mu.Lock()
	batch := g.held
	g.held, g.spare = g.spare[:0], nil
	g.armed = false
	g.last = time.Now()
	for _, v := range batch {
		g.send(v)
	}
	var zero T
	for i := range batch {
		batch[i] = zero // drop the references until the slice is reused
	}
	g.spare = batch[:0]
	g.mu.Unlock()
	if g.batches != nil && len(batch) > 0 {
		g.batches(len(batch))
	}
}

// flush sends whatever is held now and returns once it is sent (shutdown,
// before the producer's own flush).
func (g *produceGate[T]) flush() {
	for {
		g.mu.Lock()
		armed := g.armed
		g.mu.Unlock()
		if !armed {
			return // release clears armed under the lock it sends under
		}
		if g.timer.Stop() {
			g.release()
			return
		}
		time.Sleep(100 * time.Microsecond) // the timer fired: its release is running
	}
}
