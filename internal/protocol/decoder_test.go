package protocol

import (
	"encoding/json"
	"reflect"
	"testing"
)

type collect struct {
	cmds []Command
	fast []bool
	d    *Decoder
}

func (c *collect) HandleCommand(cmd *Command) error {
	cp := *cmd
	if cmd.Publish != nil {
		p := *cmd.Publish
		p.Data = append(json.RawMessage(nil), p.Data...)
		cp.Publish = &p
	}
	if cmd.Connect != nil { // the Decoder reuses them
		c := *cmd.Connect
		cp.Connect = &c
	}
	if cmd.Subscribe != nil {
		s := *cmd.Subscribe
		cp.Subscribe = &s
	}
	c.cmds = append(c.cmds, cp)
	c.fast = append(c.fast, cmd == &c.d.cmd)
	return nil
}

// decodeBoth decodes frame with the Decoder and with DecodeCommands.
func decodeBoth(t testing.TB, frame []byte) (fast *collect, fastErr error, slow []Command, slowErr error) {
	t.Helper()
	d := &Decoder{}
	fast = &collect{d: d}
	fastErr = d.Decode(frame, fast)
	slowErr = DecodeCommands(frame, func(c *Command) error { slow = append(slow, *c); return nil })
	return
}

func TestDecoderMatchesEncodingJSON(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		fast  []bool // which commands took the fast path
	}{
		{"pong", `{}`, []bool{true}},
		{"publish", `{"id":7,"publish":{"channel":"chat:1","data":{"text":"hi"}}}`, []bool{true}},
		{"publish keys reversed", `{"publish":{"data":[1,{"a":"}"}],"channel":"c"},"id":4294967295}`, []bool{true}},
		{"publish whitespace", "{ \"id\" : 3 ,\t\"publish\" : { \"channel\" : \"c\" , \"data\" : \"s\\\"x\" } }", []bool{true}},
		{"publish scalar data", `{"id":1,"publish":{"channel":"c","data":-1.5e3}}`, []bool{true}},
		{"publish no id", `{"publish":{"channel":"c","data":true}}`, []bool{true}},
		{"pong then publish", "{}\n{\"id\":2,\"publish\":{\"channel\":\"c\",\"data\":{}}}", []bool{true, true}},
		{"escaped channel", `{"id":1,"publish":{"channel":"a\u0062","data":1}}`, []bool{false}},
		{"null data", `{"id":1,"publish":{"channel":"c","data":null}}`, []bool{false}},
		{"id overflow", `{"id":4294967296,"publish":{"channel":"c","data":1}}`, nil},
		{"id leading zero", `{"id":01,"publish":{"channel":"c","data":1}}`, nil},
		{"id float", `{"id":1.0,"publish":{"channel":"c","data":1}}`, nil},
		{"id negative", `{"id":-1,"publish":{"channel":"c","data":1}}`, nil},
		{"upper-case key", `{"ID":5,"publish":{"channel":"c","data":1}}`, []bool{false}},
		{"duplicate key", `{"id":1,"id":2,"publish":{"channel":"c","data":1}}`, []bool{false}},
		{"extra key", `{"id":1,"publish":{"channel":"c","data":1,"x":2}}`, []bool{false}},
		{"bad data", `{"id":1,"publish":{"channel":"c","data":{"a":}}}`, nil},
		{"mismatched brackets", `{"id":1,"publish":{"channel":"c","data":{]}}`, nil},
		{"trailing garbage", `{"id":1,"publish":{"channel":"c","data":1}}x`, nil},
		{"unterminated", `{"id":1,"publish":{"channel":"c","data":"x`, nil},
		{"invalid utf-8 channel", "{\"id\":1,\"publish\":{\"channel\":\"\xff\",\"data\":1}}", []bool{false}},
		{"control char in channel", "{\"id\":1,\"publish\":{\"channel\":\"a\tb\",\"data\":1}}", nil},
		{"connect", `{"id":1,"connect":{"token":"t"}}`, []bool{true}},
		{"connect as the SDKs send it", `{"id":1,"connect":{"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln","name":"js","version":"5.2.0"}}`, []bool{true}},
		{"connect keys reversed", ` { "connect" : { "version":"1", "token" : "t" } , "id" : 2 } `, []bool{true}},
		{"connect without token", `{"id":1,"connect":{}}`, []bool{true}},
		{"connect then subscribes", "{\"id\":1,\"connect\":{\"token\":\"t\"}}\n{\"id\":2,\"subscribe\":{\"channel\":\"a\"}}\n{\"id\":3,\"subscribe\":{\"channel\":\"b\",\"recover\":true,\"offset\":9,\"epoch\":\"e\"}}", []bool{true, true, true}},
		{"connect with subs", `{"id":1,"connect":{"token":"t","subs":{"a":{"recover":true,"offset":3,"epoch":"e"}}}}`, []bool{false}},
		{"connect with data", `{"id":1,"connect":{"token":"t","data":{"x":1}}}`, []bool{false}},
		{"connect escaped token", `{"id":1,"connect":{"token":"a\/b"}}`, []bool{false}},
		{"connect duplicate token", `{"id":1,"connect":{"token":"a","token":"b"}}`, []bool{false}},
		{"connect token not a string", `{"id":1,"connect":{"token":1}}`, nil},
		{"connect and publish", `{"id":1,"connect":{"token":"t"},"publish":{"channel":"c","data":1}}`, []bool{false}},
		{"subscribe", `{"id":2,"subscribe":{"channel":"chat:1"}}`, []bool{true}},
		{"subscribe every field", `{"id":2,"subscribe":{"epoch":"ab","offset":18446744073709551615,"recover":false,"token":"t","channel":"c"}}`, []bool{true}},
		{"subscribe offset overflow", `{"id":2,"subscribe":{"channel":"c","offset":18446744073709551616}}`, nil},
		{"subscribe offset negative", `{"id":2,"subscribe":{"channel":"c","offset":-1}}`, nil},
		{"subscribe offset float", `{"id":2,"subscribe":{"channel":"c","offset":1.5}}`, nil},
		{"subscribe offset exponent", `{"id":2,"subscribe":{"channel":"c","offset":1e3}}`, nil},
		{"subscribe offset leading zero", `{"id":2,"subscribe":{"channel":"c","offset":01}}`, nil},
		{"subscribe recover null", `{"id":2,"subscribe":{"channel":"c","recover":null}}`, []bool{false}},
		{"subscribe recover not a bool", `{"id":2,"subscribe":{"channel":"c","recover":"yes"}}`, nil},
		{"subscribe recover truex", `{"id":2,"subscribe":{"channel":"c","recover":truex}}`, nil},
		{"subscribe without channel", `{"id":2,"subscribe":{"token":"t"}}`, []bool{false}},
		{"subscribe with data", `{"id":2,"subscribe":{"channel":"c","data":{}}}`, []bool{false}},
		{"subscribe with positioned", `{"id":2,"subscribe":{"channel":"c","positioned":true}}`, []bool{false}},
		{"subscribe upper-case key", `{"id":2,"subscribe":{"Channel":"c"}}`, []bool{false}},
		{"subscribe trailing comma", `{"id":2,"subscribe":{"channel":"c",}}`, nil},
		{"sub_refresh", `{"id":9,"sub_refresh":{"channel":"c","token":"t"}}`, []bool{false}},
		{"spaced pong", `{ }`, []bool{false}},
		{"empty", "\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fast, ferr, slow, serr := decodeBoth(t, []byte(tt.frame))
			if (ferr == nil) != (serr == nil) {
				t.Fatalf("fast err %v, slow err %v", ferr, serr)
			}
			if !reflect.DeepEqual(fast.cmds, slow) && !(len(fast.cmds) == 0 && len(slow) == 0) {
				a, _ := json.Marshal(fast.cmds)
				b, _ := json.Marshal(slow)
				t.Fatalf("decoded differently:\nfast %s\nslow %s", a, b)
			}
			if !reflect.DeepEqual(fast.fast, tt.fast) {
				t.Fatalf("fast path use %v, want %v", fast.fast, tt.fast)
			}
		})
	}
}

