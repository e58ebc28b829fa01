package relay

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/herald-chat/herald/internal/protocol"
)

// loop is the relay's state of one gnet event loop. Every field is owned by
// the loop goroutine: it is only touched from gnet callbacks of connections
// of this loop and from tasks run with execute.
type loop struct {
	idx int
	el  gnet.EventLoop
	srv *Server

	conns map[*client]struct{}
	// subs maps a channel to the local subscriptions of this loop.
	subs map[string]map[*client]*subscription

	scratch []byte           // JSON encoding scratch
	arena   arena            // copies of reply frames until the next flush
	touched []*client        // clients with queued frames
	iovs    [][][]byte       // free iov slices lent to clients between queueing and flush
	dec     protocol.Decoder // command decoder (fast path for pong and publish)
	z       deflater         // permessage-deflate state, used only with Compression

	// Graceful drain: connections at its start and how many were closed.
	drainTotal, drained int

	// inflight are the publishes waiting for Kafka, in deadline order
	// (PublishTimeout is the same for all).
	inflight []*pubOp

	// Tasks from other goroutines, run in FIFO order. gnet's own task
	// queues may reorder low-priority tasks under load (overflow into a
	// second queue), which would reorder broadcasts; so one drain task at
	// a time is handed to gnet and it runs everything queued here in order.
	tmu       sync.Mutex
	tasks     []func()
	spare     []func()
	scheduled bool
}

func newLoop(idx int, el gnet.EventLoop, srv *Server) *loop {
	return &loop{idx: idx, el: el, srv: srv, conns: map[*client]struct{}{}, subs: map[string]map[*client]*subscription{}}
}

// execute runs fn on the loop goroutine, after every task queued before it,
// then flushes what it queued for clients. It is safe to call from any
// goroutine and never blocks.
func (l *loop) execute(fn func()) {
	l.tmu.Lock()
	l.tasks = append(l.tasks, fn)
	need := !l.scheduled
	l.scheduled = true
	l.tmu.Unlock()
	if need {
		if err := l.el.Execute(context.Background(), gnet.RunnableFunc(l.drain)); err != nil {
			// Engine shutting down: the tasks are dropped with it.
			l.tmu.Lock()
			l.scheduled = false
			l.tasks = nil
			l.tmu.Unlock()
		}
	}
}

// drain runs the queued tasks in order, flushing once per round.
func (l *loop) drain(context.Context) error {
	for {
		l.tmu.Lock()
		batch := l.tasks
		if len(batch) == 0 {
			l.scheduled = false
			l.tmu.Unlock()
			return nil
		}
		l.tasks = l.spare[:0]
		l.tmu.Unlock()
		for i, fn := range batch {
			fn()
			batch[i] = nil
		}
		l.flush()
		l.tmu.Lock()
		if cap(batch) <= 1024 {
			l.spare = batch[:0]
		}
		l.tmu.Unlock()
	}
}

// flush writes every touched client's queued frames with one writev each.
func (l *loop) flush() {
	for i, cl := range l.touched {
		cl.flush()
		l.touched[i] = nil
	}
	l.touched = l.touched[:0]
	l.arena.reset()
}

