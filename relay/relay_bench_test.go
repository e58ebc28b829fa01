package relay

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// benchConn is a gnet.Conn that swallows writes.
type benchConn struct {
	gnet.Conn
	written int
}

func (c *benchConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		n += len(b)
	}
	c.written += n
	return n, nil
}
func (c *benchConn) OutboundBuffered() int { return 0 }

// inlineLoop is a gnet.EventLoop that runs tasks immediately.
type inlineLoop struct{}

func (inlineLoop) Register(context.Context, net.Addr) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (inlineLoop) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (inlineLoop) Execute(ctx context.Context, r gnet.Runnable) error { return r.Run(ctx) }
func (inlineLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error {
	return nil
}
func (inlineLoop) Close(gnet.Conn) error { return nil }

// benchServer builds a relay with one inline loop and n live subscribers of ch.
func benchServer(tb testing.TB, ch string, n int) (*Server, *loop) {
	tb.Helper()
	cfg := Config{Controllers: []string{"127.0.0.1:1"}, Brokers: []string{"127.0.0.1:1"}, EventLoops: 1}.withDefaults()
	s := &Server{cfg: cfg, log: testLogger(), m: newMetrics(nil), numLoops: 1, loops: make([]*loop, 1), loopByEL: map[gnet.EventLoop]*loop{}}
	s.router = newRouter(s)
	l := newLoop(0, nil, s)
	s.loops[0] = l
	addBenchChannel(s, l, ch, n)
	return s, l
}

// addBenchChannel adds a synced channel with n connected subscribers on l.
func addBenchChannel(s *Server, l *loop, ch string, n int) {
	sh := s.router.shard(ch)
	sh.m[ch] = &entry{ch: ch, state: entrySynced, epoch: "e", perLoop: make([]int32, 1)}
	for i := 0; i < n; i++ {
		cl := &client{c: &benchConn{}, l: l, state: stateConnected}
		l.addConn(cl)
		l.addSub(cl, &subscription{ch: ch, state: subLive})
		sh.m[ch].perLoop[0]++
		sh.m[ch].total++
	}
}

// BenchmarkFanout delivers one encoded push to 1000 local subscribers: the
// loop task part of a broadcast. Zero allocations per delivered message.
func BenchmarkFanout(b *testing.B) {
	const subs = 1000
	_, l := benchServer(b, "room", subs)
	items := []item{pubItem(&heraldv1.Publication{Channel: "room", Seq: 1, Epoch: "e", Message: &heraldv1.Message{Sender: "u", Data: []byte(`{"text":"hello"}`)}})}
	g := items[0].grp
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		g.first, g.last = seq, seq
		l.deliver(items)
		l.flush()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
}

// BenchmarkRouterBatch runs a controller batch of 16 publications of one
// channel through the router (seq checks, one shared frame for the batch)
// into the loop and its 100 subscribers: the allocations are per batch
// (batch, group, loop task), none per delivered message.
func BenchmarkRouterBatch(b *testing.B) {
	const subs = 100
	s, l := benchServer(b, "room", subs)
	l.el = inlineLoop{}
	pubs := make([]*heraldv1.Publication, 16)
	for i := range pubs {
		pubs[i] = &heraldv1.Publication{Channel: "room", Epoch: "e", Message: &heraldv1.Message{Sender: "u", Data: []byte(`{"text":"hello"}`)}}
	}
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range pubs {
			seq++
			p.Seq = seq
		}
		s.router.handleBatch(pubs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pubs)*subs), "ns/delivery")
}

// BenchmarkRouterBatchRooms is the chat shape of BenchmarkRouterBatch: a
// controller batch of 16 publications of 16 different channels (rooms),
// each with 10 subscribers on the loop: one group, one frame and one item
// per publication.
func BenchmarkRouterBatchRooms(b *testing.B) {
	const rooms, subs = 16, 10
	s, l := benchServer(b, "room-0", subs)
	l.el = inlineLoop{}
	pubs := make([]*heraldv1.Publication, rooms)
	for i := range pubs {
		ch := "room-" + strconv.Itoa(i)
		if i > 0 {
			addBenchChannel(s, l, ch, subs)
		}
		pubs[i] = &heraldv1.Publication{Channel: ch, Epoch: "e", Message: &heraldv1.Message{Sender: "u", Data: []byte(`{"text":"hello"}`)}}
	}
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		for _, p := range pubs {
			p.Seq = seq
		}
		s.router.handleBatch(pubs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rooms*subs), "ns/delivery")
}

