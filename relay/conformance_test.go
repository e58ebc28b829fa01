package relay

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// TestRFC6455Conformance sends hand-built frames that break RFC 6455 (one
// connection each) while an observer stays subscribed: after every case the
// observer must get the next push, so the process survives and other
// clients are unaffected.
func TestRFC6455Conformance(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.MaxMessageSize = 1024 })
	addr := e.srv.Addr()
	tok := token(t, "probe", nil, nil, 0)

	obs, r := connectRaw(t, addr, token(t, "observer", []string{"watch"}, nil, 0))
	if r.Connect.Subs["watch"] == nil {
		t.Fatalf("observer not subscribed: %+v", r.Connect)
	}
	seq := uint64(0)
	observerGetsPush := func(t *testing.T) {
		t.Helper()
		seq++
		e.fc.broadcast(&heraldv1.Publication{Channel: "watch", Seq: seq, Epoch: "ep-watch", Message: &heraldv1.Message{Sender: "s", Data: []byte(`{"n":` + itoa(int(seq)) + `}`)}})
		rep := decodeReply(t, obs.readText())
		if rep.Push == nil || rep.Push.Pub == nil || rep.Push.Pub.Offset != seq {
			t.Fatalf("observer got %+v, want push %d", rep, seq)
		}
	}
	observerGetsPush(t)

	big := func(n uint64) []byte { // header only, declaring n bytes
		return binary.BigEndian.AppendUint64([]byte{0x81, 0x80 | 127}, n)
	}
	ctl126 := bytes.Repeat([]byte("p"), 126)
	cases := []struct {
		name string
		send [][]byte // written one after the other
		code uint16
	}{
		{"declared 2^40 bytes", [][]byte{append(big(1<<40), 1, 2, 3, 4)}, closeTooBig},
		{"declared length with top bit set", [][]byte{append(big(1<<63|5), 1, 2, 3, 4)}, closeProtocolError},
		{"unmasked frame", [][]byte{frame(opText, []byte(`{}`), true, false)}, closeProtocolError},
		{"reserved bit 1 without compression", [][]byte{func() []byte { f := textFrame(`{}`); f[0] |= 0x40; return f }()}, closeProtocolError},
		{"reserved bit 3", [][]byte{func() []byte { f := textFrame(`{}`); f[0] |= 0x10; return f }()}, closeProtocolError},
		{"reserved data opcode", [][]byte{frame(0x3, []byte("x"), true, true)}, closeProtocolError},
		{"reserved control opcode", [][]byte{frame(0xB, []byte("x"), true, true)}, closeProtocolError},
		{"ping of 126 bytes", [][]byte{frame(opPing, ctl126, true, true)}, closeProtocolError},
		{"close of 126 bytes", [][]byte{frame(opClose, append([]byte{0x03, 0xe8}, ctl126[:124]...), true, true)}, closeProtocolError},
		{"fragmented ping", [][]byte{frame(opPing, []byte("x"), false, true)}, closeProtocolError},
		{"continuation without start", [][]byte{frame(opContinuation, []byte("x"), true, true)}, closeProtocolError},
		{"new message inside a fragmented one", [][]byte{frame(opText, []byte("{"), false, true), frame(opText, []byte("{}"), true, true)}, closeProtocolError},
		{"invalid UTF-8 in one frame", [][]byte{textFrame("{\"id\":1,\"connect\":{\"token\":\"\xff\"}}")}, closeInvalidData},
		// The message never completes: 1007 must come from the fragment.
		{"invalid UTF-8 in the first fragment", [][]byte{frame(opText, []byte("{\"a\":\"\xc3\x28"), false, true)}, closeInvalidData},
		{"invalid UTF-8 in a continuation", [][]byte{frame(opText, []byte(`{"a":"ok`), false, true), frame(opContinuation, []byte("\xed\xa0\x80"), false, true)}, closeInvalidData},
		{"overlong encoding split across fragments", [][]byte{frame(opText, []byte("{\"a\":\"\xe0"), false, true), frame(opContinuation, []byte("\x80"), false, true)}, closeInvalidData},
		{"fragments over the size cap", [][]byte{frame(opText, bytes.Repeat([]byte("a"), 800), false, true), frame(opContinuation, bytes.Repeat([]byte("a"), 800), true, true)}, closeTooBig},
		{"close with a 1-byte payload", [][]byte{frame(opClose, []byte{3}, true, true)}, closeProtocolError},
		{"close with reserved code 1005", [][]byte{frame(opClose, []byte{0x03, 0xed}, true, true)}, closeProtocolError},
		{"close with code 999", [][]byte{frame(opClose, []byte{0x03, 0xe7}, true, true)}, closeProtocolError},
		{"close reason in invalid UTF-8", [][]byte{frame(opClose, []byte{0x03, 0xe8, 0xff}, true, true)}, closeInvalidData},
		{"close echo", [][]byte{frame(opClose, closePayload(1000, "bye"), true, true)}, 1000},
		{"close echo of an application code", [][]byte{frame(opClose, closePayload(4001, "app"), true, true)}, 4001},
		{"empty close", [][]byte{frame(opClose, nil, true, true)}, 1000},
		{"alg none token", [][]byte{textFrame(connectCmd(1, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0."))}, 3500},
		{"tampered token", [][]byte{textFrame(connectCmd(1, tok[:len(tok)-2]+"xx"))}, 3500},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			w := dialWS(t, addr)
			for _, b := range tt.send {
				w.write(b)
			}
			w.expectClose(tt.code)
			observerGetsPush(t)
		})
	}

	t.Run("ping between fragments is answered before the message completes", func(t *testing.T) {
		w := dialWS(t, addr)
		msg := connectCmd(1, tok)
		w.write(frame(opText, []byte(msg[:10]), false, true))
		w.write(frame(opPing, []byte("mid"), true, true))
		if op, p := w.readFrame(); op != opPong || string(p) != "mid" {
			t.Fatalf("got op %x %q, want the pong", op, p)
		}
		w.write(frame(opContinuation, []byte(msg[10:]), true, true))
		if r := decodeReply(t, w.readText()); r.ID != 1 || r.Connect == nil {
			t.Fatalf("bad reply %+v", r)
		}
		observerGetsPush(t)
	})
	t.Run("multi-byte character split across fragments", func(t *testing.T) {
		w := dialWS(t, addr)
		msg := []byte(`{"id":1,"connect":{"token":"` + tok + `","name":"caf` + "\xc3\xa9" + `"}}`)
		i := bytes.IndexByte(msg, 0xc3) + 1
		w.write(frame(opText, msg[:i], false, true))
		time.Sleep(20 * time.Millisecond)
		w.write(frame(opContinuation, msg[i:], true, true))
		if r := decodeReply(t, w.readText()); r.ID != 1 || r.Connect == nil {
			t.Fatalf("bad reply %+v", r)
		}
	})
	t.Run("observer is still connected", func(t *testing.T) {
		obs.write(textFrame(`{"id":9,"ping":{}}`))
		if r := decodeReply(t, obs.readText()); r.ID != 9 {
			t.Fatalf("observer: %+v", r)
		}
	})
}
