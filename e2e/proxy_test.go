package e2e

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-chat/herald/devstack"
	"github.com/herald-chat/herald/internal/auth"
)

// cutProxy forwards TCP connections to target. cut drops every open one
// with a reset (a lost network path, not a close handshake) and refuses new
// ones until restore.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[*net.TCPConn]struct{}
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[*net.TCPConn]struct{}{}}
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
	})
	go p.serve()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c.(*net.TCPConn))
	}
}

func (p *cutProxy) forward(client *net.TCPConn) {
	if !p.track(client) {
		reset(client)
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		p.drop(client)
		return
	}
	server := up.(*net.TCPConn)
	if !p.track(server) {
		p.drop(client)
		reset(server)
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src *net.TCPConn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.CloseWrite()
	}
	go pipe(server, client)
	go pipe(client, server)
	wg.Wait()
	p.drop(client)
	p.drop(server)
}

// track registers c unless the proxy is down.
func (p *cutProxy) track(c *net.TCPConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *cutProxy) drop(c *net.TCPConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

// cut resets every forwarded connection and refuses new ones.
func (p *cutProxy) cut() {
	p.mu.Lock()
	p.down = true
	conns := p.conns
	p.conns = map[*net.TCPConn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		reset(c)
	}
}

// restore lets connections through again.
func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// reset closes c with a TCP reset instead of a FIN.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// The drop tests: a user with a server-side subscription (dropServerCh)
// and a client-side one that needs a subscription token (dropClientCh)
// receives dropN publications on each; its connection is cut after the
// first third and restored after the second.
const (
	dropN        = 30
	dropServerCh = "chat:drop"
	dropClientCh = "vip:drop"
)

// dropFixture is a stack with a cuttable proxy in front of its relay, the
// dropped user's tokens and a publisher on both channels.
type dropFixture struct {
	st        *devstack.Stack
	proxy     *cutProxy
	url       string // the relay's WebSocket URL through the proxy
	token     string // subscribes the user to dropServerCh; no grant on dropClientCh
	subToken  string // the subscription token for dropClientCh
	publisher *centrifuge.Client
}

func newDropFixture(t *testing.T) *dropFixture {
	t.Helper()
	st := startStack(t)
	u, err := url.Parse(st.RelayURL)
	if err != nil {
		t.Fatal(err)
	}
	f := &dropFixture{st: st, proxy: newCutProxy(t, u.Host), token: token(t, st.TokenSecret, "dropped", dropServerCh)}
	f.url = "ws://" + f.proxy.addr() + u.Path
	sc := &auth.SubscriptionClaims{Channel: dropClientCh}
	sc.Subject = "dropped"
	sc.ExpiresAt = jwt.NewNumericDate(time.Now().Add(time.Hour))
	if f.subToken, err = auth.Sign(st.TokenSecret, sc); err != nil {
		t.Fatal(err)
	}
	f.publisher, _ = connectClient(t, st, "drop-publisher", dropServerCh, dropClientCh)
	return f
}

// publish sends msgData(from..to) to both channels, each acked by Kafka.
func (f *dropFixture) publish(t *testing.T, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i := from; i <= to; i++ {
		for _, ch := range []string{dropServerCh, dropClientCh} {
			if _, err := f.publisher.Publish(ctx, ch, []byte(msgData(i))); err != nil {
				t.Fatalf("publish %d to %s: %v", i, ch, err)
			}
		}
	}
}
