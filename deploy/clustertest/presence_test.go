package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	centrifuge "github.com/centrifugal/centrifuge-go"

	"github.com/herald-chat/herald/internal/auth"
)

// presenceClient is a centrifuge-go client connected to one relay and
// subscribed (client-side, join_leave) to one channel with presence.
type presenceClient struct {
	name string
	c    *centrifuge.Client
	sub  *centrifuge.Subscription
	id   string

	mu     sync.Mutex
	events []string // "join:user" / "leave:user"
}

func newPresenceClient(t *testing.T, url, name, ch string) *presenceClient {
	t.Helper()
	claims := auth.NewClaims(name, nil, time.Hour)
	claims.Caps = []auth.Capability{{Channels: []string{"chat:*"}, Match: "wildcard", Allow: []string{"sub"}}}
	claims.Info = json.RawMessage(`{"name":"` + name + `"}`)
	tok, err := auth.Sign(tokenSecret, claims)
	if err != nil {
		t.Fatal(err)
	}
	pc := &presenceClient{name: name}
	pc.c = centrifuge.NewJsonClient(url, centrifuge.Config{Token: tok, MinReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 500 * time.Millisecond})
	connected := make(chan string, 1)
	pc.c.OnConnected(func(e centrifuge.ConnectedEvent) {
		select {
		case connected <- e.ClientID:
		default:
		}
	})
	pc.sub, err = pc.c.NewSubscription(ch, centrifuge.SubscriptionConfig{JoinLeave: true})
	if err != nil {
		t.Fatal(err)
	}
	pc.sub.OnJoin(func(e centrifuge.JoinEvent) { pc.event("join:" + e.User) })
	pc.sub.OnLeave(func(e centrifuge.LeaveEvent) { pc.event("leave:" + e.User) })
	pc.sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) { pc.event(fmt.Sprintf("unsubscribed:%d", e.Code)) })
	pc.sub.OnPublication(func(e centrifuge.PublicationEvent) { pc.event(fmt.Sprintf("pub:%d:%s", e.Offset, e.Data)) })
	pc.c.OnDisconnected(func(e centrifuge.DisconnectedEvent) { pc.event(fmt.Sprintf("disconnected:%d", e.Code)) })
	subscribed := make(chan struct{}, 1)
	pc.sub.OnSubscribed(func(centrifuge.SubscribedEvent) {
		select {
		case subscribed <- struct{}{}:
		default:
		}
	})
	if err := pc.c.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pc.c.Close)
	select {
	case pc.id = <-connected:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: not connected", name)
	}
	if err := pc.sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-subscribed:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: not subscribed", name)
	}
	return pc
}

func (pc *presenceClient) event(e string) {
	pc.mu.Lock()
	pc.events = append(pc.events, e)
	pc.mu.Unlock()
}

func (pc *presenceClient) saw(e string) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return slices.Contains(pc.events, e)
}

// members asks presence through pc's subscription: the users, sorted.
func (pc *presenceClient) members() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := pc.sub.Presence(ctx)
	if err != nil {
		return "", err
	}
	var users []string
	for id, ci := range res.Clients {
		if ci.Client != id || string(ci.ConnInfo) != `{"name":"`+ci.User+`"}` {
			return "", fmt.Errorf("member %s: %+v", id, ci)
		}
		users = append(users, ci.User)
	}
	slices.Sort(users)
	return strings.Join(users, ","), nil
}

func waitMembers(t *testing.T, pc *presenceClient, timeout time.Duration, want string) {
	t.Helper()
	var got string
	var err error
	waitFor(t, timeout, fmt.Sprintf("presence from %s = %q", pc.name, want), func() bool {
		got, err = pc.members()
		return err == nil && got == want
	})
}

// TestPresenceAcrossRelays: two SDK clients on two different relays see
// each other in presence and presence_stats and each other's join; when a
// relay is killed its client leaves presence (and the other sees the
// leave) within the presence grace plus about a second; when controllers
// are killed one after the other, presence stays right through the new
// owner, also once it is a restarted controller that rebuilt the set from
// the relays' snapshots.
func TestPresenceAcrossRelays(t *testing.T) {
	c := startCluster(t)
	const ch = "chat:lobby"
	ann := newPresenceClient(t, c.relayWS[0], "ann", ch)
	bob := newPresenceClient(t, c.relayWS[1], "bob", ch)
	waitFor(t, 10*time.Second, "ann sees bob join", func() bool { return ann.saw("join:bob") })
	waitMembers(t, ann, 10*time.Second, "ann,bob")
	waitMembers(t, bob, 10*time.Second, "ann,bob")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := bob.sub.PresenceStats(ctx)
	cancel()
	if err != nil || st.NumClients != 2 || st.NumUsers != 2 {
		t.Fatalf("presence_stats %+v, %v", st, err)
	}

	// A relay dies: its client leaves presence within the bound.
	c.relays[1].kill9()
	killed := time.Now()
	bob.c.Close()
	bound := presenceGrace + 2*time.Second
	waitMembers(t, ann, bound+5*time.Second, "ann")
	gone := time.Since(killed)
	waitFor(t, 5*time.Second, "ann sees bob leave", func() bool { return ann.saw("leave:bob") })
	t.Logf("killed relay's client gone from presence after %s (grace %s)", gone.Round(10*time.Millisecond), presenceGrace)
	if gone > bound {
		t.Errorf("killed relay's client left presence after %s, bound %s", gone, bound)
	}

	// The relay comes back with a new client.
	c.relays[1].start(t)
	c.relays[1].waitReady(t, 60*time.Second)
	cid := newPresenceClient(t, c.relayWS[1], "cid", ch)
	waitMembers(t, cid, 10*time.Second, "ann,cid")
	waitFor(t, 10*time.Second, "ann sees cid join", func() bool { return ann.saw("join:cid") })

	// Controllers die one after the other; the survivor owns everything
	// and answers, then the restarted one after it took over everything.
	for i, victim := range c.controllers {
		survivor := c.controllers[1-i]
		victim.kill9()
		waitFor(t, 30*time.Second, survivor.name+" to own all partitions", func() bool { return ownedPartitions(t, survivor) == partitions })
		waitMembers(t, ann, 15*time.Second, "ann,cid")
		waitMembers(t, cid, 15*time.Second, "ann,cid")
		victim.start(t)
		victim.waitReady(t, 60*time.Second)
		waitFor(t, 30*time.Second, "both controllers to own partitions", func() bool {
			return ownedPartitions(t, victim) > 0 && ownedPartitions(t, survivor) > 0
		})
		waitMembers(t, ann, 15*time.Second, "ann,cid")
	}
}