func TestDecoderSubRefresh(t *testing.T) {
	var got []*Command
	err := DecodeCommands([]byte(`{"id":9,"sub_refresh":{"channel":"c","token":"t"}}`), func(c *Command) error { got = append(got, c); return nil })
	if err != nil || len(got) != 1 || got[0].Method() != MethodSubRefresh || got[0].SubRefresh.Channel != "c" || got[0].SubRefresh.Token != "t" {
		t.Fatalf("err %v got %+v", err, got)
	}
	if b := AppendSubRefreshReply(nil, 9, &SubRefreshResult{Expires: true, TTL: 30}); string(b) != `{"id":9,"sub_refresh":{"expires":true,"ttl":30}}` {
		t.Fatalf("reply %s", b)
	}
}

// FuzzDecoder checks that the fast path never disagrees with encoding/json.
func FuzzDecoder(f *testing.F) {
	for _, s := range []string{`{}`, `{"id":7,"publish":{"channel":"chat:1","data":{"text":"hi"}}}`,
		`{"id":1,"connect":{"token":"t","name":"js"}}`, `{"id":2,"subscribe":{"channel":"c","recover":true,"offset":5,"epoch":"e"}}`,
		`{"publish":{"data":[1,"]"],"channel":"c"},"id":3}`, `{"id":1,"publish":{"channel":"c","data":"\u00e9"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		fast, ferr, slow, serr := decodeBoth(t, frame)
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("fast err %v, slow err %v", ferr, serr)
		}
		if ferr == nil && !reflect.DeepEqual(fast.cmds, slow) {
			t.Fatalf("decoded differently: %+v vs %+v", fast.cmds, slow)
		}
	})
}
