package e2e

import (
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
)

// subscribedEvent is a (server-side or client-side) subscribed event.
type subscribedEvent struct {
	channel                  string
	wasRecovering, recovered bool
}

// TestCentrifugeGoRecovery: centrifuge-go loses its connection (a reset
// through a proxy, not a disconnect it asked for) while publications
// continue; it must reconnect on its own, have its server-side and its
// client-side (subscription token) subscriptions recovered, and receive
// every publication exactly once, in order. TestCentrifugeJSRecovery is the
// same with centrifuge-js.
func TestCentrifugeGoRecovery(t *testing.T) {
	f := newDropFixture(t)
	c := centrifuge.NewJsonClient(f.url, centrifuge.Config{
		Token: f.token, MinReconnectDelay: 100 * time.Millisecond, MaxReconnectDelay: 500 * time.Millisecond,
	})
	rec := newReceived()
	subscribed := make(chan subscribedEvent, 16)
	connecting := make(chan centrifuge.ConnectingEvent, 16)
	c.OnPublication(func(e centrifuge.ServerPublicationEvent) { rec.add(e.Channel, e.Publication) })
	c.OnSubscribed(func(e centrifuge.ServerSubscribedEvent) {
		subscribed <- subscribedEvent{e.Channel, e.WasRecovering, e.Recovered}
	})
	c.OnConnecting(func(e centrifuge.ConnectingEvent) { connecting <- e })
	c.OnError(func(e centrifuge.ErrorEvent) { t.Logf("client error: %v", e.Error) })
	sub, err := c.NewSubscription(dropClientCh, centrifuge.SubscriptionConfig{Token: f.subToken})
	if err != nil {
		t.Fatal(err)
	}
	sub.OnPublication(func(e centrifuge.PublicationEvent) { rec.add(dropClientCh, e.Publication) })
	sub.OnSubscribed(func(e centrifuge.SubscribedEvent) {
		subscribed <- subscribedEvent{dropClientCh, e.WasRecovering, e.Recovered}
	})
	sub.OnError(func(e centrifuge.SubscriptionErrorEvent) { t.Logf("subscription error: %v", e.Error) })
	if err := sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	// expectSubscribed waits for one subscribed event of each channel.
	expectSubscribed := func(recovering bool) {
		t.Helper()
		seen := map[string]bool{}
		for len(seen) < 2 {
			select {
			case e := <-subscribed:
				if e.wasRecovering != recovering || e.recovered != recovering {
					t.Fatalf("%s subscribed with wasRecovering=%v recovered=%v, want %v", e.channel, e.wasRecovering, e.recovered, recovering)
				}
				seen[e.channel] = true
			case <-time.After(15 * time.Second):
				t.Fatalf("subscribed events: got %v, want both channels", seen)
			}
		}
	}
	expectSubscribed(false)
	<-connecting // the first connect

	f.publish(t, 1, 10)
	for _, ch := range []string{dropServerCh, dropClientCh} {
		if got := rec.waitFor(ch, 10, 15*time.Second); len(got) < 10 {
			t.Fatalf("%s: %d of the first 10 publications", ch, len(got))
		}
	}
	f.proxy.cut()
	select {
	case e := <-connecting:
		t.Logf("reconnecting after the cut: %d %s", e.Code, e.Reason)
	case <-time.After(15 * time.Second):
		t.Fatal("the client did not notice the cut")
	}
	f.publish(t, 11, 20) // acked by Kafka while the client is away
	f.proxy.restore()
	expectSubscribed(true)
	f.publish(t, 21, dropN)
	for _, ch := range []string{dropServerCh, dropClientCh} {
		checkSeqs(t, ch, rec.waitFor(ch, dropN, 15*time.Second), dropN)
	}
	time.Sleep(200 * time.Millisecond) // nothing more may arrive
	for _, ch := range []string{dropServerCh, dropClientCh} {
		checkSeqs(t, ch+" (after a pause)", rec.waitFor(ch, dropN, 0), dropN)
	}
}
