package relay

import (
	"testing"

	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// TestLinkQueue: a link's interest queue keeps deltas in order, drops them
// while no stream is open, takes one delta larger than the bound when
// empty, and past ControllerQueue channels drops what it holds, closes and
// breaks the stream (whose successor starts with the whole interest set).
func TestLinkQueue(t *testing.T) {
	msgs := make([]*heraldv1.RelayMessage, 6)
	for i := range msgs {
		msgs[i] = &heraldv1.RelayMessage{}
	}
	l := &link{max: 10, wake: make(chan struct{}, 1)}
	if l.enqueue(msgs[0], 3) || l.queued != 0 {
		t.Fatalf("no stream open: queued %d channels", l.queued)
	}
	broken := 0
	l.open, l.brk = true, func() { broken++ }
	for i := range 3 {
		if l.enqueue(msgs[i], 3) {
			t.Fatalf("delta %d reported full at %d channels", i, l.queued)
		}
	}
	if d, ok := l.next(); !ok || d.msg != msgs[0] || l.queued != 6 {
		t.Fatalf("next = %v %v, queued %d; want the first delta, 6 left", d.msg == msgs[0], ok, l.queued)
	}
	if l.enqueue(msgs[3], 3) || l.queued != 9 {
		t.Fatalf("queued %d, want 9", l.queued)
	}
	if !l.enqueue(msgs[4], 3) || broken != 1 || l.queued != 0 || l.open {
		t.Fatalf("over the bound: full not reported (broken %d, queued %d, open %v)", broken, l.queued, l.open)
	}
	if _, ok := l.next(); ok {
		t.Fatal("a dropped delta was taken")
	}
	l.open = true
	if l.enqueue(msgs[5], 25) || l.queued != 25 {
		t.Fatalf("an empty queue refused one delta of 25 channels (queued %d)", l.queued)
	}
	for i, want := range []*heraldv1.RelayMessage{msgs[5]} {
		if d, ok := l.next(); !ok || d.msg != want {
			t.Fatalf("delta %d out of order", i)
		}
	}
}
