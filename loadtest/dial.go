package loadtest

import (
	"context"
	"net"
	"sync/atomic"
	"time"
)

// sourcePool hands out local source addresses round-robin, so that the
// connections of one process spread over several loopback addresses (each
// has its own ephemeral port range). An empty pool lets the kernel choose.
type sourcePool struct {
	addrs []*net.TCPAddr
	next  atomic.Uint64
}

func newSourcePool(ips []net.IP) *sourcePool {
	p := &sourcePool{}
	for _, ip := range ips {
		p.addrs = append(p.addrs, &net.TCPAddr{IP: ip})
	}
	return p
}

// pick returns the next source address, nil when the pool is empty.
func (p *sourcePool) pick() *net.TCPAddr {
	if len(p.addrs) == 0 {
		return nil
	}
	return p.addrs[(p.next.Add(1)-1)%uint64(len(p.addrs))]
}

// dial opens a TCP connection from the next source address.
func (p *sourcePool) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if a := p.pick(); a != nil {
		d.LocalAddr = a
	}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// Small frames, latency measured: no Nagle.
		_ = tc.SetNoDelay(true)
	}
	return c, nil
}
