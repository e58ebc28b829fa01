package relay

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// TestCloseFrameSurvivesClientDataInFlight: a client that is still sending
// when the relay closes its connection (here: a protocol error followed by
// more frames in the same write) still reads the close frame and its code.
// (The relay half-closes and lingers, TestCloseLinger; before it did, the
// socket was closed with the client's frames unread and answered with a
// reset, which on loopback the already delivered close frame survived.)
func TestCloseFrameSurvivesClientDataInFlight(t *testing.T) {
	srv := startRelay(t, nil)
	for i := 0; i < 2; i++ {
		w := dialWS(t, srv.Addr())
		var b bytes.Buffer
		b.Write(frame(opText, []byte(`{}`), true, false)) // unmasked: 1002
		ping := frame(opPing, []byte("x"), true, true)
		for b.Len() < 512<<10 {
			b.Write(ping)
		}
		go func() { _, _ = w.c.Write(b.Bytes()) }()
		time.Sleep(300 * time.Millisecond) // the relay has closed by now; the client reads late
		w.expectClose(closeProtocolError)
	}
}

// TestCloseLinger: after its own close frame the relay sends end of stream
// but keeps the socket until the client closes (or closeLinger passes), so
// the client's own close frame and anything it was still sending are
// accepted rather than answered with a reset.
func TestCloseLinger(t *testing.T) {
	srv := startRelay(t, nil)
	waitOpen := func(want int64, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for srv.open.Load() != want {
			if time.Now().After(deadline) {
				t.Fatalf("open connections = %d, want %d within %v", srv.open.Load(), want, within)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	w := dialWS(t, srv.Addr())
	waitOpen(1, time.Second)
	w.write(frame(opText, []byte(`{}`), true, false)) // unmasked: 1002
	w.expectClose(closeProtocolError)
	if _, err := w.br.ReadByte(); err != io.EOF {
		t.Fatalf("after the close frame: %v, want end of stream", err)
	}
	for i := 0; i < 3; i++ { // a reset socket fails the second write at the latest
		time.Sleep(50 * time.Millisecond)
		if _, err := w.c.Write(frame(opClose, []byte{0x03, 0xe8}, true, true)); err != nil {
			t.Fatalf("client write %d after the relay's close: %v", i, err)
		}
	}
	if n := srv.open.Load(); n != 1 {
		t.Fatalf("relay closed the socket before the client did (open %d)", n)
	}
	_ = w.c.Close()
	waitOpen(0, time.Second)

	// A client that never closes is closed after closeLinger.
	w = dialWS(t, srv.Addr())
	waitOpen(1, time.Second)
	w.write(frame(opText, []byte(`{}`), true, false))
	w.expectClose(closeProtocolError)
	waitOpen(0, closeLinger+time.Second)
}
