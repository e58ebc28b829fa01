package relay

import (
	"math"
	"strconv"
	"time"
)

// The per-connection timers (handshake deadline, idle timeout, pings, pong
// timeout, token and subscription token expiry, close linger) live in a
// hashed timing wheel per loop: each connection sits in the slot of the
// timer tick at which its earliest deadline falls due, and a tick visits
// only that slot. A pass over every connection each tick cost ~17 ns per
// connection (BenchmarkTick): at hundreds of thousands of connections per
// loop that held the loop for milliseconds four times a second, and nearly
// every visit found nothing due (a connection's next event is usually its
// ping, 12–25 s away).
//
// Deadlines that move later (a frame resets the idle timeout, a pong clears
// the pong deadline) are left where they are: the visit finds nothing due
// and puts the client in its new slot. Deadlines that move earlier must
// call reschedule. Deadlines beyond the wheel's horizon park the client in
// the farthest slot, where it is looked at again.

// wheelSlots is the wheel's size: 128 ticks, 32 s at the 250 ms tick
// (beyond the default 25 s ping interval: a connected client's next ping
// always fits).
const wheelSlots = 128

// wheelIdxBits is the part of client.wheelPos holding the index within
// the slot (the slot number is above it).
const wheelIdxBits = 24

// tickInterval is the period of the timer ticks for cfg: a quarter of the
// shortest timeout, between 20 and 250 ms. At most 250 ms: the pings due in
// one tick go out (and their pongs come back) as one burst per loop, so a
// finer tick keeps each burst small (400 pings/s for 10,000 connections at
// 25 s → ~50 per loop and tick).
func tickInterval(cfg *Config) time.Duration {
	d := min(cfg.PingInterval, cfg.PongTimeout, cfg.HandshakeTimeout, cfg.IdleTimeout) / 4
	return max(min(d, 250*time.Millisecond), 20*time.Millisecond)
}

// tickOf is the absolute number of the tick covering unix time n.
func (l *loop) tickOf(n int64) int64 { return n / l.tickEvery }

// slotTick is the tick at which slot s is next visited.
func (l *loop) slotTick(s int) int64 {
	next := l.lastTick + 1
	return next + int64((s-int(next%wheelSlots)+wheelSlots)%wheelSlots)
}

// dueTick is the tick at which a client due at unix time due must be
// visited: the first one whose time is past due, within the wheel.
func (l *loop) dueTick(due int64) int64 {
	t := int64(math.MaxInt64)
	if due < math.MaxInt64-l.tickEvery {
		t = due/l.tickEvery + 1
	}
	return min(max(t, l.lastTick+1), l.lastTick+wheelSlots-1)
}

// place puts cl, not in the wheel, in the slot of tick t.
func (l *loop) place(cl *client, t int64) {
	s := int(t % wheelSlots)
	cl.wheelPos = uint32(s)<<wheelIdxBits | uint32(len(l.wheel[s]))
	l.wheel[s] = append(l.wheel[s], cl)
}

// unplace takes cl out of its slot: the slot's last client takes its place.
// It reports whether cl was in the wheel.
func (l *loop) unplace(cl *client) bool {
	if cl.wheelPos == notInWheel {
		return false
	}
	s, i := int(cl.wheelPos>>wheelIdxBits), int(cl.wheelPos&(1<<wheelIdxBits-1))
	b := l.wheel[s]
	if i >= len(b) || b[i] != cl {
		return false
	}
	last := len(b) - 1
	moved := b[last]
	b[i], moved.wheelPos = moved, uint32(s)<<wheelIdxBits|uint32(i)
	b[last] = nil
	l.wheel[s] = b[:last]
	cl.wheelPos = notInWheel
	return true
}

// notInWheel is client.wheelPos of a client in no slot.
const notInWheel = math.MaxUint32

// addConn adds cl to the loop's connections.
func (l *loop) addConn(cl *client) {
	cl.wheelPos = notInWheel
	l.place(cl, l.dueTick(cl.nextDue(int64(l.srv.cfg.IdleTimeout))))
	l.nconns++
}

