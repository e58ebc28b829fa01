package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Connection states.
const (
	stConnecting int32 = iota
	stReady
	stAway // dropped or disconnected, may come back
	stClosed
)

// Why a connection's socket was closed from our side.
const (
	stopNone  int32 = iota
	stopDrop        // recovery scenario: reconnect after a delay, with recover
	stopChurn       // churn: closed for good, replaced by a new connection
	stopOnEnd       // end of run
)

const (
	readBufferSize = 1024 // per-connection bufio size: one push frame fits
	maxHeader      = ws.MaxHeaderSize
)

// pendingPub is a publish waiting for its reply.
type pendingPub struct {
	id   uint32
	ch   int32
	sent int64 // unix ns
}

// subState is the single subscription of a subscriber connection.
type subState struct {
	ch     int    // channel index
	name   string // channel name
	epoch  string
	tr     seqTracker
	ended  bool // unsubscribed by the server or churned: only gaps count as lost
	preRun bool // subscribed before publishing started
}

// conn is one load-test connection. Its goroutine (run) owns the socket's
// read side, the subscription and its tracker while it connects; once the
// session is ready, either it keeps reading (goroutine reader) or it hands
// the socket and all of that to a reactor and waits for the session's end
// (epoll reader, reactor_linux.go). Writers (the publisher loop, pongs from
// the reader) serialize on mu.
type conn struct {
	r     *runner
	idx   int    // global connection index: token subject, histogram shard
	url   string // the endpoint it dials (one of --url's)
	token string
	sub   *subState // nil for dedicated publishers

	state      atomic.Int32
	stop       atomic.Int32
	churned    atomic.Bool // closed on purpose by churn: replaced, not counted to the end
	everReady  bool        // reader-owned
	delivered  atomic.Uint64
	published  atomic.Uint64
	reconnects uint64 // reader-owned

	mu      sync.Mutex // guards everything below
	nc      net.Conn   // until the handover to a reactor
	sock    int        // after it: the raw socket (a dup of nc's), -1 when none
	nextID  uint32
	wbuf    []byte
	hw      headerWriter
	pending []pendingPub

	// reader-owned (the conn's goroutine, or its reactor after the handover)
	br    *bufio.Reader
	rbuf  []byte // message being read (goroutine reader) or joined from fragments
	part  []byte // epoll reader: bytes of an incomplete frame, nil when none
	hbuf  [maxHeader]byte
	ctrl  [125]byte
	await uint32
	onRep func(m *serverMsg) error
	got   bool

	shut  atomic.Bool // epoll reader: the socket was shut down from our side (kill)
	ended chan error  // epoll reader: the reactor reports the session's end here
}

// headerWriter writes a frame header into the space reserved before a
// payload (ws.WriteHeaderBuffer wants an io.Writer).
type headerWriter struct {
	dst []byte
	n   int
}

func (w *headerWriter) Write(p []byte) (int, error) {
	w.n = copy(w.dst, p)
	return w.n, nil
}

var (
	errNotReady   = errors.New("connection not ready")
	errFrameLarge = errors.New("frame larger than --max-frame")
)

// disconnectError is a disconnect the server asked for (push or close frame).
type disconnectError struct {
	code      uint32
	reason    string
	reconnect bool
}

func (e *disconnectError) Error() string {
	return fmt.Sprintf("server disconnect %d %q", e.code, e.reason)
}

// replyError is an error reply to connect or subscribe.
type replyError struct {
	method string
	code   uint32
	msg    string
}

func (e *replyError) Error() string { return fmt.Sprintf("%s error %d: %s", e.method, e.code, e.msg) }

