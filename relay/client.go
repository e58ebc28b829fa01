package relay

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/protocol"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// connState is the lifecycle of one client connection.
type connState uint8

const (
	stateHTTP       connState = iota // waiting for the upgrade request
	stateWS                          // upgraded, waiting for connect
	stateConnecting                  // connect accepted, server-side subs being positioned
	stateConnected
	stateClosing // close frame sent, gnet close pending
	stateClosed
)

// Disconnects the relay issues (Centrifugo codes).
var (
	discStale      = protocol.DisconnectStale
	discExpired    = protocol.DisconnectExpired
	discNoPong     = protocol.DisconnectNoPong
	discBadRequest = protocol.DisconnectBadRequest
)

// client is the per-connection state. It is owned by its event loop; it
// holds no buffers while idle (frag only during a fragmented message, iov
// only between queueing and the flush of the same loop event).
type client struct {
	c     gnet.Conn
	l     *loop
	state connState

	deadline     int64 // unix ns: end of handshake (stateHTTP, stateWS)
	nextPing     int64 // unix ns
	pongDeadline int64 // unix ns, 0 = no ping outstanding
	expiresAt    int64 // unix ns, 0 = token does not expire
	closeCode    uint16

	fragging bool
	fragOp   byte
	frag     []byte

	id      string
	claims  *auth.Claims
	token   string
	subs    map[string]*subscription
	connect *connectOp

	iov      [][]byte
	iovBytes int
}

// subState is the lifecycle of one subscription.
type subState uint8

const (
	subWaitSync   subState = iota // channel entry not yet positioned
	subRecovering                 // fetching missed publications
	subResolved                   // positioned; waiting for the connect reply
	subLive                       // receives pushes
)

// subscription is one channel of one client, owned by the client's loop.
type subscription struct {
	ch      string
	server  bool // from the token's channels (connect)
	state   subState
	last    uint64 // last seq sent (or positioned at)
	epoch   string
	pending []pendingPush // pushes that arrived before the subscription went live

	recover   bool
	reqOffset uint64
	reqEpoch  string
	cmdID     uint32
	result    protocol.SubscribeResult
}

type pendingPush struct {
	seq   uint64
	frame []byte
}

type connectOp struct {
	id        uint32
	remaining int
	order     []string
	result    protocol.ConnectResult
}

var (
	errStop       = errors.New("connection closing")
	errBadRequest = errors.New("bad request")
)

