package relay

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/herald-chat/herald/internal/protocol"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// loop is the relay's state of one gnet event loop. Every field is owned by
// the loop goroutine: it is only touched from gnet callbacks of connections
// of this loop and from tasks run with execute.
type loop struct {
	idx int
	el  gnet.EventLoop
	srv *Server

	// wheel holds the loop's open connections, each in the slot of the
	// timer tick at which its next deadline falls due (wheel.go); slices:
	// 8 bytes per connection. Walk all of them with allConns.
	wheel     [wheelSlots][]*client
	nconns    int
	tickEvery int64 // ns between timer ticks
	lastTick  int64 // the last tick run (absolute: unix ns / tickEvery)
	// subs maps a channel to the local subscriptions of this loop (a slice:
	// 8 bytes per subscriber, and fan-out iterates it).
	subs map[string]*chanSubs

	scratch []byte // JSON encoding scratch
	// connectSubs lists a connect reply's server-side subscriptions.
	connectSubs []protocol.ChannelResult
	arena       arena            // copies of reply frames until the next flush
	touched     []*client        // clients with queued frames
	iovs        [][][]byte       // free iov slices lent to clients between queueing and flush
	dec         protocol.Decoder // command decoder (fast path for pong, publish, connect, subscribe)
	z           deflater         // permessage-deflate state, used only with Compression

	// Graceful drain: connections at its start and how many were closed.
	drainTotal, drained int

	// inflight are the publishes waiting for Kafka, in deadline order
	// (PublishTimeout is the same for all).
	inflight []*pubOp

	// Tasks and deliveries from other goroutines. gnet's own task queues
	// may reorder low-priority tasks under load (overflow into a second
	// queue), which would reorder broadcasts; so one drain task at a time is
	// handed to gnet and it runs what is queued here: tasks (replies, acks,
	// timers) in FIFO order first, then router deliveries in FIFO order, at
	// most deliverBudget subscribers per round (see drain). tmu guards
	// tasks, spare, inbox and scheduled; a leaf, held for appends only.
	tmu       sync.Mutex
	tasks     []func()
	spare     []func()
	inbox     []item
	scheduled bool

	// Deliveries being run (loop-owned): work[wi] is in progress, its
	// subscribers below index wj are still to be handled (wj < 0: not
	// started).
	work   []item
	wi, wj int
	// written are the posted times of the publication items finished in
	// this round, observed in herald_relay_fanout_seconds once the round's
	// writes are done.
	written []int64
	open    map[string]int // coalesce scratch: channel → index in work
	// ahead are the indices in work of the publication items of work[wi]'s
	// channel queued behind it (catch-up, see lookahead).
	ahead []int
	// presq are the presence changes of this round, reported by
	// flushPresence (a task queued with the first).
	presq []*heraldv1.PresenceChange
}

// deliverBudget bounds the subscribers one drain round hands deliveries
// to before the loop flushes and yields to its I/O events (reads,
// connects) and to queued tasks: a fan-out to 10,000 subscribers must not
// hold a publisher's command or a reply back for its whole duration.
const deliverBudget = 1024

func newLoop(idx int, el gnet.EventLoop, srv *Server) *loop {
	l := &loop{idx: idx, el: el, srv: srv, subs: map[string]*chanSubs{}, wj: -1, tickEvery: int64(tickInterval(&srv.cfg))}
	l.lastTick = l.tickOf(time.Now().UnixNano())
	return l
}

// post queues router deliveries, in order after those posted before. It is
// safe to call from any goroutine and never blocks.
func (l *loop) post(items []item) {
	l.tmu.Lock()
	l.inbox = append(l.inbox, items...)
	need := !l.scheduled
	l.scheduled = true
	l.tmu.Unlock()
	if need {
		l.schedule()
	}
}

// schedule hands the drain task to gnet; l.scheduled is already set.
func (l *loop) schedule() {
	if err := l.el.Execute(context.Background(), gnet.RunnableFunc(l.drain)); err != nil {
		// Engine shutting down: the work is dropped with it.
		l.tmu.Lock()
		l.scheduled = false
		l.tasks, l.inbox = nil, nil
		l.tmu.Unlock()
	}
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
		l.schedule()
	}
}

