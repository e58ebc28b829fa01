package relay

import (
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/herald-chat/herald/internal/channelopt"
	"github.com/herald-chat/herald/internal/protocol"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// BenchmarkPresenceReply10k: a relay answering presence of a channel with
// 10,000 members: the owner's gRPC reply decoded, then encoded as the
// client's JSON reply (the frame the client reads). Reports both sizes.
func BenchmarkPresenceReply10k(b *testing.B) {
	const n = 10_000
	resp := &heraldv1.PresenceResponse{Owned: true, NumClients: n, NumUsers: n}
	for i := range n {
		resp.Clients = append(resp.Clients, &heraldv1.ClientInfo{
			Client: newUUID(), User: "user-" + strconv.Itoa(i), ConnInfo: []byte(`{"name":"User ` + strconv.Itoa(i) + `"}`),
		})
	}
	wire, err := proto.Marshal(resp)
	if err != nil {
		b.Fatal(err)
	}
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		var got heraldv1.PresenceResponse
		if err := proto.Unmarshal(wire, &got); err != nil {
			b.Fatal(err)
		}
		members := make([]protocol.ClientInfo, len(got.Clients))
		for i, c := range got.Clients {
			members[i] = protocol.ClientInfo{Client: c.Client, User: c.User, ConnInfo: c.ConnInfo, ChanInfo: c.ChanInfo}
		}
		out = protocol.AppendPresenceReply(out[:0], 1, members)
	}
	b.ReportMetric(float64(len(wire)), "grpc-bytes")
	b.ReportMetric(float64(len(out)), "json-bytes")
}

// BenchmarkSubscribeStorm: the relay's cost of one subscription in a
// connect storm of 10,000 clients on one channel, with and without
// presence: register the subscription, and with presence the member change
// reported (here flushed per subscription, the worst case; a loop flushes
// once per round) into the relay's table and the controller queue.
func BenchmarkSubscribeStorm(b *testing.B) {
	for _, tc := range []struct {
		name string
		ns   string
	}{{"presence=off", ""}, {"presence=on", `{"chat":{"presence":true,"join_leave":true}}`}} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 10_000
			b.ReportAllocs()
			for b.Loop() {
				s, _ := benchServer(b, "other", 0)
				s.links = &links{srv: s}
				s.pres = newPresenceTable()
				s.chopts = channelopt.MustParse(tc.ns)
				l := newLoop(0, inlineLoop{}, s)
				s.loops[0] = l
				const ch = "chat:storm"
				s.router.shard(ch).m[ch] = &entry{ch: ch, state: entrySynced, epoch: "e", perLoop: make([]int32, 1)}
				for i := range n {
					cl := &client{c: &benchConn{}, l: l, state: stateConnected, claims: &identity{Subject: "u" + strconv.Itoa(i)}}
					cl.id = newUUIDBytes()
					l.addConn(cl)
					sub := &subscription{ch: ch, state: subLive}
					if o := s.chopts.Lookup(ch); o.Presence {
						sub.pres, sub.joinLeave = true, o.JoinLeave
					}
					l.addSub(cl, sub)
					if sub.pres {
						l.presenceJoin(cl, sub, nil)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/subscribe")
		})
	}
}
