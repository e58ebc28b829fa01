// Package s3test holds test helpers around s3local: one shared gateway per
// test binary (versitygw allows one per process), unique bucket names, and
// a TCP proxy that can simulate S3 being down.
//
// Typical use:
//
//	func TestMain(m *testing.M) { s3test.Main(m) }
//	func TestX(t *testing.T) { endpoint := s3test.Endpoint(); bucket := s3test.Bucket(t) … }
package s3test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/herald-chat/herald/internal/engines/s3local"
)

// Credentials of the shared gateway.
const (
	AccessKey = "herald-test"
	SecretKey = "herald-test-secret"
	Region    = "us-east-1"
)

var gw *s3local.Server

// Main starts the shared gateway in a temporary directory, runs the tests
// and exits. Call it from TestMain. Note that the gateway changes the
// process working directory to its data directory.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit: it starts the shared gateway, runs the
// tests and returns their exit code, for a TestMain that also sets up
// other engines.
func Run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "herald-s3test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3test:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	gw, err = s3local.Start(context.Background(), s3local.Options{Dir: dir, AccessKey: AccessKey, SecretKey: SecretKey})
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3test: starting versitygw:", err)
		return 1
	}
	defer gw.Close()
	return m.Run()
}

// Endpoint returns the shared gateway's URL.
func Endpoint() string {
	if gw == nil {
		panic("s3test: call s3test.Main from TestMain")
	}
	return gw.Endpoint()
}

var seq atomic.Int64

// Bucket returns a fresh valid bucket name for tb (not created).
func Bucket(tb testing.TB) string {
	tb.Helper()
	name := strings.ToLower(tb.Name())
	var b strings.Builder
	for _, r := range name {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 40 {
		s = s[:40]
	}
	return fmt.Sprintf("t%d-%s", seq.Add(1), strings.Trim(s, "-"))
}

// Proxy forwards TCP connections to a target and can be switched down:
// while down, new connections are closed at once and existing ones are cut.
type Proxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to target (host:port or http://host:port); it is
// closed by tb.Cleanup.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{ln: ln, target: strings.TrimPrefix(target, "http://"), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	tb.Cleanup(p.close)
	return p
}

// Endpoint returns the proxy's URL, http://127.0.0.1:port.
func (p *Proxy) Endpoint() string { return "http://" + p.ln.Addr().String() }

// SetDown switches the proxy down (true) or up.
func (p *Proxy) SetDown(down bool) {
	p.down.Store(down)
	if down {
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	}
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *Proxy) close() {
	_ = p.ln.Close()
	p.SetDown(true)
	p.wg.Wait()
}
