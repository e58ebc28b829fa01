package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store/memstore"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

func join(ch, id, user string) *heraldv1.PresenceChange {
	return &heraldv1.PresenceChange{Channel: ch, JoinLeave: true, Client: &heraldv1.ClientInfo{Client: id, User: user, ConnInfo: []byte(`{"n":"` + user + `"}`)}}
}

func leave(ch, id string) *heraldv1.PresenceChange {
	return &heraldv1.PresenceChange{Channel: ch, Leave: true, JoinLeave: true, Client: &heraldv1.ClientInfo{Client: id}}
}

func (r *testRelay) presence(full bool, changes ...*heraldv1.PresenceChange) {
	r.tb.Helper()
	if err := r.stream.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Presence{Presence: &heraldv1.PresenceDelta{Full: full, Changes: changes}}}); err != nil {
		r.tb.Fatal(err)
	}
}

// snapshot sends a full presence (as a relay's new stream does) and the
// empty delta that ends it.
func (r *testRelay) snapshot(changes ...*heraldv1.PresenceChange) {
	r.tb.Helper()
	r.presence(true, changes...)
	r.presence(false)
}

// eventLog returns the events received as "join:client" / "leave:client".
func (r *testRelay) eventLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		kind := "join"
		if e.Leave {
			kind = "leave"
		}
		out = append(out, kind+":"+e.Client.GetClient())
	}
	return out
}

// waitEvents waits for exactly the events want (in any order) and forgets
// them.
func (r *testRelay) waitEvents(tb testing.TB, want ...string) {
	tb.Helper()
	waitFor(tb, 10*time.Second, fmt.Sprintf("events %v", want), func() bool { return len(r.eventLog()) >= len(want) })
	got := r.eventLog()
	want = slices.Clone(want)
	slices.Sort(got) // a sweep's leaves come in no particular order
	slices.Sort(want)
	if !slices.Equal(got, want) {
		tb.Fatalf("events %v, want %v", got, want)
	}
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}

func presenceOf(tb testing.TB, c heraldv1.RouterClient, ch string) *heraldv1.PresenceResponse {
	tb.Helper()
	resp, err := c.Presence(context.Background(), &heraldv1.PresenceRequest{Channel: ch})
	if err != nil {
		tb.Fatal(err)
	}
	return resp
}

func memberIDs(resp *heraldv1.PresenceResponse) string {
	var ids []string
	for _, c := range resp.Clients {
		ids = append(ids, c.Client)
	}
	slices.Sort(ids)
	return strings.Join(ids, ",")
}

