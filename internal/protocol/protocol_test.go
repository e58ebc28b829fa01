package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeCommands(t *testing.T) {
	tests := []struct {
		name    string
		frame   string
		methods []Method
		wantErr bool
	}{
		{"ping", `{}`, []Method{MethodEmpty}, false},
		{"connect", `{"id":1,"connect":{"token":"t","name":"go"}}`, []Method{MethodConnect}, false},
		{"multi", "{\"id\":1,\"subscribe\":{\"channel\":\"a\"}}\n{\"id\":2,\"publish\":{\"channel\":\"a\",\"data\":{\"x\":1}}}\n{}\n", []Method{MethodSubscribe, MethodPublish, MethodEmpty}, false},
		{"crlf and blank lines", "{\"id\":1,\"unsubscribe\":{\"channel\":\"a\"}}\r\n\n{\"id\":2,\"history\":{\"channel\":\"a\",\"limit\":10,\"since\":{\"offset\":3,\"epoch\":\"e\"}}}", []Method{MethodUnsubscribe, MethodHistory}, false},
		{"refresh and explicit ping", "{\"id\":3,\"refresh\":{\"token\":\"x\"}}\n{\"id\":4,\"ping\":{}}", []Method{MethodRefresh, MethodPing}, false},
		{"unsupported", `{"id":5,"rpc":{"method":"m"}}`, []Method{MethodUnsupported}, false},
		{"unknown fields ignored", `{"id":6,"subscribe":{"channel":"a","flag":1,"whatever":[1,2]}}`, []Method{MethodSubscribe}, false},
		{"bad json", `{"id":1,"connect":`, nil, true},
		{"not object", `[1,2]`, nil, true},
		{"second bad", "{}\n{oops}", []Method{MethodEmpty}, true},
		{"empty", "\n\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Method
			err := DecodeCommands([]byte(tt.frame), func(c *Command) error {
				got = append(got, c.Method())
				return nil
			})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.methods) {
				t.Fatalf("methods = %v, want %v", got, tt.methods)
			}
		})
	}
}

func TestDecodeCommandsStopsOnCallbackError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := DecodeCommands([]byte("{}\n{}\n{}"), func(*Command) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("err=%v n=%d", err, n)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	cmds := []*Command{
		{ID: 1, Connect: &ConnectRequest{Token: "tok", Name: "go", Subs: map[string]*SubscribeRequest{"room": {Recover: true, Offset: 7, Epoch: "ep"}}}},
		{ID: 2, Subscribe: &SubscribeRequest{Channel: "news", Token: "st", Recover: true, Offset: 3, Epoch: "e"}},
		{ID: 3, Publish: &PublishRequest{Channel: "news", Data: json.RawMessage(`{"text":"hi"}`)}},
		{ID: 4, History: &HistoryRequest{Channel: "news", Limit: 5, Since: &StreamPosition{Offset: 2, Epoch: "e"}, Reverse: true}},
		{ID: 5, Unsubscribe: &UnsubscribeRequest{Channel: "news"}},
		{ID: 6, Refresh: &RefreshRequest{Token: "new"}},
		{},
	}
	var frame []byte
	for i, c := range cmds {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			frame = append(frame, '\n')
		}
		frame = append(frame, b...)
	}
	var got []*Command
	if err := DecodeCommands(frame, func(c *Command) error { got = append(got, c); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cmds) {
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(cmds)
		t.Fatalf("round trip mismatch:\n got %s\nwant %s", a, b)
	}
}

func decodeOne(t testing.TB, b []byte) *Reply {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
	rs, err := DecodeReplies(b)
	if err != nil || len(rs) != 1 {
		t.Fatalf("decode %s: %v (%d)", b, err, len(rs))
	}
	return rs[0]
}