// tick runs the per-connection timers: handshake deadline (slowloris),
// idle timeout, pings, pong timeout, token and subscription token expiry.
func (l *loop) tick(now time.Time) {
	l.srv.m.loopLag.WithLabelValues(strconv.Itoa(l.idx)).Observe(time.Since(now).Seconds())
	n := now.UnixNano()
	cfg := &l.srv.cfg
	idle := int64(cfg.IdleTimeout)
	l.expirePublishes(n)
	for cl := range l.conns {
		switch cl.state {
		case stateHTTP:
			if n > cl.deadline {
				// The upgrade request did not complete in time.
				_, _ = cl.c.Write([]byte("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
				cl.state = stateClosing
				_ = cl.c.Close()
			}
		case stateWS:
			if n > cl.deadline || n-cl.lastFrame > idle {
				cl.disconnect(discStale)
			}
		case stateConnected:
			if cl.expiresAt != 0 && n > cl.expiresAt {
				cl.disconnect(discExpired)
				continue
			}
			if cl.subExpiry != 0 && n > cl.subExpiry {
				cl.disconnect(protocol.DisconnectSubExpired)
				continue
			}
			if (cl.pongDeadline != 0 && n > cl.pongDeadline) || n-cl.lastFrame > idle {
				cl.disconnect(discNoPong)
				continue
			}
			if n >= cl.nextPing {
				cl.enqueueJSON(append(l.scratch[:0], '{', '}'))
				cl.nextPing = n + int64(cfg.PingInterval)
				if cl.pongDeadline == 0 {
					cl.pongDeadline = n + int64(cfg.PongTimeout)
				}
			}
		}
	}
	l.flush()
}

func (l *loop) getIOV() [][]byte {
	if n := len(l.iovs); n > 0 {
		v := l.iovs[n-1]
		l.iovs[n-1] = nil
		l.iovs = l.iovs[:n-1]
		return v
	}
	return make([][]byte, 0, 16)
}

func (l *loop) putIOV(v [][]byte) {
	if cap(v) <= 1024 && len(l.iovs) < 4096 {
		l.iovs = append(l.iovs, v)
	}
}

// arena hands out byte slices that stay valid until reset. Chunks are never
// reallocated in place, so earlier slices survive later allocations.
type arena struct {
	cur []byte
}

const arenaChunk = 16 << 10

func (a *arena) alloc(n int) []byte {
	if cap(a.cur)-len(a.cur) < n {
		a.cur = make([]byte, 0, max(arenaChunk, n))
	}
	s := len(a.cur)
	a.cur = a.cur[:s+n]
	return a.cur[s : s+n : s+n]
}

func (a *arena) reset() {
	if cap(a.cur) > 4*arenaChunk {
		a.cur = nil
		return
	}
	a.cur = a.cur[:0]
}

// addSub registers sub of cl on this loop.
func (l *loop) addSub(cl *client, sub *subscription) {
	m := l.subs[sub.ch]
	if m == nil {
		m = make(map[*client]*subscription, 1)
		l.subs[sub.ch] = m
	}
	m[cl] = sub
	cl.subs[sub.ch] = sub
	l.srv.m.subscriptions.Inc()
}

// removeSub unregisters sub of cl from this loop and the router.
func (l *loop) removeSub(cl *client, sub *subscription) {
	if m := l.subs[sub.ch]; m != nil {
		delete(m, cl)
		if len(m) == 0 {
			delete(l.subs, sub.ch)
		}
	}
	delete(cl.subs, sub.ch)
	sub.pending = nil
	l.srv.router.leave(sub.ch, l.idx)
	l.srv.m.subscriptions.Dec()
}

// deliver applies router items to this loop's subscriptions. Runs on the loop.
func (l *loop) deliver(items []item) {
	limit := l.srv.cfg.PendingLimit
	for i := range items {
		it := &items[i]
		m := l.subs[it.ch]
		switch it.kind {
		case itemPub:
			n := 0
			for cl, sub := range m {
				if cl.state >= stateClosing {
					continue
				}
				frame := it.frame
				if cl.deflate {
					if it.zframe == nil {
						it.zframe = l.z.compressFrame(it.frame)
					}
					frame = it.zframe
				}
				if sub.state == subLive {
					if it.seq > sub.last {
						sub.last = it.seq
						cl.enqueue(frame)
						n++
					}
					continue
				}
				if len(sub.pending) >= limit {
					cl.disconnect(protocol.DisconnectInsufficientState)
					continue
				}
				sub.pending = append(sub.pending, pendingPush{seq: it.seq, frame: frame})
			}
			if n > 0 {
				l.srv.m.fanout.Observe(float64(n))
			}
		case itemReady:
			for cl, sub := range m {
				if sub.state == subWaitSync && cl.state < stateClosing {
					cl.position(sub, it.epoch, it.seq)
				}
			}
		case itemFail:
			for cl, sub := range m {
				if sub.state == subWaitSync && cl.state < stateClosing {
					cl.failSub(sub)
				}
			}
		case itemReset:
			for cl, sub := range m {
				if sub.state != subWaitSync && cl.state < stateClosing {
					cl.insufficientState(sub)
				}
			}
		}
	}
}

// drainStep closes this loop's share of connections for a graceful drain:
// frac (0..1] of the connections it had when the drain started, with 3001
// shutdown (connections still in the HTTP upgrade are just closed).
func (l *loop) drainStep(frac float64) {
	if l.drainTotal == 0 && l.drained == 0 {
		l.drainTotal = len(l.conns)
	}
	want := int(math.Ceil(frac * float64(l.drainTotal)))
	if frac >= 1 {
		want = math.MaxInt
	}
	for cl := range l.conns {
		if l.drained >= want {
			break
		}
		if cl.state >= stateClosing {
			continue
		}
		l.drained++
		if cl.state == stateHTTP {
			cl.state = stateClosing
			_ = cl.c.Close()
			continue
		}
		cl.disconnect(protocol.DisconnectShutdown)
	}
	l.flush()
}

// errPublishTimeout answers a publish Kafka did not ack within
// PublishTimeout.
var errPublishTimeout = errors.New("kafka did not acknowledge the publish in time")

// expirePublishes answers the publishes past their deadline with an error
// and forgets the answered ones.
func (l *loop) expirePublishes(now int64) {
	i := 0
	for ; i < len(l.inflight); i++ {
		op := l.inflight[i]
		if !op.done && op.deadline > now {
			break
		}
		op.finish(errPublishTimeout)
		l.inflight[i] = nil
	}
	if i > 0 {
		l.inflight = append(l.inflight[:0], l.inflight[i:]...)
	}
}
