package loadtest

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestAppendCommands(t *testing.T) {
	type cmd struct {
		ID      uint32 `json:"id"`
		Connect *struct {
			Token string                 `json:"token"`
			Subs  map[string]subPosition `json:"subs"`
		} `json:"connect"`
		Subscribe *struct {
			Channel string `json:"channel"`
			Recover bool   `json:"recover"`
			Offset  uint64 `json:"offset"`
			Epoch   string `json:"epoch"`
		} `json:"subscribe"`
		Publish *struct {
			Channel string `json:"channel"`
			Data    struct {
				T int64  `json:"t"`
				P string `json:"p"`
			} `json:"data"`
		} `json:"publish"`
	}
	decode := func(t *testing.T, b []byte) cmd {
		t.Helper()
		var c cmd
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("invalid JSON %s: %v", b, err)
		}
		return c
	}
	t.Run("connect", func(t *testing.T) {
		c := decode(t, appendConnect(nil, 1, "tok\"en", nil))
		if c.ID != 1 || c.Connect == nil || c.Connect.Token != "tok\"en" || c.Connect.Subs != nil {
			t.Fatalf("%+v", c)
		}
		c = decode(t, appendConnect(nil, 7, "t", []subPosition{{Channel: "a:b", Recover: true, Offset: 42, Epoch: "e1"}}))
		if p := c.Connect.Subs["a:b"]; !p.Recover || p.Offset != 42 || p.Epoch != "e1" {
			t.Fatalf("subs %+v", c.Connect.Subs)
		}
	})
	t.Run("subscribe", func(t *testing.T) {
		c := decode(t, appendSubscribe(nil, 2, subPosition{Channel: "chat:1"}))
		if c.ID != 2 || c.Subscribe.Channel != "chat:1" || c.Subscribe.Recover {
			t.Fatalf("%+v", c.Subscribe)
		}
		c = decode(t, appendSubscribe(nil, 3, subPosition{Channel: "x", Recover: true, Offset: 9, Epoch: "ep"}))
		if !c.Subscribe.Recover || c.Subscribe.Offset != 9 || c.Subscribe.Epoch != "ep" {
			t.Fatalf("%+v", c.Subscribe)
		}
	})
	t.Run("publish", func(t *testing.T) {
		c := decode(t, appendPublish(nil, 4, "room", 1234567890123, []byte("xxxx")))
		if c.ID != 4 || c.Publish.Channel != "room" || c.Publish.Data.T != 1234567890123 || c.Publish.Data.P != "xxxx" {
			t.Fatalf("%+v", c.Publish)
		}
	})
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "nl\nline\ttab\r", "\x00\x1f", "ünïcödé ✓", "\u2028\u2029", "bad\xffutf8"} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q: invalid JSON %s: %v", s, got, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q: round trip %q, want %q", s, back, wantBack)
		}
	}
}

