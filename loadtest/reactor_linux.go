//go:build linux

package loadtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The epoll reader (--reader epoll, the default on Linux).
//
// A ready session hands its socket over (handOver): it takes a dup of the
// socket's descriptor, closes the net.Conn (which removes Go's own epoll
// registration; the socket lives on through the dup), handles the bytes
// its bufio reader had already read, and queues the connection to one of
// the runner's reactors, round-robin. Then the session's goroutine waits
// on c.ended. A reactor is a goroutine locked to its thread with its own
// epoll set (level-triggered) and a 64 KiB read buffer shared by its
// sockets: one read(2) per readiness, frames parsed and handled in place
// (feed). When a socket ends (EOF, error, a frame that ends the session,
// or a shutdown from kill), the reactor removes it from its set, closes
// it — only the reactor closes a handed-over socket, so no descriptor
// number is reused under it — and sends the session's error on c.ended.
//
// Writers (publisher loop, pongs, close frames) keep serializing on c.mu
// and write to the raw socket: non-blocking, waiting with poll(2) for room
// up to --timeout. A reactor that handles an ack or a ping of a connection
// whose writer waits so waits with it: a server that stops reading a socket
// while it keeps sending on it stalls one reactor rather than one
// connection, for up to --timeout.
//
// Cost (TestReaderCost, 2 shared cores): per delivery one read(2), most of
// whose time is the kernel's (on loopback, the ACK that reading a small
// pushed segment sends right away is processed in the reader's context),
// and an epoll_wait for every few deliveries, whose wake-up is the other
// big cost: hence few reactors.

const (
	epollSupported  = true
	reactorBufSize  = 64 << 10
	reactorMaxEvent = 256
)

// defaultReader is the --reader default on this system.
const defaultReader = ReaderEpoll

// reactorPool is a runner's reactors.
type reactorPool struct {
	rs   []*reactor
	next atomic.Uint64
}

// reactor is one reader goroutine with its epoll set.
type reactor struct {
	epfd, evfd int // epoll set; eventfd waking the loop for new sockets or stop
	done       chan struct{}

	mu       sync.Mutex
	queue    []handoff // sockets to register
	closed   bool      // no more sockets: the loop ends or has ended
	stopOnce sync.Once

	// loop-owned
	buf   []byte
	conns []*conn // by socket descriptor
	reads uint64  // read(2) calls on sockets (tests)
	waits uint64  // epoll_wait calls (tests)
}

type handoff struct {
	c  *conn
	fd int
}

var errReaderStopped = errors.New("epoll reader stopped")

// newReactorPool starts n reactors.
func newReactorPool(n int) (*reactorPool, error) {
	p := &reactorPool{}
	for range n {
		r, err := newReactor()
		if err != nil {
			p.close()
			return nil, err
		}
		p.rs = append(p.rs, r)
	}
	return p, nil
}

// close stops the reactors. A connection still registered (there is none
// once every session has returned) ends with errReaderStopped.
func (p *reactorPool) close() {
	for _, r := range p.rs {
		r.stop()
	}
}

// add gives c's socket fd to the next reactor, which will report the
// session's end on c.ended; on error it does not take the socket.
func (p *reactorPool) add(c *conn, fd int) error {
	r := p.rs[(p.next.Add(1)-1)%uint64(len(p.rs))]
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errReaderStopped
	}
	r.queue = append(r.queue, handoff{c, fd})
	r.wakeLocked()
	return nil
}

// stats returns the read(2) calls the reactors made on sockets and their
// epoll_wait calls. Only meaningful once they stopped.
func (p *reactorPool) stats() (reads, waits uint64) {
	for _, r := range p.rs {
		reads += r.reads
		waits += r.waits
	}
	return reads, waits
}

func newReactor() (*reactor, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(evfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	r := &reactor{epfd: epfd, evfd: evfd, done: make(chan struct{}), buf: make([]byte, reactorBufSize)}
	go r.loop()
	return r, nil
}

// wakeLocked makes the loop look at the queue and the closed flag. Caller
// holds mu, so that stop cannot close evfd meanwhile.
func (r *reactor) wakeLocked() {
	one := [8]byte{1} // little-endian uint64 1
	for {
		// EAGAIN: the counter is saturated, a wake-up is pending anyway.
		if _, err := unix.Write(r.evfd, one[:]); err != unix.EINTR {
			return
		}
	}
}

// stop ends the loop, waits for it and releases the epoll set.
func (r *reactor) stop() {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.wakeLocked()
		r.mu.Unlock()
		<-r.done
		_ = unix.Close(r.epfd)
		_ = unix.Close(r.evfd)
	})
}

func (r *reactor) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(r.done)
	var events [reactorMaxEvent]unix.EpollEvent
	for {
		r.waits++
		n, err := unix.EpollWait(r.epfd, events[:], -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			r.endAll(fmt.Errorf("epoll_wait: %w", err))
			return
		}
		if !r.handle(events[:n]) {
			return
		}
	}
}

// handle services the sockets of events; false when the reactor stops.
func (r *reactor) handle(events []unix.EpollEvent) bool {
	for i := range events {
		fd := int(events[i].Fd)
		if fd == r.evfd {
			if !r.register() {
				r.endAll(errReaderStopped)
				return false
			}
			continue
		}
		if fd >= len(r.conns) || r.conns[fd] == nil {
			continue
		}
		if err := r.service(r.conns[fd], fd); err != nil {
			r.end(r.conns[fd], fd, err)
		}
	}
	return true
}