// onTraffic consumes every complete upgrade request and frame in the inbound
// buffer (gnet does not call again for leftovers).
func (cl *client) onTraffic() {
	l := cl.l
	srv := l.srv
	c := cl.c
	if cl.state >= stateClosing {
		_, _ = c.Discard(-1)
		return
	}
	buf, _ := c.Peek(-1)
	consumed := 0
	if cl.state == stateHTTP {
		end := endOfHeaders(buf[:min(len(buf), srv.cfg.MaxHeaderSize+len(headerEnd))])
		if end < 0 {
			if len(buf) > srv.cfg.MaxHeaderSize {
				_, _ = c.Write([]byte("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
				cl.state = stateClosing
				_ = c.Close()
			}
			return
		}
		resp, ok := upgrade(buf[:end], wsPath, srv.cfg.MaxHeaderSize)
		_, _ = c.Write(resp)
		consumed = end
		if !ok {
			_, _ = c.Discard(-1)
			cl.state = stateClosing
			_ = c.Close()
			return
		}
		cl.state = stateWS
		cl.deadline = time.Now().Add(srv.cfg.HandshakeTimeout).UnixNano()
	}
	maxMsg := uint64(srv.cfg.MaxMessageSize)
	frames := 0
	for cl.state < stateClosing {
		h, err := parseFrameHeader(buf[consumed:])
		if err != nil {
			break // incomplete header
		}
		if h.rsv != 0 || !h.masked || !validOp(h.op) || (h.op >= opClose && (!h.fin || h.length > 125)) {
			cl.closeWS(closeProtocolError, "protocol error")
			break
		}
		if h.length > maxMsg {
			cl.closeWS(closeTooBig, "message too big")
			break
		}
		total := h.size + int(h.length)
		if len(buf)-consumed < total {
			break // partial frame: wait for more
		}
		payload := buf[consumed+h.size : consumed+total]
		ws.Cipher(payload, h.mask, 0)
		consumed += total
		frames++
		cl.onFrame(h, payload)
	}
	if cl.state >= stateClosing {
		consumed = -1 // drop everything
	}
	// gnet's Discard(n <= 0) drops the whole buffer: only call it with a
	// positive count, or to drop everything.
	if consumed != 0 {
		n, _ := c.Discard(consumed)
		srv.m.bytesIn.Add(float64(n))
	}
	srv.m.framesIn.Add(float64(frames))
	l.flush()
}

func validOp(op byte) bool {
	switch op {
	case opContinuation, opText, opBinary, opClose, opPing, opPong:
		return true
	}
	return false
}

func (cl *client) onFrame(h frameHeader, payload []byte) {
	maxMsg := cl.l.srv.cfg.MaxMessageSize
	switch h.op {
	case opPing:
		cl.enqueueFrame(opPong, payload)
	case opPong:
	case opClose:
		code := closeNormal
		if len(payload) >= 2 {
			code = binary.BigEndian.Uint16(payload)
		}
		cl.closeWS(code, "")
	case opText, opBinary:
		if cl.fragging {
			cl.closeWS(closeProtocolError, "expected continuation")
			return
		}
		if !h.fin {
			cl.fragging, cl.fragOp = true, h.op
			cl.frag = append(make([]byte, 0, len(payload)*2), payload...)
			return
		}
		cl.onMessage(h.op, payload)
	case opContinuation:
		if !cl.fragging {
			cl.closeWS(closeProtocolError, "unexpected continuation")
			return
		}
		if len(cl.frag)+len(payload) > maxMsg {
			cl.frag = nil
			cl.closeWS(closeTooBig, "message too big")
			return
		}
		cl.frag = append(cl.frag, payload...)
		if h.fin {
			msg, op := cl.frag, cl.fragOp
			cl.frag, cl.fragging = nil, false
			cl.onMessage(op, msg)
		}
	}
}

func (cl *client) onMessage(op byte, data []byte) {
	if op == opText && !utf8.Valid(data) {
		cl.closeWS(closeInvalidData, "invalid UTF-8")
		return
	}
	err := protocol.DecodeCommands(data, cl.handleCommand)
	if err != nil && !errors.Is(err, errStop) {
		cl.disconnect(discBadRequest)
	}
}

func (cl *client) handleCommand(cmd *protocol.Command) error {
	if cl.state >= stateClosing {
		return errStop
	}
	m := cmd.Method()
	if m == protocol.MethodConnect {
		return cl.handleConnect(cmd.ID, cmd.Connect)
	}
	if cl.state != stateConnected {
		return errBadRequest
	}
	switch m {
	case protocol.MethodEmpty:
		if cmd.ID > 0 {
			cl.replyError(cmd.ID, protocol.ErrMethodNotFound)
			return nil
		}
		cl.pongDeadline = 0
	case protocol.MethodPing:
		cl.replyEmpty(cmd.ID, "ping")
	case protocol.MethodSubscribe:
		cl.handleSubscribe(cmd.ID, cmd.Subscribe)
	case protocol.MethodUnsubscribe:
		if sub := cl.subs[cmd.Unsubscribe.Channel]; sub != nil && !sub.server {
			cl.l.removeSub(cl, sub)
		}
		cl.replyEmpty(cmd.ID, "unsubscribe")
	case protocol.MethodPublish:
		cl.handlePublish(cmd.ID, cmd.Publish)
	case protocol.MethodHistory:
		cl.handleHistory(cmd.ID, cmd.History)
	case protocol.MethodRefresh:
		return cl.handleRefresh(cmd.ID, cmd.Refresh)
	default:
		cl.replyError(cmd.ID, protocol.ErrNotAvailable)
	}
	return nil
}

func (cl *client) handleConnect(id uint32, req *protocol.ConnectRequest) error {
	srv := cl.l.srv
	if cl.state != stateWS {
		return errBadRequest
	}
	claims, err := srv.verifier.Verify(req.Token)
	if errors.Is(err, auth.ErrExpired) {
		cl.replyError(id, protocol.ErrTokenExpired)
		return nil
	}
	if err != nil {
		cl.disconnect(protocol.DisconnectInvalidToken)
		return errStop
	}
	cl.claims, cl.token = claims, req.Token
	cl.id = newUUID()
	op := &connectOp{id: id, result: protocol.ConnectResult{
		Client:  cl.id,
		Version: Version,
		Ping:    uint32(srv.cfg.PingInterval / time.Second),
		Pong:    true,
	}}
	cl.setExpiry(claims, &op.result.Expires, &op.result.TTL)
	seen := make(map[string]struct{}, len(claims.Channels))
	for _, ch := range claims.Channels {
		if _, dup := seen[ch]; dup || !validChannel(ch) || len(op.order) >= srv.cfg.MaxSubscriptions {
			continue
		}
		seen[ch] = struct{}{}
		op.order = append(op.order, ch)
	}
	op.remaining = len(op.order)
	cl.connect = op
	cl.state = stateConnecting
	cl.subs = make(map[string]*subscription, len(op.order))
	if op.remaining == 0 {
		cl.finishConnect()
		return nil
	}
	for _, ch := range op.order {
		sub := &subscription{ch: ch, server: true}
		if r := req.Subs[ch]; r != nil && r.Recover {
			sub.recover, sub.reqOffset, sub.reqEpoch = true, r.Offset, r.Epoch
		}
		cl.startSub(sub)
		if cl.state >= stateClosing {
			return errStop
		}
	}
	return nil
}

func (cl *client) setExpiry(claims *auth.Claims, expires *bool, ttl *uint32) {
	cl.expiresAt = 0
	if exp := claims.ExpiresAt(); !exp.IsZero() {
		cl.expiresAt = exp.UnixNano()
		*expires = true
		*ttl = uint32(max(time.Until(exp)/time.Second, 1))
	}
}

func (cl *client) finishConnect() {
	op := cl.connect
	cl.connect = nil
	srv := cl.l.srv
	if len(op.order) > 0 {
		op.result.Subs = make(map[string]*protocol.SubscribeResult, len(op.order))
		for _, ch := range op.order {
			if sub := cl.subs[ch]; sub != nil {
				op.result.Subs[ch] = &sub.result
			}
		}
	}
	cl.l.scratch = protocol.AppendConnectReply(cl.l.scratch[:0], op.id, &op.result, op.order)
	cl.enqueueJSON(cl.l.scratch)
	cl.state = stateConnected
	cl.nextPing = time.Now().Add(srv.cfg.PingInterval).UnixNano()
	srv.m.connects.Inc()
	for _, ch := range op.order {
		if sub := cl.subs[ch]; sub != nil {
			sub.result = protocol.SubscribeResult{}
			cl.goLive(sub)
		}
	}
}

func validChannel(ch string) bool { return ch != "" && len(ch) <= 255 && utf8.ValidString(ch) }

func (cl *client) handleSubscribe(id uint32, req *protocol.SubscribeRequest) {
	srv := cl.l.srv
	ch := req.Channel
	if !validChannel(ch) {
		cl.replyError(id, protocol.ErrBadRequest)
		return
	}
	if cl.subs[ch] != nil {
		cl.replyError(id, protocol.ErrAlreadySubscribed)
		return
	}
	if len(cl.subs) >= srv.cfg.MaxSubscriptions {
		cl.replyError(id, protocol.ErrLimitExceeded)
		return
	}
	if req.Token != "" {
		if _, err := srv.verifier.VerifySubscription(req.Token, cl.claims.Subject, ch); err != nil {
			if errors.Is(err, auth.ErrExpired) {
				cl.replyError(id, protocol.ErrTokenExpired)
			} else {
				cl.replyError(id, protocol.ErrPermissionDenied)
			}
			return
		}
	} else if !cl.claims.Allows(ch, auth.AllowSubscribe) {
		cl.replyError(id, protocol.ErrPermissionDenied)
		return
	}
	cl.startSub(&subscription{ch: ch, cmdID: id, recover: req.Recover, reqOffset: req.Offset, reqEpoch: req.Epoch})
}

// startSub registers sub locally and with the router and positions it now
// when the channel is synced, else when the router reports it ready.
func (cl *client) startSub(sub *subscription) {
	l := cl.l
	l.addSub(cl, sub)
	epoch, last, synced := l.srv.router.join(sub.ch, l.idx)
	if synced {
		cl.position(sub, epoch, last)
	}
}

// position decides the subscription's start: the channel's current top, or
// the client's position plus the recovered publications.
func (cl *client) position(sub *subscription, epoch string, last uint64) {
	sub.epoch = epoch
	if sub.recover && epoch == sub.reqEpoch && sub.reqOffset < last {
		sub.state = subRecovering
		l, srv := cl.l, cl.l.srv
		since := sub.reqOffset
		ok := srv.pool.trySubmit(func() {
			pubs, ok := srv.recoverRange(srv.bg, sub.ch, since, epoch, last)
			l.execute(func() {
				if cl.state >= stateClosing || cl.subs[sub.ch] != sub {
					return
				}
				cl.resolve(sub, last, ok, pubs)
			})
		})
		if !ok {
			cl.resolve(sub, last, false, nil)
		}
		return
	}
	recovered := sub.recover && epoch == sub.reqEpoch && sub.reqOffset == last
	cl.resolve(sub, last, recovered, nil)
}

func (cl *client) resolve(sub *subscription, last uint64, recovered bool, pubs []*heraldv1.Publication) {
	sub.last = last
	sub.state = subResolved
	sub.result = protocol.SubscribeResult{
		Recoverable: true,
		Positioned:  true,
		Epoch:       sub.epoch,
		Offset:      last,
		Recovered:   recovered,
		WasRecover:  sub.recover,
	}
	if len(pubs) > 0 {
		sub.result.Publications = make([]protocol.Publication, 0, len(pubs))
		for _, p := range pubs {
			sub.result.Publications = append(sub.result.Publications, toProtoPub(p))
		}
	}
	if sub.server {
		if op := cl.connect; op != nil {
			if op.remaining--; op.remaining == 0 {
				cl.finishConnect()
			}
		}
		return
	}
	cl.l.scratch = protocol.AppendSubscribeReply(cl.l.scratch[:0], sub.cmdID, &sub.result)
	cl.enqueueJSON(cl.l.scratch)
	sub.result = protocol.SubscribeResult{}
	cl.goLive(sub)
}

// goLive sends the pushes buffered while sub was being positioned and makes
// it receive pushes directly.
func (cl *client) goLive(sub *subscription) {
	sub.state = subLive
	for i, p := range sub.pending {
		if p.seq > sub.last {
			sub.last = p.seq
			cl.enqueue(p.frame)
		}
		sub.pending[i].frame = nil
	}
	sub.pending = nil
}

// failSub ends a subscription whose channel could not be positioned.
func (cl *client) failSub(sub *subscription) {
	if sub.server {
		cl.disconnect(protocol.DisconnectServerError)
		return
	}
	cl.replyError(sub.cmdID, protocol.ErrInternal)
	cl.l.removeSub(cl, sub)
}

func toProtoPub(p *heraldv1.Publication) protocol.Publication {
	out := protocol.Publication{Offset: p.GetSeq()}
	if m := p.GetMessage(); m != nil {
		out.Data = m.GetData()
		out.Info = &protocol.ClientInfo{User: m.GetSender(), ConnInfo: m.GetInfo()}
	}
	return out
}

func (cl *client) handleRefresh(id uint32, req *protocol.RefreshRequest) error {
	srv := cl.l.srv
	claims, err := srv.verifier.Verify(req.Token)
	if errors.Is(err, auth.ErrExpired) {
		cl.replyError(id, protocol.ErrTokenExpired)
		return nil
	}
	if err != nil || claims.Subject != cl.claims.Subject {
		cl.disconnect(protocol.DisconnectInvalidToken)
		return errStop
	}
	cl.claims, cl.token = claims, req.Token
	res := protocol.RefreshResult{Client: cl.id, Version: Version}
	cl.setExpiry(claims, &res.Expires, &res.TTL)
	cl.l.scratch = protocol.AppendRefreshReply(cl.l.scratch[:0], id, &res)
	cl.enqueueJSON(cl.l.scratch)
	return nil
}

func (cl *client) handlePublish(id uint32, req *protocol.PublishRequest) {
	srv := cl.l.srv
	ch := req.Channel
	if !validChannel(ch) || len(req.Data) == 0 || !json.Valid(req.Data) {
		cl.replyError(id, protocol.ErrBadRequest)
		return
	}
	if !cl.claims.HasChannel(ch) && !cl.claims.Allows(ch, auth.AllowPublish) {
		cl.replyError(id, protocol.ErrPermissionDenied)
		return
	}
	l := cl.l
	srv.publish(ch, cl.claims.Subject, cl.claims.Info, req.Data, func(err error) {
		l.execute(func() {
			if cl.state >= stateClosing {
				return
			}
			if err != nil {
				cl.replyError(id, errPublishFailed)
				return
			}
			cl.replyEmpty(id, "publish")
		})
	})
}

var errPublishFailed = &protocol.Error{Code: protocol.ErrInternal.Code, Message: "internal server error: publish not acknowledged", Temporary: true}

func (cl *client) handleHistory(id uint32, req *protocol.HistoryRequest) {
	srv := cl.l.srv
	ch := req.Channel
	if !validChannel(ch) {
		cl.replyError(id, protocol.ErrBadRequest)
		return
	}
	if !cl.claims.HasChannel(ch) && !cl.claims.Allows(ch, auth.AllowHistory) {
		cl.replyError(id, protocol.ErrPermissionDenied)
		return
	}
	l, token, r := cl.l, cl.token, *req
	ok := srv.pool.trySubmit(func() {
		res, perr := srv.history(token, &r)
		l.execute(func() {
			if cl.state >= stateClosing {
				return
			}
			if perr != nil {
				cl.replyError(id, perr)
				return
			}
			l.scratch = protocol.AppendHistoryReply(l.scratch[:0], id, res)
			cl.enqueueJSON(l.scratch)
		})
	})
	if !ok {
		cl.replyError(id, protocol.ErrTooManyRequests)
	}
}

// --- writing -------------------------------------------------------------

// enqueue queues a complete frame (shared, immutable) for the loop's flush.
func (cl *client) enqueue(frame []byte) {
	if cl.state >= stateClosing {
		return
	}
	if len(cl.iov) == 0 {
		cl.l.touched = append(cl.l.touched, cl)
		if cl.iov == nil {
			cl.iov = cl.l.getIOV()
		}
	}
	cl.iov = append(cl.iov, frame)
	cl.iovBytes += len(frame)
}

// enqueueFrame copies payload into a frame of op in the loop arena and
// queues it.
func (cl *client) enqueueFrame(op byte, payload []byte) {
	hs := headerSize(len(payload))
	f := cl.l.arena.alloc(hs + len(payload))
	putHeader(f[:hs], op, len(payload))
	copy(f[hs:], payload)
	cl.enqueue(f)
}

func (cl *client) enqueueJSON(b []byte) { cl.enqueueFrame(opText, b) }

func (cl *client) replyError(id uint32, e *protocol.Error) {
	cl.l.scratch = protocol.AppendError(cl.l.scratch[:0], id, e)
	cl.enqueueJSON(cl.l.scratch)
}

func (cl *client) replyEmpty(id uint32, method string) {
	cl.l.scratch = protocol.AppendEmptyReply(cl.l.scratch[:0], id, method)
	cl.enqueueJSON(cl.l.scratch)
}

// flush writes the queued frames with one writev, or disconnects the client
// as slow when its unsent bytes would exceed the outbound cap.
func (cl *client) flush() {
	if len(cl.iov) == 0 {
		return
	}
	srv := cl.l.srv
	if cl.state >= stateClosing {
		cl.clearIOV()
		return
	}
	if cl.c.OutboundBuffered()+cl.iovBytes > srv.cfg.OutboundCap {
		cl.clearIOV()
		srv.m.slowDisconnects.Inc()
		cl.disconnect(protocol.DisconnectSlow)
		return
	}
	n, frames := cl.iovBytes, len(cl.iov)
	_, _ = cl.c.Writev(cl.iov)
	cl.clearIOV()
	srv.m.bytesOut.Add(float64(n))
	srv.m.framesOut.Add(float64(frames))
}

// clearIOV drops the queued frames and hands the slice back to the loop, so
// an idle client holds no write buffer.
func (cl *client) clearIOV() {
	if cl.iov != nil {
		clear(cl.iov)
		cl.l.putIOV(cl.iov[:0])
		cl.iov = nil
	}
	cl.iovBytes = 0
}

// disconnect closes the connection with a Centrifugo disconnect code.
func (cl *client) disconnect(d protocol.Disconnect) { cl.closeWS(d.Code, d.Reason) }

// closeWS flushes queued frames, sends a close frame and closes the
// connection (asynchronously, on this loop).
func (cl *client) closeWS(code uint16, reason string) {
	if cl.state >= stateClosing {
		return
	}
	cl.flush()
	if cl.state >= stateClosing { // flush found a slow consumer
		return
	}
	frame := appendFrame(nil, opClose, closePayload(code, reason))
	_, _ = cl.c.Write(frame)
	cl.state = stateClosing
	cl.closeCode = code
	_ = cl.c.Close()
}

func codeLabel(code uint16) string {
	if code == 0 {
		return "0"
	}
	return strconv.Itoa(int(code))
}