// run drives the connection until the run ends, the connection is churned,
// or it fails for good. The first outcome (ready or failed) is reported to
// the runner through settled.
func (c *conn) run(ctx context.Context, settled func(ok bool)) {
	r := c.r
	backoff := 250 * time.Millisecond
	recovering := false
	for {
		err := c.session(ctx, recovering, settled)
		if settled != nil {
			if !c.got {
				settled(false) // the session did not get as far as ready
			}
			settled = nil
		}
		c.closeSocket()
		stop := c.stop.Load()
		if ctx.Err() != nil || stop == stopOnEnd {
			c.state.Store(stClosed)
			return
		}
		if !c.everReady {
			// An initial connection failure is counted, not retried.
			r.errs.add(classify("connect", err), err)
			c.state.Store(stClosed)
			return
		}
		c.state.Store(stAway)
		switch stop {
		case stopChurn:
			c.state.Store(stClosed)
			return
		case stopDrop:
			c.stop.Store(stopNone)
			if !sleepCtx(ctx, r.cfg.ReconnectDelay) {
				c.state.Store(stClosed)
				return
			}
		default:
			if recovering && !c.gotReady() {
				r.errs.add(classify("reconnect", err), err)
			} else {
				r.errs.add(classify("dropped", err), err)
			}
			var de *disconnectError
			if errors.As(err, &de) && !de.reconnect && de.code >= 3500 {
				c.state.Store(stClosed) // terminal: do not come back
				return
			}
			jitter := time.Duration(rand.Int64N(int64(backoff)))
			if !sleepCtx(ctx, backoff+jitter) {
				c.state.Store(stClosed)
				return
			}
			backoff = min(backoff*2, 5*time.Second)
		}
		recovering = true
		c.reconnects++
		r.reconnects.Add(1)
	}
}

func (c *conn) gotReady() bool { return c.got }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// session dials, connects, subscribes and then reads until the socket fails.
func (c *conn) session(ctx context.Context, recovering bool, settled func(bool)) error {
	r := c.r
	c.state.Store(stConnecting)
	c.got = false
	t0 := time.Now()
	dctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	nc, br, _, err := r.dialer.Dial(dctx, c.url)
	cancel()
	if err != nil {
		return fmt.Errorf("dialing: %w", err)
	}
	var pre *bytes.Reader
	if br != nil && br.Buffered() > 0 {
		// The server wrote right after the handshake: keep those bytes.
		b := make([]byte, br.Buffered())
		_, _ = io.ReadFull(br, b)
		ws.PutReader(br)
		pre = bytes.NewReader(b)
		c.resetReader(io.MultiReader(pre, nc))
	} else {
		if br != nil {
			ws.PutReader(br)
		}
		c.resetReader(nc)
	}
	c.mu.Lock()
	c.nc = nc
	c.nextID = 0
	c.pending = c.pending[:0]
	c.mu.Unlock()
	if c.stop.Load() != stopNone || ctx.Err() != nil {
		return errors.New("stopped")
	}
	// Close the socket when the run ends, which unblocks the reader (or
	// shut it down, which ends the session in its reactor).
	stopWatch := context.AfterFunc(ctx, func() { c.kill(stopNone, false) })
	defer stopWatch()

	_ = nc.SetDeadline(time.Now().Add(r.cfg.Timeout))

	// connect
	var subs []subPosition
	if r.cfg.ServerSide && c.sub != nil && recovering && c.sub.tr.started {
		subs = []subPosition{{Channel: c.sub.name, Recover: true, Offset: c.sub.tr.last, Epoch: c.sub.epoch}}
	}
	var cres connectResult
	if err := c.request(func(b []byte, id uint32) []byte { return appendConnect(b, id, c.token, subs) },
		func(m *serverMsg) error {
			if m.hasErr {
				return &replyError{"connect", m.errCode, string(m.errMsg)}
			}
			if err := json.Unmarshal(m.result, &cres); err != nil {
				return fmt.Errorf("decoding connect reply: %w", err)
			}
			if r.cfg.ServerSide && c.sub != nil {
				sr, ok := cres.Subs[c.sub.name]
				if !ok {
					return fmt.Errorf("connect reply lacks server-side subscription %q", c.sub.name)
				}
				return c.subscribed(&sr, recovering)
			}
			return nil
		}); err != nil {
		return err
	}
	r.connectLat.Record(c.idx, time.Since(t0).Nanoseconds())

	// subscribe
	if !r.cfg.ServerSide && c.sub != nil {
		t1 := time.Now()
		pos := subPosition{Channel: c.sub.name}
		if recovering && c.sub.tr.started {
			pos.Recover, pos.Offset, pos.Epoch = true, c.sub.tr.last, c.sub.epoch
		}
		if err := c.request(func(b []byte, id uint32) []byte { return appendSubscribe(b, id, pos) },
			func(m *serverMsg) error {
				if m.hasErr {
					return &replyError{"subscribe", m.errCode, string(m.errMsg)}
				}
				var sr subscribeResult
				if err := json.Unmarshal(m.result, &sr); err != nil {
					return fmt.Errorf("decoding subscribe reply: %w", err)
				}
				return c.subscribed(&sr, recovering)
			}); err != nil {
			return err
		}
		r.subscribeLat.Record(c.idx, time.Since(t1).Nanoseconds())
	}
	_ = nc.SetDeadline(time.Time{})
	c.everReady, c.got = true, true
	c.state.Store(stReady)
	if settled != nil {
		settled(true)
	}
	if recovering {
		r.resubscribed.Add(1)
	}
	if r.reactors != nil {
		if handed, err := c.handOver(nc, pre); handed {
			return err
		}
		// Not a plain TCP socket (wss://): read in this goroutine.
	}
	// read loop
	for {
		frame, err := c.readFrame()
		if err != nil {
			return err
		}
		if err := c.handleFrame(frame); err != nil {
			return err
		}
		if cap(c.rbuf) > 64<<10 {
			c.rbuf = nil // do not keep a rare large frame's buffer
		}
	}
}

