package clustertest

import (
	"errors"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
)

// Sizes are kept small: the machine running these tests has two cores
// shared by nine processes and the clients.
const (
	publishInterval = 40 * time.Millisecond // per publishing client
)

// TestClientsOnBothRelaysSeeOneOrder: clients balanced by nginx over both
// relays, all in the same channels, publishing concurrently: every client
// receives every message once with the same seqs, in the order of the store.
func TestClientsOnBothRelaysSeeOneOrder(t *testing.T) {
	c := startCluster(t)
	channels := channelsOverPartitions("room", 3)
	clients := newClients(t, c, 12, channels)
	for _, r := range c.relays {
		if n := relayConnections(t, r); n < 3 {
			t.Fatalf("%s holds %d of 12 connections: nginx did not spread them (least_conn)", r.name, n)
		}
	}
	l := startLoad(clients[:6], channels, publishInterval)
	time.Sleep(4 * time.Second)
	l.stop()
	if l.ackedCount() < 100 {
		t.Fatalf("only %s", l.summary())
	}
	verify(t, c, clients, channels, l)
}

// TestKillRelayUnderLoad: kill -9 one relay while clients publish; its
// clients reconnect through nginx to the other relay, their server-side
// subscriptions are recovered from their last offsets, and every acked
// message reaches every client exactly once, in order.
func TestKillRelayUnderLoad(t *testing.T) {
	c := startCluster(t)
	channels := channelsOverPartitions("room", 3)
	clients := newClients(t, c, 12, channels)
	l := startLoad(clients[:6], channels, publishInterval)
	time.Sleep(2 * time.Second)

	victim, other := c.relays[0], c.relays[1]
	if relayConnections(t, c.relays[1]) > relayConnections(t, c.relays[0]) {
		victim, other = other, victim
	}
	moved := relayConnections(t, victim)
	victim.kill9()
	t.Logf("killed %s holding %d connections", victim.name, moved)
	// Its clients reconnect through nginx to the other relay.
	deadline := time.Now().Add(20 * time.Second)
	for relayConnections(t, other) != len(clients) {
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d connections 20s after the kill, want all %d", other.name, relayConnections(t, other), len(clients))
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitAllReady(t, clients, 20*time.Second)
	killedAt := time.Now()
	time.Sleep(2 * time.Second)
	l.stop()
	if l.ackedSince(killedAt) == 0 {
		t.Fatalf("no publish acknowledged after the failover: %s", l.summary())
	}
	verify(t, c, clients, channels, l)

	recovered := 0
	for _, cl := range clients {
		cl.mu.Lock()
		for _, s := range cl.subs {
			if s.wasRecovering && s.recovered {
				recovered++
			}
		}
		cl.mu.Unlock()
	}
	if want := moved * len(channels); recovered < want {
		t.Fatalf("%d resubscriptions with recovered=true, want at least %d (%d clients × %d channels)", recovered, want, moved, len(channels))
	}
}

// TestKillControllerUnderLoad: kill -9 one controller while clients publish;
// the other takes its partitions after the group session timeout, the relays
// keep serving with the controller they still have (a relay even restarts
// while one controller of its list is down), the killed controller comes
// back and takes partitions again, and neither the store nor any client has
// a gap or a duplicate.
func TestKillControllerUnderLoad(t *testing.T) {
	c := startCluster(t)
	channels := channelsOverPartitions("room", partitions) // every partition: both controllers own some
	clients := newClients(t, c, 8, channels)
	victim, survivor := c.controllers[0], c.controllers[1]
	waitFor(t, 15*time.Second, "both controllers own partitions", func() bool {
		return ownedPartitions(t, victim) > 0 && ownedPartitions(t, survivor) > 0
	})
	l := startLoad(clients[:4], channels, publishInterval)
	time.Sleep(2 * time.Second)

	owned := ownedPartitions(t, victim)
	victim.kill9()
	t.Logf("killed %s owning %d partitions", victim.name, owned)
	time.Sleep(300 * time.Millisecond)
	for _, r := range c.relays {
		if err := httpOK("http://" + r.admin + "/readyz"); err != nil {
			t.Fatalf("%s not ready with one controller down: %v", r.name, err)
		}
	}
	start := time.Now()
	waitFor(t, 10*sessionTimeout, survivor.name+" owns every partition", func() bool {
		return ownedPartitions(t, survivor) == partitions
	})
	t.Logf("%s took over after %v", survivor.name, time.Since(start).Round(time.Millisecond))
	time.Sleep(time.Second)

	// A relay (re)starts while a controller of HERALD_CONTROLLERS is down.
	r := c.relays[0]
	if err := r.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	r.waitReady(t, 30*time.Second)
	waitAllReady(t, clients, 20*time.Second)

	// The killed controller comes back and gets partitions again.
	victim.start(t)
	victim.waitReady(t, 30*time.Second)
	waitFor(t, 10*sessionTimeout, "partitions spread again", func() bool {
		return ownedPartitions(t, victim) > 0 && ownedPartitions(t, victim)+ownedPartitions(t, survivor) == partitions
	})
	back := time.Now()
	time.Sleep(1500 * time.Millisecond)
	l.stop()
	if l.ackedSince(back) == 0 {
		t.Fatalf("no publish acknowledged after the controller came back: %s", l.summary())
	}
	verify(t, c, clients, channels, l)
}

// TestRollingRestartOfRelays: SIGTERM each relay in turn (it drains its
// clients with 3001), restart it, then the next; under load no acked message
// is lost and every client ends with the full sequence.
func TestRollingRestartOfRelays(t *testing.T) {
	c := startCluster(t)
	channels := channelsOverPartitions("room", 3)
	clients := newClients(t, c, 12, channels)
	l := startLoad(clients[:6], channels, publishInterval)
	time.Sleep(1500 * time.Millisecond)

	for _, r := range c.relays {
		start := time.Now()
		if err := r.stop(15 * time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s drained and stopped in %v", r.name, time.Since(start).Round(time.Millisecond))
		waitAllReady(t, clients, 20*time.Second)
		r.start(t)
		r.waitReady(t, 30*time.Second)
		time.Sleep(1500 * time.Millisecond)
	}
	restartedAt := time.Now()
	time.Sleep(time.Second)
	l.stop()
	if l.ackedSince(restartedAt) == 0 {
		t.Fatalf("no publish acknowledged after the restarts: %s", l.summary())
	}
	verify(t, c, clients, channels, l)

	shutdowns := 0
	for _, cl := range clients {
		cl.mu.Lock()
		for _, code := range cl.reconnects {
			if code == 3001 {
				shutdowns++
			}
		}
		cl.mu.Unlock()
	}
	if shutdowns < len(clients) {
		t.Fatalf("%d reconnects after a 3001 shutdown disconnect, want at least %d (every client drained once)", shutdowns, len(clients))
	}
}

// TestKafkaRestartWhilePublishing: the embedded Kafka stops while clients
// publish. During the outage publishes fail with an error reply from the
// relay (never an ack), after the restart they succeed again, and everything
// acked is stored and delivered exactly once.
func TestKafkaRestartWhilePublishing(t *testing.T) {
	c := startCluster(t)
	channels := channelsOverPartitions("room", 2)
	clients := newClients(t, c, 6, channels)
	l := startLoad(clients[:3], channels, 100*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)

	c.stopKafka()
	down := time.Now()
	t.Log("kafka stopped")
	time.Sleep(5 * time.Second)
	c.startKafka()
	up := time.Now()
	t.Logf("kafka restarted after %v", up.Sub(down).Round(time.Millisecond))

	// Publishes succeed again.
	deadline := time.Now().Add(30 * time.Second)
	for l.ackedSince(up) < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("publishes did not recover within 30s of the Kafka restart: %s", l.summary())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	l.stop()

	l.mu.Lock()
	var during, replies []string
	for _, e := range l.errs {
		if e.at.After(down) {
			during = append(during, e.err.Error())
			var ce *centrifuge.Error
			if errors.As(e.err, &ce) {
				replies = append(replies, e.err.Error())
			}
		}
	}
	// An ack needs Kafka: none may arrive for a publish sent while it was down.
	for data, at := range l.ackedAt {
		if sent := l.sentAt[data]; sent.After(down.Add(200*time.Millisecond)) && at.Before(up) {
			l.mu.Unlock()
			t.Fatalf("publish %s sent at +%v of the outage was acknowledged while Kafka was down", data, sent.Sub(down))
		}
	}
	l.mu.Unlock()
	if len(during) == 0 {
		t.Fatalf("no publish failed while Kafka was down: %s", l.summary())
	}
	// The relay answers an error reply (it gives up on Kafka after its
	// publish timeout) rather than leaving the client to time out.
	if len(replies) == 0 {
		t.Fatalf("no publish got an error reply during the outage, only client-side failures: %q", during)
	}
	t.Logf("error replies during the outage: %d of %d failures, e.g. %q", len(replies), len(during), replies[0])
	verify(t, c, clients, channels, l)
	// The services survived the outage.
	for _, p := range c.all() {
		if !p.running() {
			t.Fatalf("%s exited during the Kafka outage; log:\n%s", p.name, tail(p.log, 30))
		}
	}
}
