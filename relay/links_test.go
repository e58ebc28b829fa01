package relay

import (
	"context"
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"

	centrifuge "github.com/centrifugal/centrifuge-go"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/protocol"
)

// clientSub subscribes the SDK client to a client-side channel and records
// its publications.
func (s *sdkClient) clientSub(t testing.TB, ch string) *centrifuge.Subscription {
	t.Helper()
	sub, err := s.c.NewSubscription(ch)
	if err != nil {
		t.Fatal(err)
	}
	subscribed := make(chan struct{}, 16)
	sub.OnSubscribed(func(centrifuge.SubscribedEvent) { subscribed <- struct{}{} })
	sub.OnPublication(func(e centrifuge.PublicationEvent) { s.record(ch, e.Publication) })
	if err := sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatalf("not subscribed to %s", ch)
	}
	return sub
}

// publishRange publishes data(from..to) to each channel through pub.
func publishRange(t testing.TB, pub *sdkClient, from, to uint64, chs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := from; i <= to; i++ {
		for _, ch := range chs {
			if _, err := pub.c.Publish(ctx, ch, []byte(msgData(ch)(i))); err != nil {
				t.Fatalf("publish %s %d: %v", ch, i, err)
			}
		}
	}
}

// exactly waits for n publications on ch and checks there is no more
// (no duplicate) shortly after.
func (s *sdkClient) exactly(t testing.TB, who, ch string, n int) {
	t.Helper()
	s.waitPubs(t, ch, n)
	time.Sleep(150 * time.Millisecond)
	got := s.waitPubs(t, ch, n)
	if len(got) != n {
		t.Fatalf("%s: %d publications on %s, want %d: %+v", who, len(got), ch, n, got)
	}
	checkSeq(t, who, got, 1, msgData(ch))
}

// TestControllerRestartRecheck: publications made while the controller's
// API was down reach the subscribers after the stream reopens, without a
// later publication revealing the gap.
func TestControllerRestartRecheck(t *testing.T) {
	e := startEnv(t, nil)
	caps := []auth.Capability{{Channels: []string{"*"}, Match: "wildcard", Allow: []string{"pub", "sub"}}}
	c := newSDKClient(t, e.srv.Addr(), token(t, "carl", []string{"srv"}, caps, 0))
	c.connect(t, "srv")
	c.clientSub(t, "cli")
	publishRange(t, c, 1, 3, "srv", "cli")
	c.exactly(t, "before", "srv", 3)

	e.fc.stop()
	waitUntil(t, "stream down", func() bool { return e.srv.links.up() == 1 }) // the non-owner stays
	publishRange(t, c, 4, 6, "srv", "cli")                                    // acked by Kafka, not streamed
	e.fc.start(t)
	c.exactly(t, "after restart", "srv", 6)
	c.exactly(t, "after restart", "cli", 6)
}