func TestScanServerMsg(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want serverMsg
	}{
		{"ping", `{}`, serverMsg{kind: msgPing}},
		{"ping spaces", ` { } `, serverMsg{kind: msgPing}},
		{"connect reply", `{"id":1,"connect":{"client":"abc","subs":{"x":{"offset":3}}}}`,
			serverMsg{kind: msgReply, id: 1, method: []byte("connect"), result: []byte(`{"client":"abc","subs":{"x":{"offset":3}}}`)}},
		{"publish reply", `{"id":42,"publish":{}}`, serverMsg{kind: msgReply, id: 42, method: []byte("publish"), result: []byte(`{}`)}},
		{"error reply", `{"id":5,"error":{"code":103,"message":"permission \"denied\""}}`,
			serverMsg{kind: msgReply, id: 5, hasErr: true, errCode: 103, errMsg: []byte(`permission \"denied\"`)}},
		{"pub", `{"push":{"channel":"room:1","pub":{"data":{"t":1700000000000000000,"p":"xx"},"offset":17}}}`,
			serverMsg{kind: msgPub, channel: []byte("room:1"), offset: 17, t: 1700000000000000000, hasT: true}},
		{"pub other key order with info", `{"push":{"pub":{"offset":2,"info":{"user":"u","client":"c"},"data":{"p":"a,}]\"{","nested":{"t":1},"t":99}},"channel":"c"}}`,
			serverMsg{kind: msgPub, channel: []byte("c"), offset: 2, t: 99, hasT: true}},
		{"pub data without t", `{"push":{"channel":"c","pub":{"data":{"text":"hi"},"offset":1}}}`,
			serverMsg{kind: msgPub, channel: []byte("c"), offset: 1}},
		{"pub data not an object", `{"push":{"channel":"c","pub":{"data":"str","offset":1}}}`,
			serverMsg{kind: msgPub, channel: []byte("c"), offset: 1}},
		{"escaped channel", `{"push":{"channel":"a\u0041","pub":{"data":{},"offset":1}}}`,
			serverMsg{kind: msgPub, channel: []byte(`a\u0041`), chanEsc: true, offset: 1}},
		{"disconnect", `{"push":{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}}`,
			serverMsg{kind: msgDisconnect, errCode: 3001, errMsg: []byte("shutdown"), reconnect: true}},
		{"unsubscribe", `{"push":{"channel":"c","unsubscribe":{"code":2000,"reason":"server"}}}`,
			serverMsg{kind: msgUnsub, channel: []byte("c"), errCode: 2000, errMsg: []byte("server")}},
		{"join", `{"push":{"channel":"c","join":{"info":{"user":"u"}}}}`, serverMsg{kind: msgOtherPush, channel: []byte("c")}},
		{"arrays and literals", `{"id":3,"history":{"publications":[{"data":[1,2,{"a":null}],"offset":1}],"x":true,"y":-1.5e3}}`,
			serverMsg{kind: msgReply, id: 3, method: []byte("history"), result: []byte(`{"publications":[{"data":[1,2,{"a":null}],"offset":1}],"x":true,"y":-1.5e3}`)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var m serverMsg
			if err := scanServerMsg([]byte(c.in), &m); err != nil {
				t.Fatalf("scan: %v", err)
			}
			if !reflect.DeepEqual(norm(m), norm(c.want)) {
				t.Errorf("got  %+v\nwant %+v", norm(m), norm(c.want))
			}
		})
	}
	for _, bad := range []string{``, `[]`, `{`, `{"id":}`, `{"id":1.5}`, `{"push":{"channel":"x"`, `{"a":"unterminated}`, `{"a":1 "b":2}`, `{"push":[]}`} {
		var m serverMsg
		if err := scanServerMsg([]byte(bad), &m); err == nil {
			t.Errorf("scan(%q) accepted", bad)
		}
	}
	if unquote([]byte(`a\u0041\n`)) != "aA\n" {
		t.Error("unquote")
	}
}

// norm makes nil and empty slices compare equal.
func norm(m serverMsg) serverMsg {
	for _, p := range []*[]byte{&m.channel, &m.errMsg, &m.result, &m.method} {
		if len(*p) == 0 {
			*p = nil
		}
	}
	return m
}

func TestScanPushAllocs(t *testing.T) {
	line := []byte(`{"push":{"channel":"lt-1:broadcast","pub":{"data":{"t":1700000000000000000,"p":"xxxxxxxxxxxxxxxx"},"offset":123456}}}`)
	var m serverMsg
	allocs := testing.AllocsPerRun(100, func() {
		if err := scanServerMsg(line, &m); err != nil || m.offset != 123456 {
			t.Fatal("scan failed")
		}
	})
	if allocs != 0 {
		t.Errorf("scanning a push allocates %v times", allocs)
	}
}

func FuzzScanServerMsg(f *testing.F) {
	for _, s := range []string{`{}`, `{"id":1,"connect":{}}`, `{"push":{"channel":"c","pub":{"data":{"t":1},"offset":2}}}`, `{"push":{"disconnect":{"code":1}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m serverMsg
		if err := scanServerMsg(b, &m); err == nil && m.kind == msgReply && m.result != nil && !json.Valid(m.result) && json.Valid(b) {
			t.Errorf("result span of valid JSON is invalid: %q", m.result)
		}
	})
}

func BenchmarkScanPush(b *testing.B) {
	line := []byte(`{"push":{"channel":"lt-1:broadcast","pub":{"data":{"t":1700000000000000000,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"offset":123456}}}`)
	var m serverMsg
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		_ = scanServerMsg(line, &m)
	}
}

func BenchmarkAppendPublish(b *testing.B) {
	buf := make([]byte, 0, 256)
	pad := make([]byte, 64)
	for i := range pad {
		pad[i] = 'x'
	}
	b.ReportAllocs()
	for b.Loop() {
		buf = appendPublish(buf[:0], 12345, "lt-1:chat-42", 1700000000000000000, pad)
	}
}