// resetReader points the connection's bufio reader at rd (allocating it
// again when the epoll reader released it at the last handover).
func (c *conn) resetReader(rd io.Reader) {
	if c.br == nil {
		c.br = bufio.NewReaderSize(rd, readBufferSize)
	} else {
		c.br.Reset(rd)
	}
}

// subscribed applies a subscribe result (or a connect reply's subs entry).
func (c *conn) subscribed(sr *subscribeResult, recovering bool) error {
	r, s := c.r, c.sub
	if recovering && s.tr.started {
		if sr.Epoch != s.epoch {
			// Includes "" -> X: a server that gave no epoch at subscribe
			// cannot recover that subscription later.
			r.epochChanged.Add(1)
		}
		if sr.Recovered {
			r.recovered.Add(1)
		} else {
			r.notRecovered.Add(1)
		}
		for _, raw := range sr.Publications {
			off, _, _, err := decodePublication(raw)
			if err != nil {
				return err
			}
			c.deliver(off, 0, false, false)
		}
		return nil
	}
	s.epoch = sr.Epoch
	s.tr.begin(sr.Offset)
	s.preRun = !r.publishing.Load()
	// A fresh subscription may also carry publications (recover requested
	// without a position): count them like pushes.
	for _, raw := range sr.Publications {
		off, _, _, err := decodePublication(raw)
		if err != nil {
			return err
		}
		c.deliver(off, 0, false, false)
	}
	return nil
}

// request sends a command built by build and reads frames until its reply,
// which onReply handles before any later message of the same frame.
func (c *conn) request(build func(b []byte, id uint32) []byte, onReply func(*serverMsg) error) error {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	err := c.sendLocked(build(c.beginFrame(), id))
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	c.await, c.onRep = id, onReply
	defer func() { c.await, c.onRep = 0, nil }()
	for {
		frame, err := c.readFrame()
		if err != nil {
			return fmt.Errorf("waiting for reply: %w", err)
		}
		if err := c.handleFrame(frame); err != nil {
			return err
		}
		if c.onRep == nil {
			return nil
		}
	}
}

// beginFrame returns the write buffer with room reserved for the header.
// Caller holds mu.
func (c *conn) beginFrame() []byte {
	if cap(c.wbuf) < maxHeader+256 {
		c.wbuf = make([]byte, maxHeader, maxHeader+256)
	}
	return c.wbuf[:maxHeader]
}

// sendLocked masks the payload after the reserved header space, writes the
// header in front of it and sends the frame in one write. Caller holds mu.
func (c *conn) sendLocked(b []byte) error {
	c.wbuf = b[:0]
	if !c.openLocked() {
		return errNotReady
	}
	payload := b[maxHeader:]
	h := ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
	hs := ws.HeaderSize(h)
	c.hw.dst = b[maxHeader-hs : maxHeader]
	var scratch [maxHeader]byte
	if err := ws.WriteHeaderBuffer(&c.hw, h, scratch[:]); err != nil {
		return err
	}
	ws.Cipher(payload, h.Mask, 0)
	return c.writeLocked(b[maxHeader-hs:], c.r.cfg.Timeout)
}

// openLocked says whether the connection has a socket to write to. Caller
// holds mu.
func (c *conn) openLocked() bool { return c.nc != nil || c.sock >= 0 }

// writeLocked writes b within timeout: through nc until the handover to a
// reactor, then to the raw socket (non-blocking, waiting for room with
// poll). Caller holds mu.
func (c *conn) writeLocked(b []byte, timeout time.Duration) error {
	switch {
	case c.nc != nil:
		_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
		_, err := c.nc.Write(b)
		return err
	case c.sock >= 0:
		return writeSock(c.sock, b, timeout)
	}
	return errNotReady
}