// removeConn removes cl from the loop's connections.
func (l *loop) removeConn(cl *client) {
	if l.unplace(cl) {
		l.nconns--
	}
}

// reschedule moves cl to an earlier slot when one of its deadlines moved
// earlier than the tick it waits for.
func (l *loop) reschedule(cl *client) {
	if cl.wheelPos == notInWheel {
		return
	}
	t := l.dueTick(cl.nextDue(int64(l.srv.cfg.IdleTimeout)))
	if t < l.slotTick(int(cl.wheelPos>>wheelIdxBits)) {
		l.unplace(cl)
		l.place(cl, t)
	}
}

// allConns yields every connection of the loop at least once. The visited
// client may close (it leaves its slot; the slot's last client, already
// visited, takes its place) or move to another slot, where it may be
// yielded again: callers act only on clients not yet closing.
func (l *loop) allConns(yield func(*client) bool) {
	for s := range l.wheel {
		for i := len(l.wheel[s]) - 1; i >= 0; i-- {
			if i < len(l.wheel[s]) && !yield(l.wheel[s][i]) {
				return
			}
		}
	}
}

// nextDue is when cl's earliest deadline falls due (unix ns), given the
// idle timeout; math.MaxInt64 when it has none.
func (cl *client) nextDue(idle int64) int64 {
	switch cl.state {
	case stateHTTP:
		return cl.deadline
	case stateWS:
		return min(cl.deadline, cl.lastFrame+idle)
	case stateConnected:
		d := min(cl.nextPing, cl.lastFrame+idle)
		for _, t := range [...]int64{cl.expiresAt, cl.subExpiry, cl.pongDeadline} {
			if t != 0 {
				d = min(d, t)
			}
		}
		return d
	case stateClosing:
		if cl.lingering {
			if !cl.halfClosed {
				return 0 // retried every tick until the close frame has left
			}
			return cl.deadline
		}
	}
	return math.MaxInt64
}

// tick runs the timers due since the last tick: the slots of every tick up
// to now's (each slot once if the loop fell a whole turn behind).
func (l *loop) tick(now time.Time) {
	l.srv.m.loopLag.WithLabelValues(strconv.Itoa(l.idx)).Observe(time.Since(now).Seconds())
	n := now.UnixNano()
	l.expirePublishes(n)
	cur := l.tickOf(n)
	from := max(l.lastTick+1, cur-wheelSlots+1)
	// Placements during the pass (the visited clients' next slots, and
	// reschedules by what a visit does) go after now's tick, so no client
	// is visited twice in the pass for the same deadline.
	l.lastTick = max(l.lastTick, cur)
	idle := int64(l.srv.cfg.IdleTimeout)
	for t := from; t <= cur; t++ {
		s := int(t % wheelSlots)
		for i := len(l.wheel[s]) - 1; i >= 0; i-- {
			if i >= len(l.wheel[s]) {
				continue
			}
			cl := l.wheel[s][i]
			l.check(cl, n)
			if cl.wheelPos == uint32(s)<<wheelIdxBits|uint32(i) { // not closed or moved by the visit
				l.unplace(cl)
				l.place(cl, l.dueTick(cl.nextDue(idle)))
			}
		}
		l.shrink(s)
	}
	l.flush()
}

// shrink gives back most of slot s's array when it is far larger than a
// slot's share of the connections and mostly empty: clients that arrived
// together (a reconnect wave) stay together from slot to slot, and every
// slot they passed through would otherwise keep an array for all of them.
// Slots of the usual size keep theirs (no allocation per tick).
func (l *loop) shrink(s int) {
	b := l.wheel[s]
	limit := 4 * max(64, l.nconns/wheelSlots)
	if cap(b) <= limit || len(b) > cap(b)/4 {
		return
	}
	l.wheel[s] = append(make([]*client, 0, max(2*len(b), limit/2)), b...) // positions unchanged
}