// drain runs the queued tasks, then deliveries, flushing once per round.
// When a round used up deliverBudget with deliveries left, it returns
// with l.scheduled still set and asks the server's yielder to schedule it
// again: gnet runs a task queued by a running task before polling, so
// queueing itself here would never let the loop read.
func (l *loop) drain(context.Context) error {
	for {
		l.tmu.Lock()
		batch := l.tasks
		merge := false
		if len(l.inbox) > 0 {
			merge = len(l.work) > l.wi
			l.work = append(l.work, l.inbox...)
			clear(l.inbox)
			l.inbox = l.inbox[:0]
		}
		if len(batch) == 0 && l.wi >= len(l.work) {
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
		if merge {
			l.coalesce()
			if l.wj >= 0 {
				l.lookahead()
			}
		}
		more := l.deliverSome(deliverBudget)
		l.flush()
		l.observeWritten()
		l.tmu.Lock()
		// The next round's queue is spare: it must never be the array
		// being run (or appends would overwrite it), so a large batch is
		// dropped and spare cleared rather than left aliasing l.tasks.
		if cap(batch) <= 1024 {
			l.spare = batch[:0]
		} else {
			l.spare = nil
		}
		l.tmu.Unlock()
		if more && l.srv.yield(l) {
			return nil
		}
	}
}

// observeWritten records the fan-out latency of the publication items
// this round finished (their writes are done: flush ran).
func (l *loop) observeWritten() {
	if len(l.written) == 0 {
		return
	}
	now := time.Now().UnixNano()
	for _, p := range l.written {
		l.srv.m.fanoutLatency.Observe(float64(now-p) / 1e9)
	}
	l.written = l.written[:0]
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

// check runs cl's timers at unix time n: handshake deadline (slowloris),
// idle timeout, pings, pong timeout, token and subscription token expiry,
// close linger. It runs when cl's slot in the timer wheel comes up.
func (l *loop) check(cl *client, n int64) {
	cfg := &l.srv.cfg
	idle := int64(cfg.IdleTimeout)
	switch cl.state {
	case stateHTTP:
		if n > cl.deadline {
			// The upgrade request did not complete in time.
			_, _ = cl.c.Write([]byte("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
			cl.state = stateClosing
			_ = cl.c.Close()
		}
	case stateClosing:
		if cl.lingering {
			if n > cl.deadline {
				cl.lingering = false
				_ = cl.c.Close()
			} else {
				cl.shutWrite()
			}
		}
	case stateWS:
		if n > cl.deadline || n-cl.lastFrame > idle {
			cl.disconnect(discStale)
		}
	case stateConnected:
		if cl.expiresAt != 0 && n > cl.expiresAt {
			cl.disconnect(discExpired)
			return
		}
		if cl.subExpiry != 0 && n > cl.subExpiry {
			cl.disconnect(protocol.DisconnectSubExpired)
			return
		}
		if (cl.pongDeadline != 0 && n > cl.pongDeadline) || n-cl.lastFrame > idle {
			cl.disconnect(discNoPong)
			return
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

// chanSubs are a loop's subscriptions of one channel; sub.idx is the index.
type chanSubs struct {
	subs []*subscription
}

// addSub registers sub of cl on this loop.
func (l *loop) addSub(cl *client, sub *subscription) {
	cs := l.subs[sub.ch]
	if cs == nil {
		cs = &chanSubs{}
		l.subs[sub.ch] = cs
	}
	sub.cl = cl
	sub.idx = int32(len(cs.subs))
	cs.subs = append(cs.subs, sub)
	cl.subs = append(cl.subs, sub)
	l.srv.m.subscriptions.Inc()
}

// removeSub unregisters sub of cl from this loop and the router. During a
// fan-out over the channel's list only the current subscription may be
// removed (deliver iterates backwards).
func (l *loop) removeSub(cl *client, sub *subscription) {
	if cs := l.subs[sub.ch]; cs != nil && int(sub.idx) < len(cs.subs) && cs.subs[sub.idx] == sub {
		last := len(cs.subs) - 1
		moved := cs.subs[last]
		cs.subs[sub.idx] = moved
		moved.idx = sub.idx
		cs.subs[last] = nil
		cs.subs = cs.subs[:last]
		if len(cs.subs) == 0 {
			delete(l.subs, sub.ch)
		} else if cap(cs.subs) > 64 && len(cs.subs) < cap(cs.subs)/4 {
			cs.subs = append([]*subscription(nil), cs.subs...)
		}
	}
	cl.subs.remove(sub)
	sub.init = nil
	if sub.pres {
		sub.pres = false
		l.presenceLeave(cl, sub)
	}
	l.srv.router.leave(sub.ch, l.idx)
	l.srv.m.subscriptions.Dec()
}

// maxCoalesced caps the payload of a group coalesce makes.
const maxCoalesced = 64 << 10

// coalesce merges, per channel, the consecutive publication groups queued
// for this loop (arrived while it was busy) into one group: every
// subscriber then gets one frame, and one writev, for all of them. The
// merged group is new (the queued ones are shared with other loops); the
// merged-away items become itemSkip. A non-publication item of a channel
// ends its run; the item in progress is left alone. Runs on the loop.
func (l *loop) coalesce() {
	start := l.wi
	if l.wj >= 0 {
		start++
	}
	if l.open == nil {
		l.open = make(map[string]int)
	}
	for k := start; k < len(l.work); k++ {
		it := &l.work[k]
		switch it.kind {
		case itemSkip:
			continue
		case itemPub:
		default:
			delete(l.open, it.ch)
			continue
		}
		if it.ahead {
			l.open[it.ch] = k // never merged away: some subscribers have it
			continue
		}
		if i, ok := l.open[it.ch]; ok {
			dst := &l.work[i]
			if !dst.ahead && dst.grp.last+1 == it.grp.first && len(dst.grp.buf)+len(it.grp.buf) <= maxCoalesced {
				dst.grp, dst.zframe = mergeGroups(dst.grp, it.grp), nil
				*it = item{kind: itemSkip}
				continue
			}
		}
		l.open[it.ch] = k
	}
	clear(l.open)
}

// mergeGroups returns a new group holding a's publications then b's.
func mergeGroups(a, b *pushGroup) *pushGroup {
	g := &pushGroup{first: a.first, last: b.last}
	pa, pb := a.buf[maxServerHeader:], b.buf[maxServerHeader:]
	g.buf = make([]byte, maxServerHeader, maxServerHeader+len(pa)+1+len(pb))
	g.buf = append(append(append(g.buf, pa...), '\n'), pb...)
	g.finish()
	return g
}

// deliver applies router items to this loop's subscriptions at once (tests
// and benchmarks; the relay posts them). Runs on the loop.
func (l *loop) deliver(items []item) {
	l.work = append(l.work, items...)
	l.deliverSome(math.MaxInt)
}

// deliverSome applies queued deliveries, in order, until about budget
// subscribers were handled, and reports whether some are left. Runs on the
// loop.
func (l *loop) deliverSome(budget int) bool {
	for l.wi < len(l.work) {
		budget = l.deliverItem(&l.work[l.wi], budget)
		if l.wj >= 0 {
			return true // budget used up inside this item
		}
		l.ahead = l.ahead[:0] // they were riding along with this item
		if it := &l.work[l.wi]; it.kind == itemPub && it.posted != 0 {
			l.written = append(l.written, it.posted)
		}
		l.work[l.wi] = item{}
		l.wi++
		if budget <= 0 && l.wi < len(l.work) {
			return true
		}
	}
	l.work, l.wi = l.work[:0], 0
	if cap(l.work) > 4096 {
		l.work = nil
	}
	return false
}

// deliverItem hands it to up to budget subscribers, from l.wj (or all of
// the channel's when not started) down, and returns the budget left; l.wj
// is -1 when the item is done. Subscriber lists are walked backwards:
// handling one subscription may remove it (swapped with the last, already
// visited). Between two calls for one item the list may change: a
// subscriber removed is not served, one swapped below the cursor may be
// visited twice (its seq check drops the second), one added is positioned
// at or after this item and skips it.
func (l *loop) deliverItem(it *item, budget int) int {
	if it.kind == itemSkip {
		l.wj = -1
		return budget
	}
	cs := l.subs[it.ch]
	if cs == nil {
		l.wj = -1
		return budget - 1
	}
	j := l.wj
	if j < 0 || j > len(cs.subs) {
		if it.kind == itemPub && len(cs.subs) > budget {
			// This fan-out spans rounds: publications of the channel
			// already queued behind it ride along from the start.
			l.lookahead()
		}
		j = len(cs.subs)
	}
	limit := l.srv.cfg.PendingLimit
	n := 0
	for ; j > 0 && budget > 0; budget-- {
		j--
		if j >= len(cs.subs) {
			continue
		}
		sub := cs.subs[j]
		cl := sub.cl
		switch it.kind {
		case itemPub:
			if cl.state >= stateClosing {
				continue
			}
			g := it.grp
			var z []byte
			if cl.deflate {
				if it.zframe == nil {
					it.zframe = l.z.compressFrame(g.frame)
				}
				z = it.zframe
			}
			if sub.state == subLive {
				if cl.push(sub, pushRef{g: g, z: z}) {
					n++
				}
				for _, k := range l.ahead {
					a := &l.work[k]
					var az []byte
					if cl.deflate {
						if a.zframe == nil {
							a.zframe = l.z.compressFrame(a.grp.frame)
						}
						az = a.zframe
					}
					if cl.push(sub, pushRef{g: a.grp, z: az}) {
						n++
					}
				}
				continue
			}
			in := sub.init
			if len(in.pending) >= limit {
				cl.disconnect(protocol.DisconnectInsufficientState)
				continue
			}
			in.pending = append(in.pending, pushRef{g: g, z: z})
		case itemReady:
			if sub.state == subWaitSync && cl.state < stateClosing {
				cl.position(sub, it.epoch, it.seq)
			}
		case itemFail:
			if sub.state == subWaitSync && cl.state < stateClosing {
				cl.failSub(sub)
			}
		case itemReset:
			if sub.state != subWaitSync && cl.state < stateClosing {
				cl.insufficientState(sub)
			}
		case itemPresence:
			l.deliverPresence(it, sub)
		}
	}
	if n > 0 {
		l.srv.m.fanout.Observe(float64(n))
	}
	if j > 0 {
		l.wj = j
	} else {
		l.wj = -1
	}
	return budget
}

// maxAhead bounds the queued groups a subscriber visited by a fan-out in
// progress gets along with it (iovecs of one writev).
const maxAhead = 8

// lookahead collects the publication groups of work[wi]'s channel queued
// behind it, up to the channel's next non-publication item, into l.ahead.
// Every live subscriber the fan-out of work[wi] visits from now on gets
// them in the same writev, so under saturation a subscriber gets one
// write per visit for all that queued up, rather than one per group in
// separate passes over the list: when a fan-out to 10,000 takes longer
// than the interval between publications, the later groups would
// otherwise wait for it to finish and then need a pass of their own. The
// groups keep their place in work; when their turn comes, the seq check
// in push skips the subscribers that already have them. They are marked
// ahead so coalesce never merges into them. Runs on the loop.
func (l *loop) lookahead() {
	l.ahead = l.ahead[:0]
	cur := &l.work[l.wi]
	if cur.kind != itemPub {
		return
	}
	for k := l.wi + 1; k < len(l.work) && len(l.ahead) < maxAhead; k++ {
		it := &l.work[k]
		if it.kind == itemSkip || it.ch != cur.ch {
			continue
		}
		if it.kind != itemPub {
			break // a reset or (re)position must come between
		}
		it.ahead = true
		l.ahead = append(l.ahead, k)
	}
}

// drainStep closes this loop's share of connections for a graceful drain:
// frac (0..1] of the connections it had when the drain started, with 3001
// shutdown (connections still in the HTTP upgrade are just closed).
func (l *loop) drainStep(frac float64) {
	if l.drainTotal == 0 && l.drained == 0 {
		l.drainTotal = l.nconns
	}
	want := int(math.Ceil(frac * float64(l.drainTotal)))
	if frac >= 1 {
		want = math.MaxInt
	}
	for cl := range l.allConns {
		if l.drained >= want {
			break
		}
		if cl.state >= stateClosing {
			continue
		}
		if cl.closeAfterPublishes {
			continue // already told to go
		}
		l.drained++
		if cl.state == stateHTTP {
			cl.state = stateClosing
			_ = cl.c.Close()
			continue
		}
		cl.leave()
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
