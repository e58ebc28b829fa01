package protocol

import (
	"encoding/json"
	"testing"
)

func TestPresenceCommandsAndReplies(t *testing.T) {
	var d Decoder
	var got []*Command
	h := handlerFunc(func(c *Command) error { cp := *c; got = append(got, &cp); return nil })
	frame := []byte(`{"id":1,"presence":{"channel":"chat:1"}}` + "\n" + `{"id":2,"presence_stats":{"channel":"chat:2"}}` + "\n" + `{"id":3,"subscribe":{"channel":"chat:3","join_leave":true}}`)
	if err := d.Decode(frame, h); err != nil {
		t.Fatal(err)
	}
	if got[0].Method() != MethodPresence || got[0].Presence.Channel != "chat:1" ||
		got[1].Method() != MethodPresenceStats || got[1].PresenceStats.Channel != "chat:2" ||
		got[2].Method() != MethodSubscribe || !got[2].Subscribe.JoinLeave {
		t.Fatalf("decoded %+v %+v %+v", got[0], got[1], got[2])
	}

	b := AppendPresenceReply(nil, 1, []ClientInfo{{Client: "c1", User: "u1", ConnInfo: Raw(`{"a":1}`)}, {Client: "c2", User: "u2", ChanInfo: Raw(`"x"`)}})
	b = append(b, '\n')
	b = AppendPresenceStatsReply(b, 2, &PresenceStatsResult{NumClients: 2, NumUsers: 1})
	b = append(b, '\n')
	b = AppendJoinPush(b, "chat:1", &ClientInfo{Client: "c3", User: "u3"}, false)
	b = append(b, '\n')
	b = AppendJoinPush(b, "chat:1", &ClientInfo{Client: "c3", User: "u3"}, true)
	rs, err := DecodeReplies(b)
	if err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if p := rs[0].Presence; p == nil || len(p.Presence) != 2 || p.Presence["c1"].User != "u1" || string(p.Presence["c1"].ConnInfo) != `{"a":1}` || string(p.Presence["c2"].ChanInfo) != `"x"` {
		t.Errorf("presence reply %s", b)
	}
	if s := rs[1].PresenceStats; s == nil || s.NumClients != 2 || s.NumUsers != 1 {
		t.Errorf("presence_stats reply %s", b)
	}
	if p := rs[2].Push; p == nil || p.Join == nil || p.Join.Info.Client != "c3" || p.Channel != "chat:1" {
		t.Errorf("join push %s", b)
	}
	if p := rs[3].Push; p == nil || p.Leave == nil || p.Leave.Info.User != "u3" {
		t.Errorf("leave push %s", b)
	}
	// An empty presence is an empty object, as the SDKs expect.
	var v map[string]map[string]map[string]any
	if err := json.Unmarshal(AppendPresenceReply(nil, 0, nil), &v); err != nil || v["presence"]["presence"] == nil {
		t.Errorf("empty presence: %v %v", v, err)
	}
}

type handlerFunc func(*Command) error

func (f handlerFunc) HandleCommand(c *Command) error { return f(c) }
