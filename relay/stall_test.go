package relay

import (
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/protocol"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// ownedBy returns a channel name with prefix whose partition (of parts) the
// fake controller ctl of startThree owns (two partitions each).
func ownedBy(prefix string, ctl int, parts int32) string {
	for i := 0; ; i++ {
		ch := fmt.Sprintf("%s-%d", prefix, i)
		if int(partition.For(ch, parts))/2 == ctl {
			return ch
		}
	}
}

// readReplies reads replies from w until n of them have id in [from,
// from+n), failing after d; it returns them by id.
func readReplies(t testing.TB, w *wsConn, from, n uint32, d time.Duration) map[uint32]*protocol.Reply {
	t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(d))
	defer func() { _ = w.c.SetReadDeadline(time.Now().Add(10 * time.Second)) }()
	got := map[uint32]*protocol.Reply{}
	for uint32(len(got)) < n {
		op, p := w.readFrame()
		if op != opText || string(p) == "{}" {
			continue
		}
		rs, err := protocol.DecodeReplies(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.ID >= from && r.ID < from+n {
				got[r.ID] = r
			}
		}
	}
	return got
}

// TestStuckControllerDoesNotStallOthers: of three controllers, one stops
// reading (frozen as by SIGSTOP: its streams' HTTP/2 windows fill, its
// RPCs do not answer, it streams nothing). Interest traffic far beyond
// what its stream can absorb does not hold up the others: channels owned
// by the other two are still positioned and their publications delivered
// within seconds, a new channel of the stuck one gets an error instead of
// hanging; once it resumes, its channels get what was published meanwhile
// with no loss and no duplicate. Both with a queue that holds the backlog
// (sent in order on resume) and with one that overflows (the stream is
// reopened with the whole interest set and its channels re-checked).
func TestStuckControllerDoesNotStallOthers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		queue    int
		fillers  int
		overflow bool
	}{
		{"queue holds the backlog", 0, 3000, false},
		{"queue overflows", 1500, 6000, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testStuckController(t, tc.queue, tc.fillers, tc.overflow) })
	}
}

func testStuckController(t *testing.T, queue, fillers int, overflow bool) {
	const parts = 6
	brokers := startKafka(t, topic, parts)
	fcs := make([]*fakeController, 3)
	addrs := make([]string, 3)
	for i := range fcs {
		fcs[i], addrs[i] = startFakeControllerOwning(t, brokers, topic, parts, []int32{int32(2 * i), int32(2*i + 1)})
	}
	stuck := fcs[2]
	t.Cleanup(stuck.thaw)
	srv := startRelay(t, func(c *Config) {
		c.Controllers = addrs
		c.Brokers = brokers
		c.Topic = topic
		c.Partitions = parts
		c.RPCTimeout = time.Second
		c.ControllerGrace = time.Minute // the stuck controller's channels wait for it
		c.ControllerQueue = queue
		c.MaxSubscriptions = 10_000
		c.PublishRate = -1
	})
	waitUntil(t, "all partitions owned", func() bool {
		srv.links.mu.RLock()
		defer srv.links.mu.RUnlock()
		return len(srv.links.owners) == parts
	})
	addr := srv.Addr()
	chA, chB, chC := ownedBy("a", 0, parts), ownedBy("b", 1, parts), ownedBy("c", 2, parts)
	sub := newSDKClient(t, addr, token(t, "sub", nil, pubAll, 0))
	sub.connect(t)
	for _, ch := range []string{chA, chB, chC} {
		sub.clientSub(t, ch)
	}
	pub := newSDKClient(t, addr, token(t, "pub", nil, pubAll, 0))
	pub.connect(t)
	publishRange(t, pub, 1, 3, chA, chB, chC)
	for _, ch := range []string{chA, chB, chC} {
		sub.exactly(t, "before", ch, 3)
	}

	stuck.freeze()
	// Interest traffic for channels of the other two controllers: 3000
	// adds are about 400 KB, several times what the stuck stream's window
	// and the gRPC write quota take (6000 are beyond ControllerQueue 1500).
	w, _ := connectRaw(t, addr, token(t, "filler", nil, pubAll, 0))
	pad := strings.Repeat("x", 120)
	id := uint32(2)
	for i := 0; i < fillers; {
		var cmds []string
		for ; i < fillers && len(cmds) < 100; i++ {
			ch := ownedBy(fmt.Sprintf("fill-%s-%d", pad, i), i%2, parts)
			cmds = append(cmds, fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q}}`, id, ch))
			id++
		}
		w.write(textFrame(strings.Join(cmds, "\n")))
	}
	for rid, r := range readReplies(t, w, 2, uint32(fillers), 15*time.Second) {
		if r.Subscribe == nil {
			t.Fatalf("filler subscribe %d: %+v", rid, r)
		}
	}

	// New channels of the other two: positioned and delivered promptly.
	nA, nB := ownedBy("new-a", 0, parts), ownedBy("new-b", 1, parts)
	start := time.Now()
	w.write(textFrame(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q}}`+"\n"+`{"id":%d,"subscribe":{"channel":%q}}`, id, nA, id+1, nB)))
	for rid, r := range readReplies(t, w, id, 2, 5*time.Second) {
		if r.Subscribe == nil {
			t.Fatalf("subscribe %d to a healthy controller's channel while another is stuck: %+v", rid, r)
		}
	}
	t.Logf("healthy controllers' new channels positioned in %v", time.Since(start))
	id += 2
	publishRange(t, pub, 4, 6, chA, chB, nA, nB)
	deadline := time.Now().Add(5 * time.Second)
	for _, ch := range []string{chA, chB} {
		for len(sub.pubsOn(ch)) < 6 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d publications within 5 s while another controller is stuck, want 6", ch, len(sub.pubsOn(ch)))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	pushes := 0
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for pushes < 6 {
		op, p := w.readFrame()
		if op != opText {
			continue
		}
		rs, err := protocol.DecodeReplies(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Push != nil && r.Push.Pub != nil && (r.Push.Channel == nA || r.Push.Channel == nB) {
				pushes++
			}
		}
	}

	// A new channel of the stuck controller: an error (the subscriber
	// retries), not a hang.
	nC := ownedBy("new-c", 2, parts)
	w.write(textFrame(fmt.Sprintf(`{"id":%d,"subscribe":{"channel":%q}}`, id, nC)))
	if r := readReplies(t, w, id, 1, 10*time.Second)[id]; r.Error == nil || r.Error.Code != 100 {
		t.Fatalf("subscribe to the stuck controller's channel: %+v, want error 100", r)
	}
	// Published to the stuck controller's channel meanwhile (Kafka acks).
	publishRange(t, pub, 4, 6, chC)

	stuck.thaw()
	publishRange(t, pub, 7, 7, chA, chB, chC)
	for _, ch := range []string{chA, chB, chC} {
		sub.exactly(t, "after the stuck controller resumed", ch, 7)
	}
	var m dto.Metric
	if err := srv.m.controllerQueueFull.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch n := m.GetCounter().GetValue(); {
	case overflow && n == 0:
		t.Fatal("the stuck controller's queue never overflowed: the test did not exercise the reopen")
	case !overflow && n != 0:
		t.Fatalf("%v controller queues overflowed with the default bound", n)
	}
}

// pubsOn returns the publications recorded on ch.
func (s *sdkClient) pubsOn(ch string) []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []received
	for _, p := range s.pubs {
		if p.ch == ch {
			out = append(out, p)
		}
	}
	return out
}

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
