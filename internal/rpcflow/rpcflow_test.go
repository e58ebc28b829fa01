package rpcflow_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/herald-chat/herald/internal/rpcflow"
)

// HTTP/2 frame types (RFC 9113 §6).
const (
	frameData         = 0x0
	framePing         = 0x6
	frameWindowUpdate = 0x8
)

// frameCounter wraps a connection and counts the HTTP/2 frames written to
// it by type, parsing the byte stream however the writes split it.
type frameCounter struct {
	net.Conn
	skip int // bytes of the client preface still to skip

	mu     sync.Mutex
	buf    []byte
	counts map[byte]int
}

func newFrameCounter(c net.Conn, client bool) *frameCounter {
	fc := &frameCounter{Conn: c, counts: map[byte]int{}}
	if client {
		fc.skip = len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	}
	return fc
}

func (fc *frameCounter) Write(p []byte) (int, error) {
	fc.mu.Lock()
	fc.buf = append(fc.buf, p...)
	if fc.skip > 0 {
		n := min(fc.skip, len(fc.buf))
		fc.buf, fc.skip = fc.buf[n:], fc.skip-n
	}
	for len(fc.buf) >= 9 {
		length := int(fc.buf[0])<<16 | int(fc.buf[1])<<8 | int(fc.buf[2])
		if len(fc.buf) < 9+length {
			break
		}
		typ := fc.buf[3]
		// A WINDOW_UPDATE of stream 0 is the connection's; count the
		// stream's separately so the test can tell them apart.
		if typ == frameWindowUpdate && binary.BigEndian.Uint32(fc.buf[5:9])&0x7fffffff != 0 {
			typ = 0x80 | frameWindowUpdate
		}
		fc.counts[typ]++
		fc.buf = fc.buf[9+length:]
	}
	fc.mu.Unlock()
	return fc.Conn.Write(p)
}

func (fc *frameCounter) count(typ byte) int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.counts[typ]
}

// String is the counts by frame type (for the test log).
func (fc *frameCounter) String() string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fmt.Sprint(fc.counts)
}

type countingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*frameCounter
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := newFrameCounter(c, false)
	l.mu.Lock()
	l.conns = append(l.conns, fc)
	l.mu.Unlock()
	return fc, nil
}

func (l *countingListener) server() *frameCounter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) != 1 {
		return nil
	}
	return l.conns[0]
}

// exchange runs n server→client stream messages (health Watch updates) and
// n unary calls (client→server data) over one connection built with the
// given options, and returns the frames each side wrote.
func exchange(t *testing.T, n int, sopts []grpc.ServerOption, dopts []grpc.DialOption) (client, server *frameCounter) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	srv := grpc.NewServer(sopts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(cl) }()
	defer srv.Stop()

	var (
		ccMu sync.Mutex
		cc   *frameCounter // set by the dialer, on grpc's goroutine
	)
	dopts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			ccMu.Lock()
			defer ccMu.Unlock()
			cc = newFrameCounter(c, true)
			return cc, nil
		}),
	}, dopts...)
	conn, err := grpc.NewClient(ln.Addr().String(), dopts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const svc = "herald.test"
	hs.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	// One message at a time, each read before the next is sent: every
	// message is its own DATA frame, as a relay stream's batches are when
	// they are milliseconds apart.
	status := []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING}
	for i := 0; i < n; i++ {
		hs.SetServingStatus(svc, status[i%2])
		if _, err := watch.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // let the last acks go out
	ccMu.Lock()
	defer ccMu.Unlock()
	if cc == nil || cl.server() == nil {
		t.Fatal("no connection was counted")
	}
	return cc, cl.server()
}

// TestStaticWindowsSendNoFlowControlPerMessage checks the reason this
// package exists: with the default (dynamic) windows, every DATA frame a
// side receives alone makes it send a BDP ping and a window update; with
// the options here, neither side sends a ping and window updates come
// once per quarter window, i.e. not at all for a few kilobytes.
func TestStaticWindowsSendNoFlowControlPerMessage(t *testing.T) {
	const n = 200
	t.Run("default", func(t *testing.T) {
		client, server := exchange(t, n, nil, nil)
		t.Logf("client: %v; server: %v", client, server)
		// The control: proves the counting sees what the options remove.
		if got := client.count(framePing); got < n/2 {
			t.Errorf("default windows: client sent %d pings for %d messages received; the control expects at least %d", got, n, n/2)
		}
		if got := server.count(framePing); got < n/2 {
			t.Errorf("default windows: server sent %d pings for %d requests received; the control expects at least %d", got, n, n/2)
		}
	})
	t.Run("rpcflow", func(t *testing.T) {
		client, server := exchange(t, n, rpcflow.ServerOptions(), rpcflow.DialOptions())
		t.Logf("client: %v; server: %v", client, server)
		if client.count(frameData) < n || server.count(frameData) < n {
			t.Fatalf("data frames: client %d, server %d; want at least %d each", client.count(frameData), server.count(frameData), n)
		}
		// Pings: grpc-go's keepalive is off by default, so any ping
		// here would be a BDP estimate (or its ack, answering one).
		for name, fc := range map[string]*frameCounter{"client": client, "server": server} {
			if got := fc.count(framePing); got != 0 {
				t.Errorf("%s sent %d pings, want 0", name, got)
			}
			// A few kilobytes against megabyte windows: the only window
			// update allowed is the connection's initial one (grpc-go
			// raises the 64 KiB default to ConnWindow right after the
			// settings).
			if got := fc.count(frameWindowUpdate) + fc.count(0x80|frameWindowUpdate); got > 1 {
				t.Errorf("%s sent %d window updates, want at most 1", name, got)
			}
		}
	})
}
