//go:build !linux

package loadtest

import (
	"bytes"
	"errors"
	"net"
	"time"
)

// Outside Linux there is no epoll reader: connections read in their own
// goroutine (--reader goroutine), and these are never reached.

const epollSupported = false

// defaultReader is the --reader default on this system.
const defaultReader = ReaderGoroutine

type reactorPool struct{}

func newReactorPool(int) (*reactorPool, error) {
	return nil, errors.New("--reader epoll needs Linux")
}

func (p *reactorPool) close() {}

func (p *reactorPool) stats() (reads, waits uint64) { return 0, 0 }

func (c *conn) handOver(net.Conn, *bytes.Reader) (bool, error) { return false, nil }

func writeSock(int, []byte, time.Duration) error { return errNotReady }

func shutdownSock(int) {}
