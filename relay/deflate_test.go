package relay

import (
	"bytes"
	"compress/flate"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	centrifuge "github.com/centrifugal/centrifuge-go"

	"github.com/herald-chat/herald/internal/auth"
)

func deflateBytes(t testing.TB, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	_, _ = w.Write(p)
	_ = w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

func inflateBytes(t testing.TB, p []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateTail))))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// compressedFrame is a masked client text frame with RSV1 set.
func compressedFrame(t testing.TB, msg []byte) []byte {
	f := frame(opText, deflateBytes(t, msg), true, true)
	f[0] |= 0x40
	return f
}

const deflateOffer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"

func TestPermessageDeflate(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Compression = true; c.MaxMessageSize = 64 << 10 })
	addr := e.srv.Addr()
	tok := token(t, "zip", []string{"zroom"}, []auth.Capability{{Channels: []string{"*"}, Match: "wildcard", Allow: []string{"pub"}}}, 0)
	req := strings.Replace(upgradeRequest, "\r\n\r\n", "\r\n"+deflateOffer+"\r\n", 1)

	dialDeflate := func(t *testing.T) *wsConn {
		w := dialRaw(t, addr)
		w.write([]byte(req))
		head := w.readHTTPHead()
		if !strings.HasPrefix(head, "HTTP/1.1 101") || !strings.Contains(head, "permessage-deflate") ||
			!strings.Contains(head, "server_no_context_takeover") || !strings.Contains(head, "client_no_context_takeover") {
			t.Fatalf("deflate not negotiated: %q", head)
		}
		return w
	}

	t.Run("compressed commands, compressed pushes", func(t *testing.T) {
		w := dialDeflate(t)
		w.write(compressedFrame(t, []byte(connectCmd(1, tok))))
		if r := decodeReply(t, w.readText()); r.Connect == nil {
			t.Fatalf("connect: %+v", r)
		}
		// A message split over fragments, compressed as a whole.
		z := deflateBytes(t, []byte(`{"id":2,"publish":{"channel":"zroom","data":{"text":"`+strings.Repeat("hello ", 50)+`"}}}`))
		f1 := frame(opText, z[:5], false, true)
		f1[0] |= 0x40
		w.write(append(f1, frame(opContinuation, z[5:], true, true)...))
		var sawReply, sawPush bool
		for !sawReply || !sawPush {
			var h [2]byte
			if _, err := io.ReadFull(w.br, h[:]); err != nil {
				t.Fatal(err)
			}
			n := int(h[1] & 0x7f)
			if n == 126 {
				var b [2]byte
				_, _ = io.ReadFull(w.br, b[:])
				n = int(b[0])<<8 | int(b[1])
			}
			p := make([]byte, n)
			if _, err := io.ReadFull(w.br, p); err != nil {
				t.Fatal(err)
			}
			if h[0]&0x40 != 0 {
				p = inflateBytes(t, p)
			}
			r := decodeReply(t, string(p))
			switch {
			case r.ID == 2 && r.Publish != nil:
				sawReply = true
			case r.Push != nil && r.Push.Pub != nil:
				if h[0]&0x40 == 0 {
					t.Fatal("push of 300 bytes not compressed")
				}
				if !strings.Contains(string(r.Push.Pub.Data), "hello hello") {
					t.Fatalf("push %s", p)
				}
				sawPush = true
			}
		}
	})
	t.Run("decompression bomb is 1009", func(t *testing.T) {
		w := dialDeflate(t)
		bomb := deflateBytes(t, bytes.Repeat([]byte(" "), 8<<20))
		if len(bomb) > 64<<10 {
			t.Fatalf("bomb is %d bytes compressed", len(bomb))
		}
		f := frame(opText, bomb, true, true)
		f[0] |= 0x40
		w.write(f)
		w.expectClose(closeTooBig)
	})
	t.Run("compression bit on a control frame is 1002", func(t *testing.T) {
		w := dialDeflate(t)
		f := frame(opPing, []byte("x"), true, true)
		f[0] |= 0x40
		w.write(f)
		w.expectClose(closeProtocolError)
	})
	t.Run("compression bit on a continuation is 1002", func(t *testing.T) {
		w := dialDeflate(t)
		c := frame(opContinuation, []byte("x"), true, true)
		c[0] |= 0x40
		w.write(append(frame(opText, []byte("{"), false, true), c...))
		w.expectClose(closeProtocolError)
	})
	t.Run("centrifuge-go with compression", func(t *testing.T) {
		s := &sdkClient{subs: make(chan string, 16)}
		s.c = centrifuge.NewJsonClient("ws://"+addr+"/connection/websocket", centrifuge.Config{Token: tok, EnableCompression: true})
		s.c.OnPublication(func(e centrifuge.ServerPublicationEvent) { s.record(e.Channel, e.Publication) })
		s.c.OnSubscribed(func(e centrifuge.ServerSubscribedEvent) { s.subs <- e.Channel })
		t.Cleanup(s.c.Close)
		s.connect(t, "zroom")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		big := `{"text":"` + strings.Repeat("compressible ", 100) + `"}`
		if _, err := s.c.Publish(ctx, "zroom", []byte(big)); err != nil {
			t.Fatal(err)
		}
		negotiated := make(chan bool, 2)
		for _, l := range e.srv.allLoops() {
			l.execute(func() {
				found := false
				for cl := range l.allConns {
					if cl.state == stateConnected && cl.deflate {
						found = true
					}
				}
				negotiated <- found
			})
		}
		if a, b := <-negotiated, <-negotiated; !a && !b {
			t.Fatal("centrifuge-go did not negotiate permessage-deflate")
		}
		got := s.waitPubs(t, "zroom", 1)
		if got[len(got)-1].data != big {
			t.Fatalf("got %s", got[len(got)-1].data)
		}
	})
}
