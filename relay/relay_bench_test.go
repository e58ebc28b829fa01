package relay

import (
	"context"
	"math/rand/v2"
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
	sh := s.router.shard(ch)
	sh.m[ch] = &entry{ch: ch, state: entrySynced, epoch: "e", perLoop: make([]int32, 1)}
	for i := 0; i < n; i++ {
		cl := &client{c: &benchConn{}, l: l, state: stateConnected}
		l.addConn(cl)
		l.addSub(cl, &subscription{ch: ch, state: subLive})
		sh.m[ch].perLoop[0]++
		sh.m[ch].total++
	}
	return s, l
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

// BenchmarkTick runs the loop's timer pass over 100,000 idle connected
// clients with no timer due: how long every tick holds the loop. The
// connections are shuffled: in a running relay they come and go, so the
// walk does not visit clients in allocation order.
func BenchmarkTick(b *testing.B) {
	const n = 100_000
	_, l := benchServer(b, "room", 0)
	now := time.Now()
	for i := 0; i < n; i++ {
		cl := &client{c: &benchConn{}, l: l, state: stateConnected, lastFrame: now.UnixNano(), nextPing: now.Add(time.Hour).UnixNano()}
		l.addConn(cl)
	}
	rand.Shuffle(len(l.conns), func(i, j int) {
		l.conns[i], l.conns[j] = l.conns[j], l.conns[i]
		l.conns[i].connIdx, l.conns[j].connIdx = int32(i), int32(j)
	})
	b.ReportAllocs()
	for b.Loop() {
		l.tick(now)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/conn")
}
