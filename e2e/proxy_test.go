package e2e

import (
	"io"
	"net"
	"sync"
	"testing"
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
