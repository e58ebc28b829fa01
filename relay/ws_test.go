package relay

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/protocol"
)

func connectCmd(id int, tok string) string {
	return `{"id":` + itoa(id) + `,"connect":{"token":"` + tok + `","name":"test"}}`
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func decodeReply(t testing.TB, s string) *protocol.Reply {
	t.Helper()
	rs, err := protocol.DecodeReplies([]byte(s))
	if err != nil || len(rs) != 1 {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return rs[0]
}

func TestWebSocketProtocol(t *testing.T) {
	srv := startRelay(t, func(c *Config) { c.MaxMessageSize = 1024 })
	addr := srv.Addr()
	tok := token(t, "alice", nil, nil, 0)

	t.Run("upgrade and connect", func(t *testing.T) {
		w := dialWS(t, addr)
		w.write(textFrame(connectCmd(1, tok)))
		r := decodeReply(t, w.readText())
		if r.ID != 1 || r.Connect == nil || r.Connect.Client == "" || !r.Connect.Pong || r.Connect.Ping != 25 || r.Connect.Version == "" {
			t.Fatalf("bad connect reply %+v", r)
		}
	})
	t.Run("wrong path is 404", func(t *testing.T) {
		w := dialRaw(t, addr)
		w.write([]byte(strings.Replace(upgradeRequest, "/connection/websocket", "/other", 1)))
		if head := w.readHTTPHead(); !strings.HasPrefix(head, "HTTP/1.1 404") {
			t.Fatalf("got %q", head)
		}
	})
	t.Run("upgrade request split and pipelined with frames", func(t *testing.T) {
		w := dialRaw(t, addr)
		req := []byte(upgradeRequest)
		w.write(req[:20])
		time.Sleep(20 * time.Millisecond)
		w.write(req[20 : len(req)-1])
		time.Sleep(20 * time.Millisecond)
		// The last header byte, then two frames, all in one write.
		all := append([]byte{req[len(req)-1]}, textFrame(connectCmd(1, tok))...)
		all = append(all, textFrame(`{"id":2,"ping":{}}`)...)
		w.write(all)
		w.expectUpgrade()
		if r := decodeReply(t, w.readText()); r.ID != 1 || r.Connect == nil {
			t.Fatalf("bad reply %+v", r)
		}
		if r := decodeReply(t, w.readText()); r.ID != 2 || r.Ping == nil {
			t.Fatalf("bad reply %+v", r)
		}
	})
	t.Run("frames split across writes", func(t *testing.T) {
		w := dialWS(t, addr)
		f := textFrame(connectCmd(1, tok))
		for i := range f { // byte by byte, header included
			w.write(f[i : i+1])
			if i%7 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		if r := decodeReply(t, w.readText()); r.ID != 1 || r.Connect == nil {
			t.Fatalf("bad reply %+v", r)
		}
	})
	t.Run("several commands in one frame", func(t *testing.T) {
		w := dialWS(t, addr)
		w.write(textFrame(connectCmd(1, tok) + "\n" + `{"id":2,"ping":{}}` + "\n" + `{"id":3,"presence":{"channel":"x"}}`))
		got := []uint32{}
		for len(got) < 3 {
			for _, r := range mustReplies(t, w.readText()) {
				got = append(got, r.ID)
				if r.ID == 3 && (r.Error == nil || r.Error.Code != 108) {
					t.Fatalf("presence: %+v", r)
				}
			}
		}
		if got[0] != 1 || got[1] != 2 || got[2] != 3 {
			t.Fatalf("order %v", got)
		}
	})
	t.Run("ws ping gets pong", func(t *testing.T) {
		w := dialWS(t, addr)
		w.write(frame(opPing, []byte("hello"), true, true))
		op, p := w.readFrame()
		if op != opPong || string(p) != "hello" {
			t.Fatalf("got op %x %q", op, p)
		}
	})
	t.Run("fragmented message", func(t *testing.T) {
		w := dialWS(t, addr)
		msg := connectCmd(1, tok)
		w.write(frame(opText, []byte(msg[:10]), false, true))
		w.write(frame(opPing, []byte("mid"), true, true)) // control frames may interleave
		w.write(append(frame(opContinuation, []byte(msg[10:20]), false, true), frame(opContinuation, []byte(msg[20:]), true, true)...))
		if op, p := w.readFrame(); op != opPong || string(p) != "mid" {
			t.Fatalf("got op %x %q", op, p)
		}
		if r := decodeReply(t, w.readText()); r.ID != 1 || r.Connect == nil {
			t.Fatalf("bad reply %+v", r)
		}
	})
	t.Run("close handshake echo", func(t *testing.T) {
		w := dialWS(t, addr)
		w.write(frame(opClose, closePayload(1000, "bye"), true, true))
		w.expectClose(1000)
	})

	closes := []struct {
		name string
		send []byte
		code uint16
	}{
		{"oversized frame", frame(opText, bytes.Repeat([]byte("a"), 100), true, true)[:2:2], 0}, // placeholder, replaced below
		{"unmasked frame", frame(opText, []byte(`{}`), true, false), closeProtocolError},
		{"reserved bits", func() []byte { f := textFrame(`{}`); f[0] |= 0x40; return f }(), closeProtocolError},
		{"unknown opcode", frame(0x3, []byte("x"), true, true), closeProtocolError},
		{"fragmented control frame", frame(opPing, []byte("x"), false, true), closeProtocolError},
		{"continuation without start", frame(opContinuation, []byte("x"), true, true), closeProtocolError},
		{"invalid utf-8", textFrame("{\"id\":1,\"connect\":{\"token\":\"\xff\"}}"), closeInvalidData},
		{"fragments over the cap", append(frame(opText, bytes.Repeat([]byte("a"), 800), false, true), frame(opContinuation, bytes.Repeat([]byte("a"), 800), true, true)...), closeTooBig},
		{"bad json", textFrame(`{"id":1,"connect":`), 3501},
		{"command before connect", textFrame(`{"id":1,"subscribe":{"channel":"x"}}`), 3501},
		{"invalid token", textFrame(connectCmd(1, "not-a-token")), 3500},
		{"wrong secret", textFrame(connectCmd(1, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl")), 3500},
	}
	// Oversized: only the header declaring 1 MiB is sent; the relay must
	// refuse from the header alone.
	closes[0].send = []byte{0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4}
	closes[0].code = closeTooBig
	for _, tt := range closes {
		t.Run(tt.name, func(t *testing.T) {
			w := dialWS(t, addr)
			w.write(tt.send)
			w.expectClose(tt.code)
		})
	}
	t.Run("expired token gets error 109", func(t *testing.T) {
		w := dialWS(t, addr)
		c := expiredToken(t)
		w.write(textFrame(connectCmd(1, c)))
		r := decodeReply(t, w.readText())
		if r.Error == nil || r.Error.Code != 109 {
			t.Fatalf("got %+v", r)
		}
	})
}

func mustReplies(t testing.TB, s string) []*protocol.Reply {
	t.Helper()
	rs, err := protocol.DecodeReplies([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestServerPingAndPongTimeout(t *testing.T) {
	srv := startRelay(t, func(c *Config) { c.PingInterval = 300 * time.Millisecond; c.PongTimeout = 300 * time.Millisecond })
	tok := token(t, "bob", nil, nil, 0)

	t.Run("answered pings keep the connection", func(t *testing.T) {
		w := dialWS(t, srv.Addr())
		w.write(textFrame(connectCmd(1, tok)))
		decodeReply(t, w.readText())
		for i := 0; i < 3; i++ {
			op, p := w.readFrame()
			if op != opText || string(p) != "{}" {
				t.Fatalf("expected ping, got %x %q", op, p)
			}
			w.write(textFrame(`{}`))
		}
	})
	t.Run("silent client is disconnected with no pong", func(t *testing.T) {
		w := dialWS(t, srv.Addr())
		w.write(textFrame(connectCmd(1, tok)))
		decodeReply(t, w.readText())
		w.expectClose(3012)
	})
}

func TestHandshakeTimeoutStale(t *testing.T) {
	srv := startRelay(t, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	w := dialWS(t, srv.Addr())
	w.expectClose(3502)
}

func TestShutdownDisconnects(t *testing.T) {
	srv := startRelay(t, nil)
	w := dialWS(t, srv.Addr())
	w.write(textFrame(connectCmd(1, token(t, "x", nil, nil, 0))))
	decodeReply(t, w.readText())
	srv.shutdown()
	w.expectClose(3001)
}