// BenchmarkParseFrame parses and unmasks one 256-byte client frame.
func BenchmarkParseFrame(b *testing.B) {
	payload := []byte(`{"id":7,"publish":{"channel":"chat:1","data":{"text":"` + strconv.Itoa(12345) + `"}}}`)
	for len(payload) < 256 {
		payload = append(payload, ' ')
	}
	f := frame(opText, payload, true, true)
	buf := make([]byte, len(f))
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		copy(buf, f)
		h, err := parseFrameHeader(buf)
		if err != nil || h.size+int(h.length) != len(buf) {
			b.Fatal("bad parse")
		}
		p := buf[h.size:]
		ws.Cipher(p, h.mask, 0)
	}
}

// BenchmarkEncodePushFrame encodes a publication into its shared frame (one
// allocation: the frame itself, once per relay).
func BenchmarkEncodePushFrame(b *testing.B) {
	p := &heraldv1.Publication{Channel: "chat:room-1", Seq: 123456, Epoch: "e", Message: &heraldv1.Message{Sender: "user-1", Info: []byte(`{"name":"Ann"}`), Data: []byte(`{"text":"hello world, this is a chat message"}`)}}
	b.ReportAllocs()
	for b.Loop() {
		_ = encodePush(p)
	}
}

// pubItem is the loop item of one publication (a group of one).
func pubItem(p *heraldv1.Publication) item {
	g := newPushGroup(p)
	g.finish()
	return item{kind: itemPub, ch: p.GetChannel(), grp: g}
}

// BenchmarkTick runs the loop's timer ticks, one tick interval apart, over
// 100,000 connected clients: how long every tick holds the loop (ns/conn is
// per tick and connection of the loop).
//   - idle: no timer due (frames keep arriving, so the idle timeout never
//     nears; pings far away);
//   - pinging: pings due uniformly over the ping interval, as in a running
//     relay (firstPing), each answered at once (the pong is simulated
//     outside the timing by clearing the pong deadline).
func BenchmarkTick(b *testing.B) {
	const n = 100_000
	run := func(b *testing.B, pinging bool) {
		s, l := benchServer(b, "room", 0)
		now := time.Now()
		never := now.Add(10 * 365 * 24 * time.Hour).UnixNano() // b.Loop may run a million ticks
		clients := make([]*client, n)
		for i := range clients {
			cl := &client{c: &benchConn{}, l: l, state: stateConnected, lastFrame: never, nextPing: never}
			if pinging {
				cl.lastFrame = now.UnixNano()
				cl.nextPing = firstPing(now, s.cfg.PingInterval) - int64(s.cfg.PingInterval)/2
			}
			l.addConn(cl)
			clients[i] = cl
		}
		step := time.Duration(l.tickEvery)
		pinged := 0
		b.ReportAllocs()
		for b.Loop() {
			now = now.Add(step)
			l.tick(now)
			if !pinging {
				continue
			}
			b.StopTimer()
			for _, cl := range clients {
				if cl.pongDeadline != 0 {
					cl.pongDeadline = 0
					cl.lastFrame = now.UnixNano()
					pinged++
				}
			}
			b.StartTimer()
		}
		if pinging && pinged == 0 {
			b.Fatal("no ping was sent")
		}
		for _, cl := range clients {
			if cl.state != stateConnected {
				b.Fatal("a client was disconnected")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/conn")
		b.ReportMetric(float64(pinged)/float64(b.N), "pings/tick")
	}
	b.Run("idle", func(b *testing.B) { run(b, false) })
	b.Run("pinging", func(b *testing.B) { run(b, true) })
}