// publish sends one publication to channel ch (index) stamped with now.
func (c *conn) publish(ch int, now int64) error {
	r := c.r
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() != stReady || !c.openLocked() {
		return errNotReady
	}
	if len(c.pending) >= maxPending {
		return errors.New("too many publishes awaiting a reply")
	}
	c.nextID++
	id := c.nextID
	if err := c.sendLocked(appendPublish(c.beginFrame(), id, r.channels[ch], now, r.pad)); err != nil {
		return err
	}
	c.pending = append(c.pending, pendingPub{id: id, ch: int32(ch), sent: now})
	c.published.Add(1)
	return nil
}

// maxPending bounds the publishes in flight on one connection.
const maxPending = 4096

// pong answers a server ping.
func (c *conn) pong() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := append(c.beginFrame(), '{', '}')
	return c.sendLocked(b)
}

func (c *conn) closeSocket() {
	c.mu.Lock()
	if c.nc != nil {
		_ = c.nc.Close()
		c.nc = nil
	}
	// Publishes never answered are neither acked nor lost: count them.
	if n := len(c.pending); n > 0 {
		c.r.unacked.Add(uint64(n))
		c.pending = c.pending[:0]
	}
	c.mu.Unlock()
}

// kill closes the socket from another goroutine (drop, churn, end, the
// run's context) so the reader returns; why says what run does next.
// stopNone (a failed write) never replaces a reason already given. After
// the handover to a reactor the socket is only shut down: the reactor sees
// the end, closes the socket (it alone, so that no other goroutine can
// close a descriptor number it may still use) and reports to the session.
func (c *conn) kill(why int32, polite bool) {
	if why != stopNone {
		c.stop.Store(why)
	}
	c.mu.Lock()
	if c.nc != nil || c.sock >= 0 {
		if polite {
			_ = c.writeLocked(closeFrame, 100*time.Millisecond)
		}
		if c.nc != nil {
			_ = c.nc.Close()
		} else {
			c.shut.Store(true)
			shutdownSock(c.sock)
		}
	}
	c.mu.Unlock()
}

// closeFrame is a masked close frame with status 1000.
var closeFrame = func() []byte {
	var buf bytes.Buffer
	f := ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
	_ = ws.WriteFrame(&buf, f)
	return buf.Bytes()
}()

// readFrame reads one complete data message (joining fragments), answering
// control frames on the way. The returned slice is valid until the next call.
func (c *conn) readFrame() ([]byte, error) {
	c.rbuf = c.rbuf[:0]
	max := c.r.cfg.MaxFrame
	for {
		h, err := ws.ReadHeaderBuffer(c.br, c.hbuf[:])
		if err != nil {
			return nil, err
		}
		if h.OpCode.IsControl() {
			if h.Length > int64(len(c.ctrl)) || !h.Fin {
				return nil, ws.ErrProtocolControlPayloadOverflow
			}
			p := c.ctrl[:h.Length]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return nil, err
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPing:
				if err := c.writeControl(ws.OpPong, p); err != nil {
					return nil, err
				}
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(p)
				_ = c.writeControl(ws.OpClose, p[:min(len(p), 2)])
				return nil, &disconnectError{code: uint32(code), reason: reason, reconnect: code < 3500}
			}
			continue
		}
		n := int64(len(c.rbuf))
		if n+h.Length > max {
			return nil, errFrameLarge
		}
		if int64(cap(c.rbuf)) < n+h.Length {
			nb := make([]byte, n, n+h.Length+512)
			copy(nb, c.rbuf)
			c.rbuf = nb
		}
		c.rbuf = c.rbuf[:n+h.Length]
		if _, err := io.ReadFull(c.br, c.rbuf[n:]); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(c.rbuf[n:], h.Mask, 0)
		}
		if h.Fin {
			return c.rbuf, nil
		}
	}
}

func (c *conn) writeControl(op ws.OpCode, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.openLocked() {
		return errNotReady
	}
	var buf [maxHeader + 125]byte
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	hs := ws.HeaderSize(h)
	c.hw.dst = buf[:hs]
	var scratch [maxHeader]byte
	if err := ws.WriteHeaderBuffer(&c.hw, h, scratch[:]); err != nil {
		return err
	}
	n := copy(buf[hs:], p)
	ws.Cipher(buf[hs:hs+n], h.Mask, 0)
	return c.writeLocked(buf[:hs+n], c.r.cfg.Timeout)
}

