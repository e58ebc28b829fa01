package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	centrifuge "github.com/centrifugal/centrifuge-go"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-chat/herald/internal/auth"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

const topic = "herald.messages"

type received struct {
	ch     string
	offset uint64
	data   string
	user   string
}

// sdkClient is a centrifuge-go client recording every publication.
type sdkClient struct {
	c    *centrifuge.Client
	mu   sync.Mutex
	pubs []received
	subs chan string // server-side subscribed channels
}

func newSDKClient(t testing.TB, addr, tok string) *sdkClient {
	t.Helper()
	s := &sdkClient{subs: make(chan string, 16)}
	s.c = centrifuge.NewJsonClient("ws://"+addr+"/connection/websocket", centrifuge.Config{Token: tok, MinReconnectDelay: 50 * time.Millisecond})
	s.c.OnPublication(func(e centrifuge.ServerPublicationEvent) { s.record(e.Channel, e.Publication) })
	s.c.OnSubscribed(func(e centrifuge.ServerSubscribedEvent) { s.subs <- e.Channel })
	t.Cleanup(s.c.Close)
	return s
}

func (s *sdkClient) record(ch string, p centrifuge.Publication) {
	r := received{ch: ch, offset: p.Offset, data: string(p.Data)}
	if p.Info != nil {
		r.user = p.Info.User
	}
	s.mu.Lock()
	s.pubs = append(s.pubs, r)
	s.mu.Unlock()
}

func (s *sdkClient) connect(t testing.TB, serverSubs ...string) {
	t.Helper()
	if err := s.c.Connect(); err != nil {
		t.Fatal(err)
	}
	for range serverSubs {
		select {
		case <-s.subs:
		case <-time.After(10 * time.Second):
			t.Fatal("server-side subscription not established")
		}
	}
}

// waitPubs waits until ch has n publications and returns them.
func (s *sdkClient) waitPubs(t testing.TB, ch string, n int) []received {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s.mu.Lock()
		var got []received
		for _, p := range s.pubs {
			if p.ch == ch {
				got = append(got, p)
			}
		}
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d publications on %s, want %d: %+v", len(got), ch, n, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkSeq checks offsets from..from+len-1 in order with the expected data.
func checkSeq(t testing.TB, who string, got []received, from uint64, data func(uint64) string) {
	t.Helper()
	for i, p := range got {
		want := from + uint64(i)
		if p.offset != want || p.data != data(want) {
			t.Fatalf("%s: publication %d = offset %d data %s, want offset %d data %s (all: %+v)", who, i, p.offset, p.data, want, data(want), got)
		}
	}
}

type env struct {
	srv *Server
	fc  *fakeController
}

func startEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	return startEnvLog(t, mod, testLogger())
}

