package relay

import (
	"bytes"
	"testing"
	"time"
)

// TestCloseFrameSurvivesClientDataInFlight: a client that is still sending
// when the relay closes its connection (here: a protocol error followed by
// more frames in the same write) still reads the close frame and its code.
// The relay closes the socket right after the close frame, with the
// client's frames still unread, so the kernel answers with a reset; on
// loopback the close frame is already in the client's buffer and survives
// it. On a lossy network a retransmitted close frame would not; a
// lingering close (half-close, then wait for the client's close frame) is
// not implemented yet.
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
