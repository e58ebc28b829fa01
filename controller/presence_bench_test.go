package controller

import (
	"context"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/herald-chat/herald/internal/store/memstore"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// benchPresenceServer is a controller (not running) that owns every
// partition, with its presence state.
func benchPresenceServer(b *testing.B) *Server {
	b.Helper()
	cfg := testConfig([]string{"127.0.0.1:1"}, 1, "bench")
	s, err := New(cfg, memstore.New(), nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.ln.Close() })
	s.numParts.Store(1)
	s.parts[0] = &partState{}
	return s
}

func stormChanges(ch string, n int) []*heraldv1.PresenceChange {
	out := make([]*heraldv1.PresenceChange, n)
	for i := range out {
		out[i] = &heraldv1.PresenceChange{Channel: ch, JoinLeave: true, Client: &heraldv1.ClientInfo{
			Client: "client-" + strconv.Itoa(i), User: "user-" + strconv.Itoa(i), ConnInfo: []byte(`{"name":"User ` + strconv.Itoa(i) + `"}`)}}
	}
	return out
}

// BenchmarkPresence10k: the owner answering Presence of a channel with
// 10,000 members (from two relays): collecting them and the gRPC reply's
// size.
func BenchmarkPresence10k(b *testing.B) {
	s := benchPresenceServer(b)
	changes := stormChanges("chat:big", 10_000)
	for i, half := range [][]*heraldv1.PresenceChange{changes[:5000], changes[5000:]} {
		r := newRelayStream("relay-"+strconv.Itoa(i), 16)
		s.presence.apply(r, &heraldv1.PresenceDelta{Full: true, Changes: half})
		s.presence.apply(r, &heraldv1.PresenceDelta{})
	}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		resp, err := s.Presence(context.Background(), &heraldv1.PresenceRequest{Channel: "chat:big"})
		if err != nil || resp.NumClients != 10_000 {
			b.Fatalf("%v %v", resp.GetNumClients(), err)
		}
		size = proto.Size(resp)
	}
	b.ReportMetric(float64(size), "reply-bytes")
}

// BenchmarkPresenceStorm10k: a connect storm of 10,000 clients on one
// channel with join_leave as the controllers see it: the relay's deltas (of
// 1,000 changes) applied, the tick's events coalesced and capped and
// queued to one interested relay stream; per join.
func BenchmarkPresenceStorm10k(b *testing.B) {
	const n = 10_000
	changes := stormChanges("chat:storm", n)
	b.ReportAllocs()
	for b.Loop() {
		s := benchPresenceServer(b)
		r := newRelayStream("relay", 1024)
		s.interest.add("chat:storm", r)
		s.presence.apply(r, &heraldv1.PresenceDelta{Full: true})
		s.presence.apply(r, &heraldv1.PresenceDelta{})
		for i := 0; i < n; i += 1000 {
			s.presence.apply(r, &heraldv1.PresenceDelta{Changes: changes[i : i+1000]})
			s.presence.flush(s.cfg.PresenceEvents) // a tick per delta
		}
		s.ln.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/join")
}
