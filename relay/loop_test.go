package relay

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/panjf2000/gnet/v2"

	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// chanLoop is a gnet.EventLoop whose Execute hands the task to one
// goroutine, like a real event loop.
type chanLoop struct {
	inlineLoop
	ch chan gnet.Runnable
}

func (c chanLoop) Execute(_ context.Context, r gnet.Runnable) error {
	c.ch <- r
	return nil
}

// TestLoopExecuteLargeRounds: tasks queued from many goroutines run exactly
// once, in order per producer, also when a drain round holds more than
// the 1024 tasks whose queue is recycled (a recycled queue aliasing the
// running round made the loop run nil tasks: a crash at 5,000 publishes/s).
func TestLoopExecuteLargeRounds(t *testing.T) {
	s, _ := benchServer(t, "room", 0)
	cl := chanLoop{ch: make(chan gnet.Runnable, 16)}
	l := newLoop(0, cl, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range cl.ch {
			_ = r.Run(context.Background())
		}
	}()
	const producers, perProducer = 8, 20_000
	got := make([][]int, producers) // touched only on the loop goroutine
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				l.execute(func() { got[p] = append(got[p], i) })
			}
		})
	}
	wg.Wait()
	fin := make(chan struct{})
	l.execute(func() { close(fin) })
	<-fin
	close(cl.ch)
	<-done
	for p := range producers {
		if len(got[p]) != perProducer {
			t.Fatalf("producer %d: %d tasks ran, want %d", p, len(got[p]), perProducer)
		}
		for i, v := range got[p] {
			if v != i {
				t.Fatalf("producer %d: task %d ran as %d", p, i, v)
			}
		}
	}
}

// TestDeliverInChunks: a fan-out cut into rounds of deliverBudget
// subscribers serves every subscriber exactly once although the list
// changes between rounds (a subscriber not yet served leaves, one joins
// positioned after the publication), and the next item waits for it.
func TestDeliverInChunks(t *testing.T) {
	_, l := benchServer(t, "room", 0)
	var conns []*slowConn
	var subs []*subscription
	add := func(last uint64) {
		c := &slowConn{}
		cl := &client{c: c, l: l, state: stateConnected}
		l.conns[cl] = struct{}{}
		sub := &subscription{ch: "room", state: subLive, last: last}
		l.addSub(cl, sub)
		conns, subs = append(conns, c), append(subs, sub)
	}
	for range 10 {
		add(0)
	}
	mk := func(seq uint64) item {
		return pubItem(&heraldv1.Publication{Channel: "room", Seq: seq, Message: &heraldv1.Message{Data: []byte(`1`)}})
	}
	l.work = append(l.work, mk(1), mk(2))
	if !l.deliverSome(3) {
		t.Fatal("a 10-subscriber fan-out finished within a budget of 3")
	}
	l.flush()
	// subs[0] has not been served yet (the walk goes backwards): it leaves.
	l.removeSub(subs[0].cl, subs[0])
	add(1) // joins positioned at seq 1
	for l.deliverSome(3) {
		l.flush()
	}
	l.flush()
	for i, c := range conns {
		want := 2
		switch i {
		case 0:
			want = 0
		case 10:
			want = 1 // only seq 2
		}
		if len(c.written) != want {
			t.Errorf("subscriber %d got %d frames, want %d", i, len(c.written), want)
		}
	}
}

// TestCoalesceQueuedGroups: publication groups of a channel that queued up
// while the loop was busy reach each subscriber as one frame; a reset of
// the channel in between keeps them apart; other channels do not matter.
func TestCoalesceQueuedGroups(t *testing.T) {
	_, l := benchServer(t, "room", 0)
	c := &slowConn{}
	cl := &client{c: c, l: l, state: stateConnected}
	l.conns[cl] = struct{}{}
	l.addSub(cl, &subscription{ch: "room", state: subLive})
	mk := func(ch string, seq uint64) item {
		return pubItem(&heraldv1.Publication{Channel: ch, Seq: seq, Message: &heraldv1.Message{Data: []byte(`1`)}})
	}
	l.work = append(l.work, mk("room", 1), mk("other", 7), mk("room", 2), mk("room", 3))
	l.coalesce()
	l.deliverSome(deliverBudget)
	l.flush()
	if len(c.written) != 1 || strings.Count(string(c.written[0]), "\n") != 2 {
		t.Fatalf("frames %q, want one with 3 pushes", c.written)
	}
	c.written = nil
	l.work = append(l.work, mk("room", 4), item{kind: itemReady, ch: "room"}, mk("room", 5))
	l.coalesce()
	l.deliverSome(deliverBudget)
	l.flush()
	if len(c.written) != 2 {
		t.Fatalf("frames %q, want two", c.written)
	}
}