// startEnvLog is startEnv with the relay logging to log.
func startEnvLog(t testing.TB, mod func(*Config), log *slog.Logger) *env {
	t.Helper()
	brokers := startKafka(t, topic, 4)
	fc, caddr := startFakeController(t, brokers, topic, 4)
	srv, _ := startRelayLog(t, func(c *Config) {
		// The non-owner first: Recover must skip its FailedPrecondition.
		c.Controllers = []string{startNotOwner(t), caddr}
		c.Brokers = brokers
		c.Topic = topic
		c.Partitions = 4
		c.InterestGrace = 200 * time.Millisecond
		if mod != nil {
			mod(c)
		}
	}, log)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for srv.Ready(ctx) != nil {
		if ctx.Err() != nil {
			t.Fatalf("relay not ready: %v", srv.Ready(context.Background()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &env{srv: srv, fc: fc}
}

func msgData(ch string) func(uint64) string {
	return func(i uint64) string { return fmt.Sprintf(`{"n":%d,"ch":"%s"}`, i, ch) }
}

func TestEndToEndSDK(t *testing.T) {
	e := startEnv(t, nil)
	addr := e.srv.Addr()
	pubCaps := []auth.Capability{{Channels: []string{"priv*"}, Match: "wildcard", Allow: []string{"pub"}}}

	a := newSDKClient(t, addr, token(t, "alice", []string{"room"}, pubCaps, time.Hour))
	b := newSDKClient(t, addr, token(t, "bob", []string{"room"}, nil, time.Hour))
	c := newSDKClient(t, addr, token(t, "carol", []string{"room"}, nil, 0))
	a.connect(t, "room")
	b.connect(t, "room")
	c.connect(t, "room")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 20
	data := msgData("room")
	for i := uint64(1); i <= n; i++ {
		if _, err := a.c.Publish(ctx, "room", []byte(data(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for who, cl := range map[string]*sdkClient{"alice": a, "bob": b, "carol": c} {
		got := cl.waitPubs(t, "room", n)
		checkSeq(t, who, got, 1, data)
		if got[0].user != "alice" {
			t.Fatalf("%s: publisher info user = %q", who, got[0].user)
		}
	}

	t.Run("client-side subscription with subscription token", func(t *testing.T) {
		d := newSDKClient(t, addr, token(t, "dave", nil, nil, 0))
		d.connect(t)
		sub, err := d.c.NewSubscription("private", centrifuge.SubscriptionConfig{Token: subToken(t, "dave", "private")})
		if err != nil {
			t.Fatal(err)
		}
		subscribed := make(chan centrifuge.SubscribedEvent, 1)
		sub.OnSubscribed(func(e centrifuge.SubscribedEvent) { subscribed <- e })
		sub.OnPublication(func(e centrifuge.PublicationEvent) { d.record("private", e.Publication) })
		if err := sub.Subscribe(); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-subscribed:
			if !ev.Recoverable || !ev.Positioned || ev.StreamPosition == nil || ev.StreamPosition.Epoch != "ep-private" {
				t.Fatalf("subscribed event %+v", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not subscribed")
		}
		pdata := msgData("private")
		if _, err := a.c.Publish(ctx, "private", []byte(pdata(1))); err != nil {
			t.Fatalf("publish with pub grant: %v", err)
		}
		checkSeq(t, "dave", d.waitPubs(t, "private", 1), 1, pdata)

		// No channel membership and no pub grant: 103.
		_, err = b.c.Publish(ctx, "private", []byte(`{}`))
		var serr *centrifuge.Error
		if !errors.As(err, &serr) || serr.Code != 103 {
			t.Fatalf("publish without grant: %v", err)
		}
	})

	t.Run("subscribe without token or grant is denied", func(t *testing.T) {
		sub, err := b.c.NewSubscription("secret")
		if err != nil {
			t.Fatal(err)
		}
		unsub := make(chan centrifuge.UnsubscribedEvent, 1)
		sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) { unsub <- e })
		_ = sub.Subscribe()
		select {
		case ev := <-unsub:
			if ev.Code != 103 {
				t.Fatalf("unsubscribed with %+v, want code 103", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no permission error")
		}
	})

	t.Run("subscribing to a server-side channel again is 105", func(t *testing.T) {
		sub, err := c.c.NewSubscription("room", centrifuge.SubscriptionConfig{Token: subToken(t, "carol", "room")})
		if err != nil {
			t.Fatal(err)
		}
		unsub := make(chan centrifuge.UnsubscribedEvent, 1)
		sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) { unsub <- e })
		_ = sub.Subscribe()
		select {
		case ev := <-unsub:
			if ev.Code != 105 {
				t.Fatalf("unsubscribed with %+v, want 105", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no already-subscribed error")
		}
	})

	t.Run("reconnect recovers missed publications", func(t *testing.T) {
		if err := b.c.Disconnect(); err != nil {
			t.Fatal(err)
		}
		for i := uint64(n + 1); i <= n+5; i++ {
			if _, err := a.c.Publish(ctx, "room", []byte(data(i))); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
		b.connect(t, "room")
		if _, err := a.c.Publish(ctx, "room", []byte(data(n+6))); err != nil {
			t.Fatal(err)
		}
		got := b.waitPubs(t, "room", n+6)
		checkSeq(t, "bob after reconnect", got, 1, data)
	})
}

// TestGapAndDuplicate withholds a publication from the stream: the relay
// must fetch it with Recover and deliver it in order, and must drop
// re-sent publications.
func TestGapAndDuplicate(t *testing.T) {
	e := startEnv(t, nil)
	e.fc.mu.Lock()
	e.fc.skip = func(p *heraldv1.Publication) bool { return p.Channel == "gap" && (p.Seq == 3 || p.Seq == 4) }
	e.fc.mu.Unlock()

	x := newSDKClient(t, e.srv.Addr(), token(t, "xavier", []string{"gap"}, nil, 0))
	x.connect(t, "gap")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data := msgData("gap")
	for i := uint64(1); i <= 6; i++ {
		if _, err := x.c.Publish(ctx, "gap", []byte(data(i))); err != nil {
			t.Fatal(err)
		}
	}
	checkSeq(t, "xavier", x.waitPubs(t, "gap", 6), 1, data)

	// Re-send old publications (as a controller might after a rebalance).
	e.fc.mu.Lock()
	old := append([]*heraldv1.Publication(nil), e.fc.chans["gap"].pubs[1:4]...)
	e.fc.mu.Unlock()
	e.fc.broadcast(old...)
	if _, err := x.c.Publish(ctx, "gap", []byte(data(7))); err != nil {
		t.Fatal(err)
	}
	got := x.waitPubs(t, "gap", 7)
	time.Sleep(100 * time.Millisecond)
	got = x.waitPubs(t, "gap", 7)
	if len(got) != 7 {
		t.Fatalf("duplicates delivered: %+v", got)
	}
	checkSeq(t, "xavier", got, 1, data)
}

// TestInterestLifecycle checks the interest add on first subscribe and the
// removal after the last subscriber left.
func TestInterestLifecycle(t *testing.T) {
	e := startEnv(t, nil)
	y := newSDKClient(t, e.srv.Addr(), token(t, "yan", []string{"life"}, nil, 0))
	y.connect(t, "life")
	// The add travels on the controller stream, the position on a unary
	// call the controller may answer first (a gap is filled by Recover,
	// I4), so the subscribe reply does not wait for the add to arrive.
	waitUntil(t, "the interest add of a subscribed channel", func() bool { return e.fc.interested("life") })
	y.c.Close()
	waitUntil(t, "the interest removal after the last subscriber left", func() bool { return !e.fc.interested("life") })
}

// TestFanoutLatencyObserved: every publication group a loop writes to its
// subscribers is timed from the batch's arrival (herald_relay_fanout_seconds).
func TestFanoutLatencyObserved(t *testing.T) {
	e := startEnv(t, nil)
	count := func() (uint64, float64) {
		var d dto.Metric
		if err := e.srv.m.fanoutLatency.Write(&d); err != nil {
			t.Fatal(err)
		}
		return d.GetHistogram().GetSampleCount(), d.GetHistogram().GetSampleSum()
	}
	if n, _ := count(); n != 0 {
		t.Fatalf("%d observations before any publication", n)
	}
	z := newSDKClient(t, e.srv.Addr(), token(t, "zoe", []string{"timed"}, nil, 0))
	z.connect(t, "timed")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	data := msgData("timed")
	for i := uint64(1); i <= 5; i++ {
		if _, err := z.c.Publish(ctx, "timed", []byte(data(i))); err != nil {
			t.Fatal(err)
		}
		z.waitPubs(t, "timed", int(i)) // one batch, one group each
	}
	n, sum := count()
	if n != 5 || sum <= 0 || sum/float64(n) > 5 {
		t.Fatalf("fan-out latency: %d observations, %.6f s in all; want 5, each above 0 and below 5 s", n, sum)
	}
}

// TestProduceWindowThroughKafka: publishes of four clients racing each
// other through a wide produce window are held, produced together and come
// back through Kafka and the controller dense, each publisher's in its own
// order, to every subscriber, every publish acked. (An SDK client waits for
// each ack, so a batch holds one publish per client: order within a batch
// is TestProduceGate*'s to check.)
func TestProduceWindowThroughKafka(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.ProduceWindow = 50 * time.Millisecond })
	const pubs, each = 4, 10
	var cls []*sdkClient
	for i := 0; i < pubs; i++ {
		c := newSDKClient(t, e.srv.Addr(), token(t, fmt.Sprintf("p%d", i), []string{"burst"}, nil, 0))
		c.connect(t, "burst")
		cls = append(cls, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, pubs)
	for i, c := range cls {
		go func() {
			for n := 0; n < each; n++ {
				if _, err := c.c.Publish(ctx, "burst", []byte(fmt.Sprintf(`{"p":%d,"n":%d}`, i, n))); err != nil {
					errs <- fmt.Errorf("publisher %d, publish %d: %w", i, n, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range cls {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cls {
		got := c.waitPubs(t, "burst", pubs*each)
		next := make([]int, pubs)
		for k, p := range got {
			if p.offset != uint64(k+1) {
				t.Fatalf("subscriber %d: publication %d has offset %d", i, k, p.offset)
			}
			var m struct{ P, N int }
			if err := json.Unmarshal([]byte(p.data), &m); err != nil || m.P < 0 || m.P >= pubs {
				t.Fatalf("subscriber %d: data %s", i, p.data)
			}
			if m.N != next[m.P] {
				t.Fatalf("subscriber %d: publisher %d's publish %d arrived where %d was due (%+v)", i, m.P, m.N, next[m.P], got)
			}
			next[m.P]++
		}
	}
	var d dto.Metric
	if err := e.srv.m.produceBatch.Write(&d); err != nil {
		t.Fatal(err)
	}
	h := d.GetHistogram()
	if h.GetSampleCount() == 0 || h.GetSampleSum() > pubs*each || h.GetSampleSum() < float64(h.GetSampleCount()) {
		t.Fatalf("produce window: %d batches, %.0f publishes held; want some batches of the %d publishes", h.GetSampleCount(), h.GetSampleSum(), pubs*each)
	}
	t.Logf("%d of %d publishes held by the window, in %d batches", int(h.GetSampleSum()), pubs*each, h.GetSampleCount())
}