// TestControllerAwayTellsSubscribers: when the owner stays away past
// ControllerGrace, client-side subscribers get an unsubscribe push 2500 and
// server-side ones a disconnect 3010; the SDK then recovers everything
// published meanwhile once the controller is back, without gap or duplicate.
func TestControllerAwayTellsSubscribers(t *testing.T) {
	e := startEnv(t, func(c *Config) {
		c.ControllerGrace = 300 * time.Millisecond
		c.RPCTimeout = time.Second
	})
	addr := e.srv.Addr()
	caps := []auth.Capability{{Channels: []string{"*"}, Match: "wildcard", Allow: []string{"pub", "sub"}}}

	rawSrv, _ := connectRaw(t, addr, token(t, "rs", []string{"srv"}, nil, 0))
	rawCli, _ := connectRaw(t, addr, token(t, "rc", nil, caps, 0))
	rawCli.write(textFrame(`{"id":2,"subscribe":{"channel":"cli"}}`))
	if r := decodeReply(t, rawCli.readText()); r.Subscribe == nil {
		t.Fatalf("subscribe: %+v", r)
	}
	sdk := newSDKClient(t, addr, token(t, "sara", []string{"srv"}, caps, 0))
	if os.Getenv("HERALD_TEST_LOG") != "" {
		sdk.c.OnConnecting(func(e centrifuge.ConnectingEvent) { t.Logf("%v sdk connecting %d %s", time.Now(), e.Code, e.Reason) })
		sdk.c.OnConnected(func(e centrifuge.ConnectedEvent) { t.Logf("%v sdk connected", time.Now()) })
		sdk.c.OnError(func(e centrifuge.ErrorEvent) { t.Logf("%v sdk error %v", time.Now(), e.Error) })
	}
	sdk.connect(t, "srv")
	sdk.clientSub(t, "cli")
	pub := newSDKClient(t, addr, token(t, "pub", nil, caps, 0))
	pub.connect(t)
	publishRange(t, pub, 1, 2, "srv", "cli")
	sdk.exactly(t, "before", "cli", 2)

	e.fc.stop()
	rawSrv.expectClose(3010)
	for {
		r := decodeReply(t, rawCli.readText())
		if r.Push == nil || r.Push.Pub != nil {
			continue
		}
		if r.Push.Channel != "cli" || r.Push.Unsubscribe == nil || r.Push.Unsubscribe.Code != 2500 {
			t.Fatalf("client-side subscriber got %+v, want unsubscribe 2500", r.Push)
		}
		break
	}
	// The connection itself stays up.
	rawCli.write(textFrame(`{"id":3,"ping":{}}`))
	if r := decodeReply(t, rawCli.readText()); r.ID != 3 {
		t.Fatalf("client-side subscriber: %+v", r)
	}
	publishRange(t, pub, 3, 4, "srv", "cli")
	time.Sleep(300 * time.Millisecond)
	e.fc.start(t)
	publishRange(t, pub, 5, 5, "srv", "cli")
	sdk.exactly(t, "sdk after the outage", "srv", 5)
	sdk.exactly(t, "sdk after the outage", "cli", 5)
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRecoveryAfterDroppedConnection: the relay drops the SDK's TCP
// connection in the middle of a publishing run; after its automatic
// reconnect, server-side and client-side subscriptions have every
// publication once, in order.
func TestRecoveryAfterDroppedConnection(t *testing.T) {
	e := startEnv(t, nil)
	addr := e.srv.Addr()
	caps := []auth.Capability{{Channels: []string{"*"}, Match: "wildcard", Allow: []string{"pub", "sub"}}}
	pub := newSDKClient(t, addr, token(t, "pub", nil, caps, 0))
	pub.connect(t)
	d := newSDKClient(t, addr, token(t, "dropped", []string{"srv"}, caps, 0))
	d.connect(t, "srv")
	d.clientSub(t, "cli")
	publishRange(t, pub, 1, 5, "srv", "cli")
	d.waitPubs(t, "cli", 5)
	dropped := make(chan struct{})
	for _, l := range e.srv.allLoops() {
		l.execute(func() {
			for cl := range l.allConns {
				if cl.claims != nil && cl.claims.Subject == "dropped" {
					_ = cl.c.Close() // no close frame: the network went away
					close(dropped)
				}
			}
		})
	}
	<-dropped
	publishRange(t, pub, 6, 15, "srv", "cli")
	d.exactly(t, "dropped client", "srv", 15)
	d.exactly(t, "dropped client", "cli", 15)
}

// TestPublishFailure: with Kafka gone, a publish gets an error reply (100,
// temporary) instead of an ack or silence.
func TestPublishFailure(t *testing.T) {
	cluster, brokers := startKafkaCluster(t, topic, 4)
	srv := startRelay(t, func(c *Config) {
		c.Brokers = brokers
		c.PublishTimeout = time.Second
	})
	w, _ := connectRaw(t, srv.Addr(), token(t, "pub", nil, pubAll, 0))
	w.write(textFrame(`{"id":2,"publish":{"channel":"c","data":{"n":1}}}`))
	if r := decodeReply(t, w.readText()); r.ID != 2 || r.Publish == nil {
		t.Fatalf("publish with Kafka up: %+v", r)
	}
	cluster.Close()
	start := time.Now()
	w.write(textFrame(`{"id":3,"publish":{"channel":"c","data":{"n":2}}}`))
	r := decodeReply(t, w.readText())
	if r.ID != 3 || r.Error == nil || r.Error.Code != 100 || !r.Error.Temporary {
		t.Fatalf("publish with Kafka down: %+v, want error 100", r)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("error after %v", el)
	}
	// The connection survives.
	w.write(textFrame(`{"id":4,"ping":{}}`))
	if r := decodeReply(t, w.readText()); r.ID != 4 {
		t.Fatalf("after the failure: %+v", r)
	}
}

// TestGracefulDrain: on ctx cancel new connections are refused and the open
// ones get 3001 spread over the drain window.
func TestGracefulDrain(t *testing.T) {
	const window = time.Second
	srv, stop := startRelayCtl(t, func(c *Config) { c.DrainWindow = window })
	tok := token(t, "drain", nil, nil, 0)
	var conns []*wsConn
	for i := 0; i < 6; i++ {
		w, _ := connectRaw(t, srv.Addr(), tok)
		_ = w.c.SetDeadline(time.Now().Add(20 * time.Second))
		conns = append(conns, w)
	}
	start := time.Now()
	done := stop()
	times := make(chan time.Duration, len(conns))
	for _, w := range conns {
		go func() {
			for {
				var h [2]byte
				if _, err := w.br.Read(h[:1]); err != nil {
					times <- -1
					return
				}
				if h[0]&0x0f == opClose {
					_, _ = w.br.Read(h[1:2])
					p := make([]byte, h[1]&0x7f)
					_, _ = w.br.Read(p)
					if binary.BigEndian.Uint16(p) != 3001 {
						times <- -2
						return
					}
					times <- time.Since(start)
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	// New connections are refused during the drain.
	if w := dialRaw(t, srv.Addr()); true {
		w.write([]byte(upgradeRequest))
		if _, err := w.br.ReadString('\n'); err == nil {
			t.Fatal("a new connection was upgraded during the drain")
		}
	}
	var first, last time.Duration
	for i := range conns {
		d := <-times
		if d < 0 {
			t.Fatalf("connection %d did not get 3001 (%v)", i, d)
		}
		if i == 0 || d < first {
			first = d
		}
		last = max(last, d)
	}
	if last-first < window/3 || last > window+500*time.Millisecond {
		t.Fatalf("3001 disconnects between %v and %v, want them spread over %v", first, last, window)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestCommandsPipelinedAfterConnect: commands sent right behind connect,
// while its server-side subscriptions are being positioned, run after the
// connect reply, in order (they used to be a 3501 bad request).
func TestCommandsPipelinedAfterConnect(t *testing.T) {
	e := startEnv(t, nil)
	w := dialWS(t, e.srv.Addr())
	tok := token(t, "pipe", []string{"p1", "p2"}, nil, 0)
	w.write(textFrame(connectCmd(1, tok) + "\n" + `{"id":2,"ping":{}}`))
	w.write(textFrame(`{"id":3,"ping":{}}`))
	for want := uint32(1); want <= 3; want++ {
		r := decodeReply(t, w.readText())
		if r.ID != want || (want == 1 && (r.Connect == nil || len(r.Connect.Subs) != 2)) {
			t.Fatalf("reply %d: %+v", want, r)
		}
	}
}

// TestShutdownAnswersPendingPublishes: a client told to go while its
// publishes wait for Kafka hears the outcome of every one of them before
// its 3001, instead of a bare disconnect that leaves it guessing whether
// they were stored. Kafka is unreachable here, so each publish is answered
// with the timeout error.
func TestShutdownAnswersPendingPublishes(t *testing.T) {
	srv, stop := startRelayCtl(t, func(c *Config) {
		c.PublishTimeout = time.Second
		c.PublishRate = -1
		c.DrainWindow = -1
	})
	w, _ := connectRaw(t, srv.Addr(), token(t, "pub", nil, pubAll, 0))
	_ = w.c.SetDeadline(time.Now().Add(20 * time.Second))
	const n = 20
	var cmds []string
	for i := 2; i < 2+n; i++ {
		cmds = append(cmds, `{"id":`+itoa(i)+`,"publish":{"channel":"c","data":{"n":1}}}`)
	}
	w.write(textFrame(strings.Join(cmds, "\n")))
	time.Sleep(200 * time.Millisecond) // all of them are waiting for Kafka
	done := stop()

	answered := map[uint32]bool{}
	for {
		op, p := w.readFrame()
		if op == opClose {
			if code := binary.BigEndian.Uint16(p); code != 3001 {
				t.Fatalf("close code %d, want 3001", code)
			}
			break
		}
		if op != opText || string(p) == "{}" {
			continue
		}
		rs, err := protocol.DecodeReplies(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.ID >= 2 && r.ID < 2+n {
				if r.Error == nil || r.Publish != nil {
					t.Fatalf("publish %d answered %+v with Kafka unreachable, want an error", r.ID, r)
				}
				answered[r.ID] = true
			}
		}
	}
	if len(answered) != n {
		t.Fatalf("%d of %d publishes answered before the 3001 disconnect", len(answered), n)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
