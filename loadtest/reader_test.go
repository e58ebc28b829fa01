package loadtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Tests of the epoll reader's frame parsing (feed), which runs on any
// system: it must behave exactly like the goroutine reader (readFrame +
// handleFrame) whatever the read boundaries.

// recConn is a net.Conn that records what the connection writes.
type recConn struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recConn) Write(b []byte) (int, error)      { return r.buf.Write(b) }
func (r *recConn) SetWriteDeadline(time.Time) error { return nil }
func (r *recConn) Close() error                     { return nil }

// frames decodes the (masked) client frames written so far as "op:payload".
func (r *recConn) frames(t testing.TB) []string {
	t.Helper()
	var out []string
	rd := bytes.NewReader(r.buf.Bytes())
	for rd.Len() > 0 {
		f, err := ws.ReadFrame(rd)
		if err != nil {
			t.Fatalf("decoding written frames: %v", err)
		}
		if !f.Header.Masked {
			t.Errorf("client frame not masked")
		}
		ws.Cipher(f.Payload, f.Header.Mask, 0)
		out = append(out, opName[f.Header.OpCode]+":"+string(f.Payload))
	}
	return out
}

var opName = map[ws.OpCode]string{ws.OpText: "text", ws.OpBinary: "binary", ws.OpClose: "close", ws.OpPing: "ping", ws.OpPong: "pong"}

