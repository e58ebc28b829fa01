package controller

import (
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/store"
)

// The poll loop must not wake the batch writer on every poll: only when the
// writer has nothing armed (pending was empty) or the batch became full.
// Between those, the writer's timer for the oldest chunk fires anyway.
func TestBatchWriterWakesOnlyWhenDue(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(nil, 1, "wake")
	cfg.BatchMessages, cfg.BatchInterval, cfg.MaxBacklog = 10, time.Hour, 1000
	w := newBatchWriter(&Server{cfg: cfg, log: testLogger(t), m: m}, 0)
	msgs := func(n int) chunk { return chunk{msgs: make([]store.Message, n), at: time.Now()} }
	woken := func() bool {
		select {
		case <-w.wake:
			return true
		default:
			return false
		}
	}

	w.add(msgs(1))
	if !woken() {
		t.Fatal("first chunk: writer not woken (it sleeps without a timer while nothing is pending)")
	}
	for i := range 3 {
		w.add(msgs(2))
		if woken() {
			t.Fatalf("chunk %d below BatchMessages woke the writer", i+2)
		}
	}
	w.add(msgs(3)) // 1+6+3 = 10 = BatchMessages
	if !woken() {
		t.Fatal("batch became full: writer not woken")
	}
	w.add(msgs(1))
	if woken() {
		t.Fatal("already full: woken again")
	}

	batch, wait := w.take(false)
	if len(batch) != 5 || wait != 0 {
		t.Fatalf("take: %d chunks, wait %v; want the 5 chunks making the full batch now", len(batch), wait)
	}
	if batch, wait := w.take(false); batch != nil || wait <= 0 {
		t.Fatalf("take of a young 1-message remainder: %d chunks, wait %v; want a wait", len(batch), wait)
	}
	if w.queued != 1 {
		t.Fatalf("queued %d after the full batch was taken, want 1", w.queued)
	}
}
