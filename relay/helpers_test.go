package relay

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/herald-chat/herald/internal/auth"
)

const testSecret = "test-secret"

func testLogger() *slog.Logger {
	if os.Getenv("HERALD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startRelay runs a relay on a random port until the test ends.
func startRelay(t testing.TB, mod func(*Config), kopts ...kgo.Opt) *Server {
	t.Helper()
	srv, _ := startRelayCtl(t, mod, kopts...)
	return srv
}

// startRelayCtl is startRelay that also returns stop, which cancels Run's
// context and returns a channel with Run's result.
func startRelayCtl(t testing.TB, mod func(*Config), kopts ...kgo.Opt) (*Server, func() <-chan error) {
	t.Helper()
	return startRelayLog(t, mod, testLogger(), kopts...)
}

// startRelayLog is startRelayCtl logging to log.
func startRelayLog(t testing.TB, mod func(*Config), log *slog.Logger, kopts ...kgo.Opt) (*Server, func() <-chan error) {
	t.Helper()
	cfg := Config{
		Addr:          "127.0.0.1:0",
		Controllers:   []string{"127.0.0.1:1"},
		Brokers:       []string{"127.0.0.1:1"},
		Topic:         "herald.messages",
		Partitions:    4,
		ManagementURL: "http://127.0.0.1:1",
		EventLoops:    2,
		Multicore:     true,
		DrainWindow:   200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg, auth.NewVerifier(testSecret), log, prometheus.NewRegistry(), kopts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.booted:
	case err := <-done:
		cancel()
		t.Fatalf("relay did not start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("relay did not start in time")
	}
	var once sync.Once
	result := make(chan error, 1)
	stop := func() <-chan error {
		once.Do(func() {
			cancel()
			go func() { result <- <-done; close(result) }()
		})
		return result
	}
	t.Cleanup(func() {
		stopped := stop()
		select {
		case err, ok := <-stopped:
			if ok && err != nil {
				t.Errorf("relay Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("relay did not stop")
		}
	})
	return srv, stop
}

func token(t testing.TB, user string, channels []string, caps []auth.Capability, ttl time.Duration) string {
	t.Helper()
	c := auth.NewClaims(user, channels, ttl)
	c.Caps = caps
	s, err := auth.Sign(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// subTokenInfo signs a subscription token with the channel info info (none when "").
func subTokenInfo(t testing.TB, user, channel, info string) string {
	t.Helper()
	c := &auth.SubscriptionClaims{Channel: channel}
	if info != "" {
		c.Info = json.RawMessage(info)
	}
	c.Subject = user
	c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(time.Hour))
	s, err := auth.Sign(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func subToken(t testing.TB, user, channel string) string {
	t.Helper()
	return subTokenInfo(t, user, channel, "")
}

// wsConn is a raw WebSocket client for protocol-level tests.
type wsConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

const upgradeRequest = "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

func dialRaw(t testing.TB, addr string) *wsConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &wsConn{t: t, c: c, br: bufio.NewReader(c)}
}

// dialWS dials and completes the upgrade.
func dialWS(t testing.TB, addr string) *wsConn {
	t.Helper()
	w := dialRaw(t, addr)
	w.write([]byte(upgradeRequest))
	w.expectUpgrade()
	return w
}

func (w *wsConn) write(b []byte) {
	w.t.Helper()
	if _, err := w.c.Write(b); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

func (w *wsConn) readHTTPHead() string {
	w.t.Helper()
	var sb strings.Builder
	for {
		line, err := w.br.ReadString('\n')
		if err != nil {
			w.t.Fatalf("reading HTTP response: %v (got %q)", err, sb.String())
		}
		sb.WriteString(line)
		if line == "\r\n" {
			return sb.String()
		}
	}
}

func (w *wsConn) expectUpgrade() {
	w.t.Helper()
	head := w.readHTTPHead()
	if !strings.HasPrefix(head, "HTTP/1.1 101") || !strings.Contains(head, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
		w.t.Fatalf("bad upgrade response: %q", head)
	}
}

// frame builds a client frame.
func frame(op byte, payload []byte, fin, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	mbit := byte(0)
	if masked {
		mbit = 0x80
	}
	n := len(payload)
	switch {
	case n < 126:
		out = append(out, mbit|byte(n))
	case n <= 0xffff:
		out = append(out, mbit|126, byte(n>>8), byte(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if masked {
		var key [4]byte
		_, _ = rand.Read(key[:])
		out = append(out, key[:]...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return append(out, p...)
}

func textFrame(s string) []byte { return frame(opText, []byte(s), true, true) }

// readFrame reads one server frame (which must be unmasked).
func (w *wsConn) readFrame() (op byte, payload []byte) {
	w.t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		w.t.Fatalf("reading frame header: %v", err)
	}
	if h[1]&0x80 != 0 {
		w.t.Fatal("server frame is masked")
	}
	if h[0]&0x80 == 0 {
		w.t.Fatal("server frame without FIN")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, _ = io.ReadFull(w.br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, _ = io.ReadFull(w.br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(w.br, payload); err != nil {
		w.t.Fatalf("reading frame payload: %v", err)
	}
	return h[0] & 0x0f, payload
}

// readText reads frames until a text frame, skipping server pings ({}).
func (w *wsConn) readText() string {
	w.t.Helper()
	for {
		op, p := w.readFrame()
		if op == opClose {
			w.t.Fatalf("unexpected close: %d %q", binary.BigEndian.Uint16(p), p[2:])
		}
		if op == opText && string(p) != "{}" {
			return string(p)
		}
	}
}

// expectClose reads frames until a close frame and checks its code.
func (w *wsConn) expectClose(code uint16) string {
	w.t.Helper()
	for {
		op, p := w.readFrame()
		if op != opClose {
			continue
		}
		if len(p) < 2 {
			w.t.Fatalf("close frame without code")
		}
		if got := binary.BigEndian.Uint16(p); got != code {
			w.t.Fatalf("close code = %d (%q), want %d", got, p[2:], code)
		}
		return string(p[2:])
	}
}

func expiredToken(t testing.TB) string {
	t.Helper()
	c := auth.NewClaims("late", nil, 0)
	c.RegisteredClaims.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	s, err := auth.Sign(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
