//go:build linux

package loadtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Tests of the epoll reader on real sockets: the handover, writes after
// it, and every way a handed-over session ends.

// epollRunner returns a runner with one reactor, stopped when t ends
// (testRunner's flags; the later --reader wins).
func epollRunner(t *testing.T, extra ...string) *runner {
	t.Helper()
	r := testRunner(t, append([]string{"--reader", ReaderEpoll, "--readers", "1", "--timeout", "2s"}, extra...)...)
	t.Cleanup(r.reactors.close)
	return r
}

// readySession returns a ready subscriber of r on a fresh loopback TCP
// connection, and the server's end of it.
func readySession(t *testing.T, r *runner) (*conn, *net.TCPConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })
	c, err := r.newConn(0, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	c.sub.tr.begin(0)
	c.state.Store(stReady)
	c.nc = client
	c.resetReader(client)
	return c, client.(*net.TCPConn), server
}

// handOverAsync hands c's socket to its reactor and returns where the
// session's error will come.
func handOverAsync(c *conn, nc net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		handed, err := c.handOver(nc, nil)
		if !handed {
			err = errors.New("not handed over")
		}
		done <- err
	}()
	return done
}

func waitErr(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(3 * time.Second):
		t.Fatal("the session did not end")
		return nil
	}
}