// register adds the queued sockets to the epoll set; false when the
// reactor is stopping.
func (r *reactor) register() bool {
	var v [8]byte
	_, _ = unix.Read(r.evfd, v[:])
	r.mu.Lock()
	q := r.queue
	r.queue = nil
	closed := r.closed
	r.mu.Unlock()
	for _, h := range q {
		if h.fd >= len(r.conns) {
			r.conns = append(r.conns, make([]*conn, h.fd+1-len(r.conns)+len(r.conns)/2)...)
		}
		r.conns[h.fd] = h.c
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(h.fd)}
		if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, h.fd, &ev); err != nil {
			r.end(h.c, h.fd, fmt.Errorf("epoll_ctl: %w", err))
		}
	}
	return !closed
}

// service reads c's socket once and handles what came.
func (r *reactor) service(c *conn, fd int) error {
	if c.shut.Load() {
		// kill shut the socket down: end now, like a closed net.Conn.
		return &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	}
	r.reads++
	n, err := unix.Read(fd, r.buf)
	switch {
	case err == nil && n > 0:
		return c.feed(r.buf[:n])
	case err == nil:
		return c.eofError()
	case err == unix.EAGAIN || err == unix.EINTR:
		return nil // spurious readiness: wait for the next
	default:
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
	}
}

// end removes c's socket from the set, closes it and reports err to the
// session.
func (r *reactor) end(c *conn, fd int, err error) {
	_ = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	if fd < len(r.conns) {
		r.conns[fd] = nil
	}
	c.mu.Lock()
	c.sock = -1 // no writer uses fd after this
	c.mu.Unlock()
	_ = unix.Close(fd)
	c.part = nil
	c.rbuf = c.rbuf[:0]
	c.ended <- err
}

// endAll ends every registered or queued socket with err.
func (r *reactor) endAll(err error) {
	for fd, c := range r.conns {
		if c != nil {
			r.end(c, fd, err)
		}
	}
	r.mu.Lock()
	q := r.queue
	r.queue = nil
	r.closed = true
	r.mu.Unlock()
	for _, h := range q {
		r.end(h.c, h.fd, err)
	}
}

// handOver moves a ready session's socket to a reactor and waits for the
// session's end, whose error it returns (handed true). It returns handed
// false, without doing anything, when nc is not a plain TCP socket.
func (c *conn) handOver(nc net.Conn, pre *bytes.Reader) (handed bool, err error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return false, nil
	}
	// Bytes already read behind the last reply: handle them here, still
	// writing through nc; an incomplete frame's bytes stay in c.part (and
	// the fragments of an incomplete message in c.rbuf, which still holds
	// the reply readFrame returned last).
	c.part, c.rbuf = nil, c.rbuf[:0]
	if n := c.br.Buffered(); n > 0 || pre != nil && pre.Len() > 0 {
		data, _ := c.br.Peek(n)
		if pre != nil && pre.Len() > 0 {
			rest := make([]byte, pre.Len())
			_, _ = pre.Read(rest)
			data = append(append([]byte(nil), data...), rest...)
		}
		if err := c.feed(data); err != nil {
			return true, err
		}
	}
	c.br = nil // reallocated by the next session: idle connections keep no buffer
	if len(c.rbuf) == 0 {
		c.rbuf = nil // only fragmented messages need it from now on
	}
	if c.ended == nil {
		c.ended = make(chan error, 1)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return true, err
	}
	c.mu.Lock()
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		c.mu.Unlock()
		return true, err // closed by kill meanwhile: net.ErrClosed, as a read would say
	}
	if derr != nil {
		c.mu.Unlock()
		return true, fmt.Errorf("dup: %w", derr)
	}
	_ = nc.Close() // Go's poller forgets the socket; fd keeps it open
	c.nc = nil
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		c.mu.Unlock()
		return true, fmt.Errorf("set non-blocking: %w", err)
	}
	c.shut.Store(false)
	c.sock = fd
	c.mu.Unlock()
	if err := c.r.reactors.add(c, fd); err != nil {
		c.mu.Lock()
		c.sock = -1
		c.mu.Unlock()
		_ = unix.Close(fd)
		return true, err
	}
	return true, <-c.ended
}

// writeSock writes all of b to the non-blocking socket fd, waiting up to
// timeout in all for room when the socket's send buffer is full.
func writeSock(fd int, b []byte, timeout time.Duration) error {
	var deadline time.Time
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == nil {
			b = b[max(n, 0):]
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if deadline.IsZero() {
				deadline = time.Now().Add(timeout)
			}
			wait := time.Until(deadline)
			if wait <= 0 {
				return &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}
			}
			pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(pfd[:], int((wait+time.Millisecond-1)/time.Millisecond)); err != nil && err != unix.EINTR {
				return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("poll", err)}
			}
		default:
			return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
		}
	}
	return nil
}

// shutdownSock shuts the socket down in both directions: the reactor then
// sees the end of the stream and closes it.
func shutdownSock(fd int) { _ = unix.Shutdown(fd, unix.SHUT_RDWR) }