// TestPresenceAcrossRelays: the controller merges the relays' members,
// emits no event for first snapshots, coalesces join/leave within a tick,
// caps events per channel per tick, diffs a reconnecting relay's snapshot,
// and drops a gone relay's members after the grace (with leaves).
func TestPresenceAcrossRelays(t *testing.T) {
	brokers := startKafka(t)
	cfg := testConfig(brokers, 4, "c1")
	cfg.PresenceGrace = 600 * time.Millisecond
	cfg.PresenceTick = 50 * time.Millisecond
	cfg.PresenceEvents = 3
	c := startController(t, cfg, memstore.New())
	waitOwns(t, c.Server, 4)
	api := dialController(t, c.Addr())
	const ch = "chat:1"

	a := openRelay(t, c.Addr(), "rA", true, ch)
	b := openRelay(t, c.Addr(), "rB", true, ch)
	a.snapshot(join(ch, "a1", "ann"))
	b.snapshot(join(ch, "b1", "bob"), join("other", "b1", "bob"))
	waitFor(t, 5*time.Second, "both relays' members", func() bool { return memberIDs(presenceOf(t, api, ch)) == "a1,b1" })
	resp := presenceOf(t, api, ch)
	if !resp.Owned || resp.NumClients != 2 || resp.NumUsers != 2 {
		t.Fatalf("presence %+v", resp)
	}
	for _, m := range resp.Clients {
		if string(m.ConnInfo) != `{"n":"`+m.User+`"}` {
			t.Fatalf("member %+v", m)
		}
	}
	stats, err := api.Presence(context.Background(), &heraldv1.PresenceRequest{Channel: ch, StatsOnly: true})
	if err != nil || len(stats.Clients) != 0 || stats.NumClients != 2 {
		t.Fatalf("stats %+v %v", stats, err)
	}

	// A join reaches every interested relay; a join and leave within one
	// tick cancel; over the cap, the rest are dropped.
	a.presence(false, join(ch, "a2", "ann"))
	a.waitEvents(t, "join:a2")
	b.waitEvents(t, "join:a2")
	a.presence(false, join(ch, "a3", "ann"), leave(ch, "a3"), join(ch, "x1", "x"), join(ch, "x2", "x"), join(ch, "x3", "x"), join(ch, "x4", "x"), join(ch, "x5", "x"))
	b.waitEvents(t, "join:x1", "join:x2", "join:x3")
	if got := metricValue(c.m.presenceEvents.WithLabelValues("dropped")); got != 2 {
		t.Errorf("dropped events %v, want 2", got)
	}
	a.presence(false, leave(ch, "x1"), leave(ch, "x2"), leave(ch, "x3"), leave(ch, "x4"), leave(ch, "x5"))
	b.waitEvents(t, "leave:x1", "leave:x2", "leave:x3")
	a.waitEvents(t, "join:x1", "join:x2", "join:x3", "leave:x1", "leave:x2", "leave:x3")

	// B reconnects (a new stream, same relay id): its snapshot replaces
	// what it had; the difference is told.
	b.close()
	b2 := openRelay(t, c.Addr(), "rB", true, ch)
	b2.snapshot(join(ch, "b2", "bob"))
	a.waitEvents(t, "join:b2", "leave:b1")
	if got := memberIDs(presenceOf(t, api, ch)); got != "a1,a2,b2" {
		t.Fatalf("after B's new snapshot: %s", got)
	}
	if got := presenceOf(t, api, "other"); got.NumClients != 0 {
		t.Fatalf("B's member of other not replaced: %+v", got)
	}

	// A goes away: its members stay for the grace, then leave.
	a.close()
	gone := time.Now()
	time.Sleep(cfg.PresenceGrace / 3)
	if got := memberIDs(presenceOf(t, api, ch)); got != "a1,a2,b2" {
		t.Fatalf("within the grace: %s", got)
	}
	waitFor(t, 5*time.Second, "A's members to leave", func() bool { return memberIDs(presenceOf(t, api, ch)) == "b2" })
	if el := time.Since(gone); el < cfg.PresenceGrace || el > cfg.PresenceGrace+1500*time.Millisecond {
		t.Errorf("A's members left after %s, grace %s", el, cfg.PresenceGrace)
	}
	b2.waitEvents(t, "join:b2", "leave:b1", "leave:a1", "leave:a2")
	if got := metricValue(c.m.presenceMembers); got != 1 {
		t.Errorf("presence_members = %v, want 1", got)
	}
}

// TestPresenceOwnerMoves: every controller holds every relay's members;
// only the owner answers (owned=false elsewhere), and when the owner dies
// the new owner answers with the members it already had.
func TestPresenceOwnerMoves(t *testing.T) {
	brokers := startKafka(t)
	st := memstore.New()
	c1 := startController(t, testConfig(brokers, 4, "c1"), st)
	c2 := startController(t, testConfig(brokers, 4, "c2"), st)
	waitFor(t, 20*time.Second, "both to own partitions", func() bool {
		return len(c1.Ownership().Partitions) == 2 && len(c2.Ownership().Partitions) == 2
	})
	const ch = "room:42"
	owner, other := c1, c2
	if !slices.Contains(c1.Ownership().Partitions, partition.For(ch, 4)) {
		owner, other = c2, c1
	}
	for _, c := range []*runningController{c1, c2} {
		r := openRelay(t, c.Addr(), "rA", true, ch)
		r.snapshot(join(ch, "m1", "u1"), join(ch, "m2", "u2"))
	}
	ownerAPI, otherAPI := dialController(t, owner.Addr()), dialController(t, other.Addr())
	waitFor(t, 5*time.Second, "the owner's answer", func() bool { return memberIDs(presenceOf(t, ownerAPI, ch)) == "m1,m2" })
	if resp := presenceOf(t, otherAPI, ch); resp.Owned {
		t.Fatalf("non-owner answered %+v", resp)
	}
	owner.stop(t)
	waitOwns(t, other.Server, 4)
	resp := presenceOf(t, otherAPI, ch)
	if !resp.Owned || memberIDs(resp) != "m1,m2" {
		t.Fatalf("new owner: %+v", resp)
	}
}