// testRunner returns a runner without reactors (a broadcast, channel
// "t:0").
func testRunner(t testing.TB, extra ...string) *runner {
	t.Helper()
	args := append([]string{ScenarioBroadcast, "--secret", testSecret, "--reader", ReaderGoroutine, "--progress=false", "--channel-prefix", "t:"}, extra...)
	cfg, err := ParseArgs(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRunner(cfg, plan{ConnTo: 1})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// testConn returns a ready subscriber connection (of a new runner without
// reactors) whose writes are recorded.
func testConn(t testing.TB, extra ...string) (*conn, *recConn) {
	t.Helper()
	return runnerConn(t, testRunner(t, extra...))
}

// runnerConn returns a new ready subscriber connection of r whose writes
// are recorded.
func runnerConn(t testing.TB, r *runner) (*conn, *recConn) {
	t.Helper()
	c, err := r.newConn(0, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	c.sub.tr.begin(0)
	rc := &recConn{}
	c.nc = rc
	c.state.Store(stReady)
	return c, rc
}

// serverFrame encodes one server frame; masked frames get a fixed mask.
func serverFrame(fin bool, op ws.OpCode, masked bool, p string) []byte {
	h := ws.Header{Fin: fin, OpCode: op, Length: int64(len(p))}
	if masked {
		h.Masked, h.Mask = true, [4]byte{1, 2, 3, 4}
	}
	var b bytes.Buffer
	_ = ws.WriteHeader(&b, h)
	pl := []byte(p)
	if masked {
		ws.Cipher(pl, h.Mask, 0)
	}
	b.Write(pl)
	return b.Bytes()
}

// longHeaderFrame encodes a final text frame with a 64-bit length field
// (not minimal, which readers must accept).
func longHeaderFrame(p string) []byte {
	b := []byte{0x80 | byte(ws.OpText), 127, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(b[2:], uint64(len(p)))
	return append(b, p...)
}

func pushLine(ch string, off int, pad int) string {
	return fmt.Sprintf(`{"push":{"channel":%q,"pub":{"data":{"p":%q},"offset":%d}}}`, ch, strings.Repeat("x", pad), off)
}

// testStream is a server stream with every frame shape: several pushes per
// frame, a JSON ping, control pings, a message fragmented around a ping,
// 16- and 64-bit lengths, a masked frame and an empty frame. It delivers
// offsets 1…8 and asks for three pongs.
func testStream(ch string) []byte {
	var s []byte
	s = append(s, serverFrame(true, ws.OpText, false, pushLine(ch, 1, 4))...)
	s = append(s, serverFrame(true, ws.OpText, false, pushLine(ch, 2, 4)+"\n{}")...)
	s = append(s, serverFrame(true, ws.OpPing, false, "hb")...)
	msg := pushLine(ch, 3, 10) + "\n" + pushLine(ch, 4, 10)
	s = append(s, serverFrame(false, ws.OpText, false, msg[:30])...)
	s = append(s, serverFrame(true, ws.OpPing, false, "mid")...)
	s = append(s, serverFrame(false, ws.OpContinuation, false, msg[30:70])...)
	s = append(s, serverFrame(true, ws.OpContinuation, false, msg[70:])...)
	s = append(s, serverFrame(true, ws.OpText, false, pushLine(ch, 5, 300))...)
	s = append(s, longHeaderFrame(pushLine(ch, 6, 20))...)
	s = append(s, serverFrame(true, ws.OpText, true, pushLine(ch, 7, 20))...)
	s = append(s, serverFrame(true, ws.OpText, false, "")...)
	s = append(s, serverFrame(true, ws.OpText, false, "\n"+pushLine(ch, 8, 0)+"\n")...)
	return s
}

var testStreamWrites = []string{"text:{}", "pong:hb", "pong:mid"}

// outcome is what a connection made of a stream.
type outcome struct {
	delivered uint64
	tr        string
	writes    string
	err       string
}

func outcomeOf(c *conn, rc *recConn, err error, t testing.TB) outcome {
	e := "<nil>"
	if err != nil {
		e = err.Error()
	}
	tr := c.sub.tr
	return outcome{
		delivered: c.delivered.Load(),
		tr:        fmt.Sprintf("last=%d unique=%d dup=%d ooo=%d", tr.last, tr.unique, tr.dup, tr.ooo),
		writes:    strings.Join(rc.frames(t), " "),
		err:       e,
	}
}

// viaGoroutineReader runs stream through readFrame + handleFrame.
func viaGoroutineReader(t testing.TB, stream []byte) outcome {
	c, rc := testConn(t)
	c.resetReader(bytes.NewReader(append([]byte(nil), stream...)))
	var err error
	for {
		var f []byte
		if f, err = c.readFrame(); err != nil {
			break
		}
		if err = c.handleFrame(f); err != nil {
			break
		}
	}
	return outcomeOf(c, rc, err, t)
}

// viaFeed feeds stream to a new connection of r in the given chunks, then
// reports the end of the stream as the reactor does.
func viaFeed(t testing.TB, r *runner, stream []byte, cuts ...int) outcome {
	c, rc := runnerConn(t, r)
	var err error
	prev := 0
	for _, cut := range append(cuts, len(stream)) {
		if err = c.feed(append([]byte(nil), stream[prev:cut]...)); err != nil {
			break
		}
		prev = cut
	}
	if err == nil {
		err = c.eofError()
	}
	return outcomeOf(c, rc, err, t)
}

func TestFeedSplitAtEveryByteBoundary(t *testing.T) {
	c, _ := testConn(t)
	stream := testStream(c.sub.name)
	want := viaGoroutineReader(t, stream)
	if want.delivered != 8 || want.tr != "last=8 unique=8 dup=0 ooo=0" || want.writes != strings.Join(testStreamWrites, " ") || want.err != io.EOF.Error() {
		t.Fatalf("goroutine reader: %+v", want)
	}
	r := testRunner(t)
	if got := viaFeed(t, r, stream); got != want {
		t.Errorf("one read: %+v, want %+v", got, want)
	}
	for k := 0; k <= len(stream); k++ {
		if got := viaFeed(t, r, stream, k); got != want {
			t.Fatalf("split at %d of %d: %+v, want %+v", k, len(stream), got, want)
		}
	}
	// Every byte its own read: every boundary at once, frames completed
	// from c.part byte by byte.
	cuts := make([]int, len(stream))
	for i := range cuts {
		cuts[i] = i
	}
	if got := viaFeed(t, r, stream, cuts...); got != want {
		t.Errorf("byte by byte: %+v, want %+v", got, want)
	}
}

func TestFeedKeepsOnlyTheIncompleteFrame(t *testing.T) {
	c, _ := testConn(t)
	f1 := serverFrame(true, ws.OpText, false, pushLine(c.sub.name, 1, 0))
	f2 := serverFrame(true, ws.OpText, false, pushLine(c.sub.name, 2, 2000))
	stream := append(append([]byte(nil), f1...), f2...)
	if err := c.feed(stream[:len(f1)+10]); err != nil {
		t.Fatal(err)
	}
	if c.delivered.Load() != 1 || len(c.part) != 10 {
		t.Fatalf("delivered %d, part %d bytes: want 1 and the 10 bytes of the second frame", c.delivered.Load(), len(c.part))
	}
	if err := c.feed(stream[len(f1)+10 : len(stream)-1]); err != nil {
		t.Fatal(err)
	}
	if cap(c.part) != len(f2) {
		t.Errorf("part capacity %d, want the frame's size %d (allocated once)", cap(c.part), len(f2))
	}
	if err := c.feed(stream[len(stream)-1:]); err != nil {
		t.Fatal(err)
	}
	if c.delivered.Load() != 2 || c.part != nil {
		t.Errorf("delivered %d, part %v: want 2 and no buffer kept", c.delivered.Load(), c.part)
	}
	if err := c.eofError(); err != io.EOF {
		t.Errorf("end between frames: %v, want EOF", err)
	}
	_ = c.feed(f1[:3])
	if err := c.eofError(); err != io.ErrUnexpectedEOF {
		t.Errorf("end within a frame: %v, want unexpected EOF", err)
	}
}

func TestFeedCloseFrame(t *testing.T) {
	for _, tc := range []struct {
		code      ws.StatusCode
		reconnect bool
	}{{3001, true}, {3501, false}} {
		c, rc := testConn(t)
		body := string(ws.NewCloseFrameBody(tc.code, "going away"))
		push := serverFrame(true, ws.OpText, false, pushLine(c.sub.name, 1, 0))
		after := serverFrame(true, ws.OpText, false, pushLine(c.sub.name, 2, 0))
		stream := append(append(push, serverFrame(true, ws.OpClose, false, body)...), after...)
		err := c.feed(stream)
		var de *disconnectError
		if !errors.As(err, &de) || de.code != uint32(tc.code) || de.reason != "going away" || de.reconnect != tc.reconnect {
			t.Errorf("close %d: err %v (%+v)", tc.code, err, de)
		}
		if c.delivered.Load() != 1 {
			t.Errorf("close %d: delivered %d, want only the frame before the close", tc.code, c.delivered.Load())
		}
		if w := rc.frames(t); len(w) != 1 || !strings.HasPrefix(w[0], "close:") {
			t.Errorf("close %d: wrote %q, want a close frame back", tc.code, w)
		}
	}
}

func TestFeedRejectsOversizedFrames(t *testing.T) {
	t.Run("header alone", func(t *testing.T) {
		c, _ := testConn(t, "--max-frame", "2048")
		var b bytes.Buffer
		_ = ws.WriteHeader(&b, ws.Header{Fin: true, OpCode: ws.OpText, Length: 2049})
		// Only the header has arrived: the frame is refused before its
		// payload is buffered.
		if err := c.feed(b.Bytes()); !errors.Is(err, errFrameLarge) {
			t.Errorf("err %v, want errFrameLarge", err)
		}
	})
	t.Run("header split", func(t *testing.T) {
		c, _ := testConn(t, "--max-frame", "2048")
		h := longHeaderFrame(strings.Repeat("x", 5000))[:10]
		if err := c.feed(h[:4]); err != nil {
			t.Fatal(err)
		}
		if err := c.feed(h[4:]); !errors.Is(err, errFrameLarge) {
			t.Errorf("err %v, want errFrameLarge", err)
		}
	})
	t.Run("fragments", func(t *testing.T) {
		c, _ := testConn(t, "--max-frame", "2048")
		s := append(serverFrame(false, ws.OpText, false, strings.Repeat("x", 1500)),
			serverFrame(true, ws.OpContinuation, false, strings.Repeat("x", 1000))...)
		if err := c.feed(s); !errors.Is(err, errFrameLarge) {
			t.Errorf("err %v, want errFrameLarge", err)
		}
	})
	t.Run("control", func(t *testing.T) {
		c, _ := testConn(t)
		if err := c.feed(serverFrame(true, ws.OpPing, false, strings.Repeat("x", 126))); !errors.Is(err, ws.ErrProtocolControlPayloadOverflow) {
			t.Errorf("err %v, want a control payload error", err)
		}
	})
	t.Run("64-bit length with its top bit set", func(t *testing.T) {
		c, _ := testConn(t)
		h := []byte{0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}
		if err := c.feed(h); !errors.Is(err, ws.ErrHeaderLengthMSB) {
			t.Errorf("err %v, want ErrHeaderLengthMSB", err)
		}
	})
}

// The goroutine reader, unchanged, still parses the same stream over a
// bufio.Reader smaller than some frames.
func TestGoroutineReaderSmallBuffer(t *testing.T) {
	c, rc := testConn(t)
	stream := testStream(c.sub.name)
	c.br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(stream[:100]), bytes.NewReader(stream[100:])), 16)
	for {
		f, err := c.readFrame()
		if err != nil {
			break
		}
		_ = c.handleFrame(f)
	}
	if c.delivered.Load() != 8 || strings.Join(rc.frames(t), " ") != strings.Join(testStreamWrites, " ") {
		t.Errorf("delivered %d writes %q", c.delivered.Load(), rc.frames(t))
	}
}
