package relay

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	centrifuge "github.com/centrifugal/centrifuge-go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-chat/herald/internal/auth"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

const presenceNamespaces = `{"chat":{"presence":true,"join_leave":true},"room":{"presence":true,"join_leave":true,"force_push_join_leave":true},"":{"presence":true}}`

func tokenInfo(t testing.TB, user string, channels []string, caps []auth.Capability, info string) string {
	t.Helper()
	c := auth.NewClaims(user, channels, time.Hour)
	c.Caps = caps
	c.Info = json.RawMessage(info)
	s, err := auth.Sign(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPresenceReported: members of presence channels (client-side with the
// subscription token's info, server-side from the token) are reported to
// the controller with conn_info and chan_info, leave on unsubscribe and
// disconnect, a reopened stream starts with the whole set (full, then an
// empty delta), and channels without presence report nothing.
func TestPresenceReported(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.ChannelNamespaces = presenceNamespaces })
	caps := []auth.Capability{{Channels: []string{"chat:*", "feed:1"}, Match: "wildcard", Allow: []string{"sub"}}}
	a := newSDKClient(t, e.srv.Addr(), tokenInfo(t, "alice", []string{"room:1"}, caps, `{"name":"Alice"}`))
	a.connect(t, "room:1")
	sub, err := a.c.NewSubscription("chat:1", centrifuge.SubscriptionConfig{Token: subTokenInfo(t, "alice", "chat:1", `{"role":"mod"}`), JoinLeave: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	news, _ := a.c.NewSubscription("feed:1", centrifuge.SubscriptionConfig{})
	if err := news.Subscribe(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "alice in chat:1 and room:1", func() bool { return len(e.fc.presenceOf("chat:1")) == 1 && len(e.fc.presenceOf("room:1")) == 1 })
	for _, m := range e.fc.presenceOf("chat:1") {
		if m.User != "alice" || string(m.ConnInfo) != `{"name":"Alice"}` || string(m.ChanInfo) != `{"role":"mod"}` || m.Client == "" {
			t.Fatalf("member %+v", m)
		}
	}
	if got := e.fc.presenceOf("feed:1"); len(got) != 0 {
		t.Fatalf("feed:1 has no presence but reported %v", got)
	}

	// A stream that reopens starts with the whole set.
	e.fc.pmu.Lock()
	fulls := e.fc.fulls
	e.fc.pmu.Unlock()
	e.fc.stop()
	e.fc.start(t)
	waitUntil(t, "a new full snapshot", func() bool {
		e.fc.pmu.Lock()
		defer e.fc.pmu.Unlock()
		return e.fc.fulls > fulls && e.fc.snapshotEnds >= e.fc.fulls
	})
	if len(e.fc.presenceOf("chat:1")) != 1 || len(e.fc.presenceOf("room:1")) != 1 {
		t.Fatalf("snapshot: chat:1 %v room:1 %v", e.fc.presenceOf("chat:1"), e.fc.presenceOf("room:1"))
	}

	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "alice leaves chat:1", func() bool { return len(e.fc.presenceOf("chat:1")) == 0 })
	a.c.Close()
	waitUntil(t, "alice leaves room:1", func() bool { return len(e.fc.presenceOf("room:1")) == 0 })
}

// TestPresenceCommands: presence and presence_stats through the SDK, the
// owner asked (the non-owner without Presence skipped), permissions (a
// subscriber, a prs grant; else 103), 108 for a channel without presence.
func TestPresenceCommands(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.ChannelNamespaces = `{"chat":{"presence":true,"join_leave":true}}` })
	caps := []auth.Capability{{Channels: []string{"chat:*", "news"}, Match: "wildcard", Allow: []string{"sub"}}}
	var subs []*centrifuge.Subscription
	for _, u := range []string{"ann", "bob", "bob"} {
		c := newSDKClient(t, e.srv.Addr(), tokenInfo(t, u, nil, caps, `{"u":"`+u+`"}`))
		c.connect(t)
		s, _ := c.c.NewSubscription("chat:p", centrifuge.SubscriptionConfig{})
		if err := s.Subscribe(); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	waitUntil(t, "3 members", func() bool { return len(e.fc.presenceOf("chat:p")) == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := subs[0].Presence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pr.Clients) != 3 {
		t.Fatalf("presence %+v", pr)
	}
	for id, ci := range pr.Clients {
		if ci.Client != id || string(ci.ConnInfo) != `{"u":"`+ci.User+`"}` {
			t.Fatalf("member %s: %+v", id, ci)
		}
	}
	st, err := subs[1].PresenceStats(ctx)
	if err != nil || st.NumClients != 3 || st.NumUsers != 2 {
		t.Fatalf("presence_stats %+v, %v", st, err)
	}

	c := newSDKClient(t, e.srv.Addr(), tokenInfo(t, "cid", nil, caps, ""))
	c.connect(t)
	news, _ := c.c.NewSubscription("news", centrifuge.SubscriptionConfig{})
	if err := news.Subscribe(); err != nil {
		t.Fatal(err)
	}
	_, err = news.Presence(ctx)
	var serr *centrifuge.Error
	if !errors.As(err, &serr) || serr.Code != 108 {
		t.Fatalf("presence of a channel without presence: %v, want 108", err)
	}

	// Not subscribed: a prs grant allows, nothing else does.
	for _, tc := range []struct {
		name string
		caps []auth.Capability
		want string
	}{
		{"no grant", nil, `"code":103`},
		{"prs grant", []auth.Capability{{Channels: []string{"chat:p"}, Allow: []string{"prs"}}}, `"num_clients":3`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := connectRaw(t, e.srv.Addr(), token(t, "eve", nil, tc.caps, 0))
			w.write(textFrame(`{"id":2,"presence_stats":{"channel":"chat:p"}}`))
			if got := w.readText(); !strings.Contains(got, tc.want) {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestJoinLeavePushes: the owner's events reach the subscriptions that
// asked join_leave (and all on a force_push_join_leave namespace, and
// server-side ones on a join_leave namespace), one frame per channel run,
// not the others.
func TestJoinLeavePushes(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.ChannelNamespaces = presenceNamespaces })
	caps := []auth.Capability{{Channels: []string{"chat:*", "room:*"}, Match: "wildcard", Allow: []string{"sub"}}}
	type seen struct {
		ch, client, user string
		leave            bool
	}
	events := make(chan seen, 64)
	on := func(s *centrifuge.Subscription, ch string) {
		s.OnJoin(func(e centrifuge.JoinEvent) { events <- seen{ch, e.Client, e.User, false} })
		s.OnLeave(func(e centrifuge.LeaveEvent) { events <- seen{ch, e.Client, e.User, true} })
	}
	a := newSDKClient(t, e.srv.Addr(), token(t, "ann", []string{"chat:srv"}, caps, 0))
	a.c.OnJoin(func(e centrifuge.ServerJoinEvent) { events <- seen{"srv:" + e.Channel, e.Client, e.User, false} })
	a.connect(t, "chat:srv")
	asked, _ := a.c.NewSubscription("chat:1", centrifuge.SubscriptionConfig{JoinLeave: true})
	on(asked, "asked")
	notAsked, _ := a.c.NewSubscription("chat:2", centrifuge.SubscriptionConfig{})
	on(notAsked, "not-asked")
	forced, _ := a.c.NewSubscription("room:1", centrifuge.SubscriptionConfig{})
	on(forced, "forced")
	for _, s := range []*centrifuge.Subscription{asked, notAsked, forced} {
		if err := s.Subscribe(); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "interest", func() bool {
		return e.fc.interested("chat:1") && e.fc.interested("chat:2") && e.fc.interested("room:1") && e.fc.interested("chat:srv")
	})
	info := func(id, user string) *heraldv1.ClientInfo { return &heraldv1.ClientInfo{Client: id, User: user} }
	e.fc.sendEvents(
		&heraldv1.PresenceEvent{Channel: "chat:1", Client: info("c1", "u1")},
		&heraldv1.PresenceEvent{Channel: "chat:1", Client: info("c2", "u2"), Leave: true},
		&heraldv1.PresenceEvent{Channel: "chat:2", Client: info("c3", "u3")},
		&heraldv1.PresenceEvent{Channel: "room:1", Client: info("c4", "u4")},
		&heraldv1.PresenceEvent{Channel: "chat:srv", Client: info("c5", "u5")},
	)
	want := map[seen]bool{
		{"asked", "c1", "u1", false}:        true,
		{"asked", "c2", "u2", true}:         true,
		{"forced", "c4", "u4", false}:       true,
		{"srv:chat:srv", "c5", "u5", false}: true,
	}
	for len(want) > 0 {
		select {
		case ev := <-events:
			if !want[ev] {
				t.Fatalf("unexpected event %+v", ev)
			}
			delete(want, ev)
		case <-time.After(10 * time.Second):
			t.Fatalf("missing events %v", want)
		}
	}
	select {
	case ev := <-events:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	if got := counterValue(t, e.srv.m.presencePushes); got != 4 {
		t.Errorf("herald_relay_presence_pushes_total = %v, want 4", got)
	}
}

func counterValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}
