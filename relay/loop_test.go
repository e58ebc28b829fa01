package relay

import (
	"context"
	"strconv"
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
		l.addConn(cl)
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
	l.addConn(cl)
	l.addSub(cl, &subscription{ch: "room", state: subLive})
	mk := func(ch string, seq uint64) item {
		return pubItem(&heraldv1.Publication{Channel: ch, Seq: seq, Message: &heraldv1.Message{Data: []byte(`1`)}})
	}
	l.work = append(l.work, mk("room", 1), mk("other", 1), mk("room", 2), mk("room", 3))
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

// recordLoop is a gnet.EventLoop that keeps the tasks handed to it, to be
// run by the test when it chooses.
type recordLoop struct {
	inlineLoop
	tasks *[]gnet.Runnable
}

func (r recordLoop) Execute(_ context.Context, t gnet.Runnable) error {
	*r.tasks = append(*r.tasks, t)
	return nil
}

// writevConn records every writev as one write of its frames.
type writevConn struct {
	benchConn
	writes [][]string // per writev, its frames' payloads
}

func (c *writevConn) Writev(bs [][]byte) (int, error) {
	n := 0
	var w []string
	for _, b := range bs {
		w = append(w, string(b[headerSize(0):])) // 1-byte-length header: small frames
		n += len(b)
	}
	c.writes = append(c.writes, w)
	return n, nil
}

// TestCatchUpRidesAlong: a publication that arrives while the fan-out of
// the previous one is half-way through its subscriber list reaches the
// subscribers not yet visited in the same writev as the previous one;
// those already visited get it in the next pass; everyone gets both
// exactly once, in order. Without the catch-up the second group waits for
// the first pass to end and every subscriber needs two writes.
func TestCatchUpRidesAlong(t *testing.T) {
	const n = 3*deliverBudget + 100
	s, l := benchServer(t, "room", 0)
	var queued []gnet.Runnable
	l.el = recordLoop{tasks: &queued}
	s.yields = make(chan *loop, 1)
	conns := make([]*writevConn, n)
	for i := range conns {
		conns[i] = &writevConn{}
		cl := &client{c: conns[i], l: l, state: stateConnected}
		l.addConn(cl)
		l.addSub(cl, &subscription{ch: "room", state: subLive})
	}
	mk := func(seq uint64, data string) item {
		return pubItem(&heraldv1.Publication{Channel: "room", Seq: seq, Message: &heraldv1.Message{Data: []byte(data)}})
	}
	// run runs the queued drain task and then every drain the loop asks
	// the yielder for, calling between(round) after each round.
	run := func(between func(round int)) {
		if len(queued) != 1 {
			t.Fatalf("%d tasks queued, want the drain", len(queued))
		}
		task := queued[0]
		queued = queued[:0]
		_ = task.Run(context.Background())
		for round := 1; ; round++ {
			between(round)
			select {
			case <-s.yields:
				l.schedule()
				task = queued[0]
				queued = queued[:0]
				_ = task.Run(context.Background())
			default:
				return
			}
		}
	}
	l.post([]item{mk(1, `1`)})
	run(func(round int) {
		if round == 1 {
			l.post([]item{mk(2, `2`)}) // arrives after the first 1,024
		}
	})
	// A third, alone: one write each.
	l.post([]item{mk(3, `3`)})
	run(func(int) {})

	twoWrites := 0
	for i, c := range conns {
		var got []string
		for _, w := range c.writes {
			got = append(got, strings.Join(w, "|"))
		}
		p := func(seq int, data string) string {
			return `{"push":{"channel":"room","pub":{"data":` + data + `,"info":{},"offset":` + strconv.Itoa(seq) + `}}}`
		}
		all := strings.Join(got, "|")
		if want := p(1, `1`) + "|" + p(2, `2`) + "|" + p(3, `3`); all != want {
			t.Fatalf("subscriber %d got %q, want %q", i, all, want)
		}
		switch len(c.writes) {
		case 3:
			twoWrites++ // visited before the second arrived: 1, then 2, then 3
		case 2:
			if len(c.writes[0]) != 2 {
				t.Fatalf("subscriber %d: first writev %q, want both publications", i, c.writes[0])
			}
		default:
			t.Fatalf("subscriber %d: %d writes %q", i, len(c.writes), c.writes)
		}
	}
	if twoWrites != deliverBudget {
		t.Fatalf("%d subscribers needed a write per publication, want only the %d visited before the second arrived", twoWrites, deliverBudget)
	}
}

// TestCatchUpEndsWithItsFanout: groups riding along with a fan-out stop
// riding when it ends, also when it ends because every subscriber of the
// channel left half-way: the next item, of another channel, must not carry
// them to its own subscribers.
func TestCatchUpEndsWithItsFanout(t *testing.T) {
	_, l := benchServer(t, "room", 0)
	var room []*subscription
	for range 2*deliverBudget + 1 {
		cl := &client{c: &benchConn{}, l: l, state: stateConnected}
		l.addConn(cl)
		sub := &subscription{ch: "room", state: subLive}
		l.addSub(cl, sub)
		room = append(room, sub)
	}
	other := &writevConn{}
	ocl := &client{c: other, l: l, state: stateConnected}
	l.addConn(ocl)
	l.addSub(ocl, &subscription{ch: "other", state: subLive})
	mk := func(ch string, seq uint64) item {
		return pubItem(&heraldv1.Publication{Channel: ch, Seq: seq, Message: &heraldv1.Message{Data: []byte(`1`)}})
	}
	l.work = append(l.work, mk("room", 1), mk("other", 1), mk("room", 2))
	if !l.deliverSome(deliverBudget) || len(l.ahead) != 1 {
		t.Fatalf("fan-out of 2,049 within one round, or seq 2 not riding along (%v)", l.ahead)
	}
	l.flush()
	for _, sub := range room {
		l.removeSub(sub.cl, sub)
	}
	for l.deliverSome(deliverBudget) {
		l.flush()
	}
	l.flush()
	if len(other.writes) != 1 || len(other.writes[0]) != 1 || !strings.Contains(other.writes[0][0], `"channel":"other"`) {
		t.Fatalf("subscriber of other got %q, want its one push", other.writes)
	}
}