func TestEncodeRoundTrip(t *testing.T) {
	pub := &Publication{Data: Raw("{\"a\":\n 1}"), Info: &ClientInfo{User: "u\"1", ConnInfo: Raw(`{"name":"Ann"}`)}, Offset: 42}
	t.Run("push", func(t *testing.T) {
		b := AppendPush(nil, "chat:1", pub)
		if strings.Contains(string(b), "\n") {
			t.Fatalf("push contains newline: %q", b)
		}
		r := decodeOne(t, b)
		if r.ID != 0 || r.Push == nil || r.Push.Channel != "chat:1" || r.Push.Pub == nil {
			t.Fatalf("bad push %s", b)
		}
		if r.Push.Pub.Offset != 42 || string(r.Push.Pub.Data) != `{"a": 1}` || r.Push.Pub.Info.User != `u"1` || string(r.Push.Pub.Info.ConnInfo) != `{"name":"Ann"}` {
			t.Fatalf("bad pub %+v", r.Push.Pub)
		}
	})
	t.Run("error", func(t *testing.T) {
		b := AppendError(nil, 7, ErrPermissionDenied)
		if string(b) != `{"id":7,"error":{"code":103,"message":"permission denied"}}` {
			t.Fatalf("got %s", b)
		}
		b = AppendError(nil, 8, ErrInternal)
		r := decodeOne(t, b)
		if r.ID != 8 || *r.Error != *ErrInternal {
			t.Fatalf("got %s", b)
		}
	})
	t.Run("empty replies", func(t *testing.T) {
		if b := AppendEmptyReply(nil, 3, "publish"); string(b) != `{"id":3,"publish":{}}` {
			t.Fatalf("got %s", b)
		}
		if b := AppendPing(nil); string(b) != `{}` {
			t.Fatalf("got %s", b)
		}
	})
	t.Run("connect", func(t *testing.T) {
		res := &ConnectResult{Client: "c1", Version: "herald", Ping: 25, Pong: true, Expires: true, TTL: 60,
			Subs: map[string]*SubscribeResult{
				"a": {Recoverable: true, Positioned: true, Epoch: "e", Offset: 5, Recovered: true, WasRecover: true, Publications: []Publication{{Data: Raw(`{"a":1}`), Offset: 5}}},
				"b": {Recoverable: true, Positioned: true, Epoch: "f"},
			}}
		for _, order := range [][]string{{"a", "b"}, {"b", "a"}} {
			subs := []ChannelResult{{order[0], res.Subs[order[0]]}, {order[1], res.Subs[order[1]]}}
			b := AppendConnectReply(nil, 1, &ConnectResult{Client: res.Client, Version: res.Version, Ping: res.Ping, Pong: res.Pong, Expires: res.Expires, TTL: res.TTL}, subs)
			r := decodeOne(t, b)
			if r.ID != 1 || !reflect.DeepEqual(r.Connect, res) {
				got, _ := json.Marshal(r.Connect)
				t.Fatalf("got %s from %s", got, b)
			}
			if !strings.Contains(string(b), `"subs":{"`+order[0]+`":`) {
				t.Fatalf("subs not in order %v: %s", order, b)
			}
		}
		// Without a list, the map (any order).
		b := AppendConnectReply(nil, 1, res, nil)
		if r := decodeOne(t, b); r.ID != 1 || !reflect.DeepEqual(r.Connect, res) {
			got, _ := json.Marshal(r.Connect)
			t.Fatalf("got %s from %s", got, b)
		}
	})
	t.Run("subscribe", func(t *testing.T) {
		res := &SubscribeResult{Recoverable: true, Positioned: true, Epoch: "e", Offset: 9}
		r := decodeOne(t, AppendSubscribeReply(nil, 2, res))
		if r.ID != 2 || !reflect.DeepEqual(r.Subscribe, res) {
			t.Fatalf("got %+v", r.Subscribe)
		}
	})
	t.Run("history", func(t *testing.T) {
		res := &HistoryResult{Epoch: "e", Offset: 10, Publications: []Publication{{Data: Raw(`1`), Offset: 9}, {Data: Raw(`"x"`), Offset: 10}}}
		r := decodeOne(t, AppendHistoryReply(nil, 4, res))
		if r.ID != 4 || !reflect.DeepEqual(r.History, res) {
			t.Fatalf("got %+v", r.History)
		}
	})
	t.Run("refresh", func(t *testing.T) {
		res := &RefreshResult{Client: "c", Version: "v", Expires: true, TTL: 3}
		r := decodeOne(t, AppendRefreshReply(nil, 5, res))
		if !reflect.DeepEqual(r.Refresh, res) {
			t.Fatalf("got %+v", r.Refresh)
		}
	})
	t.Run("unsubscribe and disconnect push", func(t *testing.T) {
		r := decodeOne(t, AppendUnsubscribePush(nil, "x", 2000, "server unsubscribe"))
		if r.Push.Channel != "x" || r.Push.Unsubscribe.Code != 2000 {
			t.Fatalf("got %+v", r.Push)
		}
		r = decodeOne(t, AppendDisconnectPush(nil, DisconnectSlow))
		if r.Push.Disconnect.Code != 3008 || !r.Push.Disconnect.Reconnect {
			t.Fatalf("got %+v", r.Push.Disconnect)
		}
	})
}

func TestAppendStringMatchesJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\s`, "ctl\x00\x01\x1f\t\r\n", "ünïcødé ☃", "bad\xffutf8", "sep\u2028\u2029", "<html>&"} {
		b := AppendString(nil, s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if back != want {
			t.Fatalf("%q -> %s -> %q", s, b, back)
		}
	}
}

func TestDisconnectReconnect(t *testing.T) {
	for _, tt := range []struct {
		d    Disconnect
		want bool
	}{{DisconnectShutdown, true}, {DisconnectSlow, true}, {DisconnectInsufficientState, true}, {DisconnectInvalidToken, false}, {DisconnectBadRequest, false}, {DisconnectStale, false}, {DisconnectForceNoReconnect, false}} {
		if tt.d.Reconnect() != tt.want {
			t.Errorf("%v reconnect=%v", tt.d, !tt.want)
		}
	}
}

func TestAppendPushZeroAlloc(t *testing.T) {
	pub := &Publication{Data: Raw(`{"text":"hello world"}`), Info: &ClientInfo{User: "user-1", ConnInfo: Raw(`{"n":1}`)}, Offset: 123456}
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendPush(buf[:0], "chat:room-1", pub)
	})
	if allocs != 0 {
		t.Fatalf("AppendPush allocates %v times", allocs)
	}
}