// readClientFrame reads one frame the client sent, unmasked.
func readClientFrame(t *testing.T, server net.Conn) (ws.OpCode, string) {
	t.Helper()
	_ = server.SetReadDeadline(time.Now().Add(3 * time.Second))
	f, err := ws.ReadFrame(server)
	if err != nil {
		t.Fatalf("server reading: %v", err)
	}
	ws.Cipher(f.Payload, f.Header.Mask, 0)
	return f.Header.OpCode, string(f.Payload)
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestReactorHandOverWritesAndKill(t *testing.T) {
	fds, gs := openFDs(t), runtime.NumGoroutine()
	r := epollRunner(t)
	c, client, server := readySession(t, r)
	ch := c.sub.name
	f := func(off int) []byte { return serverFrame(true, ws.OpText, false, pushLine(ch, off, 10)) }

	// Two frames and the start of a third are in the bufio reader when
	// the session hands over: they are handled first, nothing is lost.
	before := append(append(f(1), f(2)...), f(3)[:5]...)
	if _, err := server.Write(before); err != nil {
		t.Fatal(err)
	}
	if _, err := c.br.Peek(len(before)); err != nil {
		t.Fatal(err)
	}
	done := handOverAsync(c, client)
	if _, err := server.Write(append(append(f(3)[5:], f(4)...), serverFrame(true, ws.OpPing, false, "x")...)); err != nil {
		t.Fatal(err)
	}
	if op, p := readClientFrame(t, server); op != ws.OpPong || p != "x" {
		t.Errorf("got %v %q, want the pong", op, p)
	}
	if !waitFor(2*time.Second, func() bool { return c.delivered.Load() == 4 }) {
		t.Errorf("delivered %d, want 4", c.delivered.Load())
	}

	// Publishing writes to the raw socket.
	if err := c.publish(0, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	if op, p := readClientFrame(t, server); op != ws.OpText || !strings.Contains(p, `"publish"`) {
		t.Errorf("got %v %q, want the publish", op, p)
	}

	// kill from another goroutine: a close frame, then the end of the
	// stream; the session returns what a closed net.Conn would have said.
	c.kill(stopDrop, true)
	err := waitErr(t, done)
	if !errors.Is(err, net.ErrClosed) || classify("dropped", err) != "dropped: closed by server" {
		t.Errorf("session ended with %v, want net.ErrClosed", err)
	}
	if tr := c.sub.tr; tr.last != 4 || tr.unique != 4 || tr.gaps() != 0 { // the session's again
		t.Errorf("tracker %+v, want 1…4", tr)
	}
	if op, p := readClientFrame(t, server); op != ws.OpClose || !bytes.Equal([]byte(p), ws.NewCloseFrameBody(ws.StatusNormalClosure, "")) {
		t.Errorf("got %v %q, want a close frame", op, p)
	}
	_ = server.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := server.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("server read %d, %v after the close frame, want EOF", n, err)
	}
	c.mu.Lock()
	sock, nc := c.sock, c.nc
	c.mu.Unlock()
	if sock != -1 || nc != nil {
		t.Errorf("socket %d, nc %v after the end", sock, nc)
	}
	if err := c.publish(0, time.Now().UnixNano()); !errors.Is(err, errNotReady) {
		t.Errorf("publish after the end: %v, want errNotReady", err)
	}

	_ = server.Close()
	r.reactors.close()
	if !waitFor(2*time.Second, func() bool { return openFDs(t) == fds }) {
		t.Errorf("%d descriptors open, %d before: a socket or the epoll set leaked", openFDs(t), fds)
	}
	if !waitFor(2*time.Second, func() bool { return runtime.NumGoroutine() <= gs }) {
		t.Errorf("%d goroutines, %d before", runtime.NumGoroutine(), gs)
	}
}

func TestReactorSessionEnds(t *testing.T) {
	cases := []struct {
		name   string
		server func(t *testing.T, server net.Conn)
		check  func(t *testing.T, err error, server net.Conn)
	}{
		{"server closes", func(t *testing.T, s net.Conn) { _ = s.Close() },
			func(t *testing.T, err error, _ net.Conn) {
				if err != io.EOF {
					t.Errorf("err %v, want EOF", err)
				}
			}},
		{"server closes within a frame", func(t *testing.T, s net.Conn) {
			_, _ = s.Write([]byte{0x81, 10, 'x'})
			_ = s.Close()
		}, func(t *testing.T, err error, _ net.Conn) {
			if err != io.ErrUnexpectedEOF {
				t.Errorf("err %v, want unexpected EOF", err)
			}
		}},
		{"server resets", func(t *testing.T, s net.Conn) {
			_ = s.(*net.TCPConn).SetLinger(0)
			_ = s.Close()
		}, func(t *testing.T, err error, _ net.Conn) {
			if err == nil || classify("dropped", err) != "dropped: i/o error" {
				t.Errorf("err %v (%s), want a reset", err, classify("dropped", err))
			}
		}},
		{"close frame", func(t *testing.T, s net.Conn) {
			_, _ = s.Write(serverFrame(true, ws.OpClose, false, string(ws.NewCloseFrameBody(3002, "bye"))))
		}, func(t *testing.T, err error, s net.Conn) {
			var de *disconnectError
			if !errors.As(err, &de) || de.code != 3002 || de.reason != "bye" || !de.reconnect {
				t.Errorf("err %v, want disconnect 3002", err)
			}
			if op, p := readClientFrame(t, s); op != ws.OpClose || !bytes.Equal([]byte(p), ws.NewCloseFrameBody(3002, "")) {
				t.Errorf("got %v %q, want the close frame echoed", op, p)
			}
		}},
		{"oversized frame", func(t *testing.T, s net.Conn) {
			_, _ = s.Write(longHeaderFrame(strings.Repeat("x", 5000))[:10])
		}, func(t *testing.T, err error, _ net.Conn) {
			if !errors.Is(err, errFrameLarge) {
				t.Errorf("err %v, want errFrameLarge", err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := epollRunner(t, "--max-frame", "2048")
			c, client, server := readySession(t, r)
			done := handOverAsync(c, client)
			tc.server(t, server)
			err := waitErr(t, done)
			tc.check(t, err, server)
			c.mu.Lock()
			sock := c.sock
			c.mu.Unlock()
			if sock != -1 {
				t.Errorf("socket %d still set", sock)
			}
		})
	}
}

// Cancelling the run's context ends a handed-over session (the AfterFunc
// in session), with the error a closed net.Conn gives.
func TestReactorSessionContextCancel(t *testing.T) {
	stream := serverFrame(true, ws.OpText, false, pushLine("t:0", 1, 0))
	srv := newScriptedServer(t, stream, 1)
	r := epollRunner(t, "--url", srv.URL, "--source-ips", "none")
	c, err := r.newConn(0, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.session(ctx, false, nil) }()
	if !waitFor(3*time.Second, func() bool { return c.delivered.Load() == 1 }) {
		t.Fatal("no delivery")
	}
	cancel()
	if err := waitErr(t, done); !errors.Is(err, net.ErrClosed) {
		t.Errorf("session ended with %v, want net.ErrClosed", err)
	}
	c.closeSocket()
}

// A write that finds the socket's send buffer full waits for room up to
// the timeout, then fails.
func TestWriteSockTimeout(t *testing.T) {
	r := epollRunner(t)
	c, client, server := readySession(t, r)
	done := handOverAsync(c, client)
	if !waitFor(2*time.Second, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.sock >= 0 }) {
		t.Fatal("no handover")
	}
	big := make([]byte, 1<<20)
	c.mu.Lock()
	var err error
	start := time.Now()
	for i := 0; i < 64 && err == nil; i++ { // the server reads nothing
		err = writeSock(c.sock, big, 200*time.Millisecond)
	}
	c.mu.Unlock()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) < 200*time.Millisecond {
		t.Errorf("write into a full socket: %v after %s, want a timeout", err, time.Since(start))
	}
	c.kill(stopNone, false)
	_ = waitErr(t, done)
	_ = server.Close()
}