// handleFrame handles every "\n"-separated message of a text frame.
func (c *conn) handleFrame(frame []byte) error {
	var m serverMsg
	for len(frame) > 0 {
		var line []byte
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			line, frame = frame, nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := scanServerMsg(line, &m); err != nil {
			c.r.malformed.Add(1)
			continue
		}
		switch m.kind {
		case msgPing:
			if err := c.pong(); err != nil {
				return err
			}
		case msgPub:
			c.onPub(&m)
		case msgDisconnect:
			return &disconnectError{code: m.errCode, reason: string(m.errMsg), reconnect: m.reconnect || m.errCode < 3500}
		case msgUnsub:
			if c.sub != nil && c.matches(&m) {
				c.sub.ended = true
				c.r.serverUnsubs.Add(1)
			}
		case msgReply:
			if m.id != 0 && m.id == c.await && c.onRep != nil {
				fn := c.onRep
				c.onRep = nil
				// A copy: m itself must not escape (it would be allocated
				// for every frame); only a reply to a request allocates.
				rep := m
				if err := fn(&rep); err != nil {
					return err
				}
				continue
			}
			c.onAck(&m)
		}
	}
	return nil
}

func (c *conn) matches(m *serverMsg) bool {
	if m.chanEsc {
		return unquote(m.channel) == c.sub.name
	}
	return string(m.channel) == c.sub.name
}

// onPub handles a live publication push.
func (c *conn) onPub(m *serverMsg) {
	r := c.r
	if c.sub == nil || !c.matches(m) {
		r.unexpectedPubs.Add(1)
		return
	}
	if n := r.plan.DropNth; n > 0 && r.liveSeq.Add(1) == n {
		r.droppedByHook.Add(1)
		return // test hook: pretend this delivery never arrived
	}
	c.deliver(m.offset, m.t, m.hasT, true)
}

// deliver accounts one publication received by the subscription.
func (c *conn) deliver(offset uint64, t int64, hasT, live bool) {
	r, s := c.r, c.sub
	c.delivered.Add(1)
	if !live {
		r.recoveredPubs.Add(1)
	}
	if offset == 0 {
		r.noOffset.Add(1)
	} else if !s.tr.started {
		r.beforeSubscribe.Add(1)
	} else {
		s.tr.observe(offset)
	}
	if hasT && live {
		if wst, wen := r.windowStart.Load(), r.windowEnd.Load(); wst != 0 && t >= wst && t < wen {
			r.e2eLat.Record(c.idx, time.Now().UnixNano()-t)
		}
	}
}

// onAck handles a reply that may answer a publish.
func (c *conn) onAck(m *serverMsg) {
	r := c.r
	now := time.Now().UnixNano()
	c.mu.Lock()
	var p pendingPub
	found := false
	for i := range c.pending {
		if c.pending[i].id == m.id {
			p, found = c.pending[i], true
			last := len(c.pending) - 1
			c.pending[i] = c.pending[last]
			c.pending = c.pending[:last]
			break
		}
	}
	c.mu.Unlock()
	if !found {
		return
	}
	if m.hasErr {
		r.errs.add(fmt.Sprintf("publish error %d", m.errCode), &replyError{"publish", m.errCode, string(m.errMsg)})
		r.pubErrors.Add(1)
		return
	}
	r.acked.Add(1)
	r.ackedPerChan[p.ch].Add(1)
	if wst, wen := r.windowStart.Load(), r.windowEnd.Load(); wst != 0 && p.sent >= wst && p.sent < wen {
		r.ackLat.Record(c.idx, now-p.sent)
	}
}

// classify names the kind of a connection failure for the error counters.
func classify(stage string, err error) string {
	var (
		re *replyError
		de *disconnectError
		se ws.StatusError
		ne net.Error
	)
	switch {
	case err == nil:
		return stage
	case errors.As(err, &re):
		return fmt.Sprintf("%s: %s rejected (%d)", stage, re.method, re.code)
	case errors.As(err, &de):
		return fmt.Sprintf("%s: server disconnect %d", stage, de.code)
	case errors.As(err, &se):
		return fmt.Sprintf("%s: handshake HTTP %d", stage, int(se))
	case errors.Is(err, errFrameLarge):
		return stage + ": frame too large"
	case errors.As(err, &ne) && ne.Timeout():
		return stage + ": timeout"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
		return stage + ": closed by server"
	default:
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			return stage + ": dial failed"
		}
		return stage + ": i/o error"
	}
}
