package relay

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

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
	c gnet.Conn
	l *loop

	// The small fields share one word (the struct is in the 208-byte size
	// class; two more words would put every connection in the 224 class).
	state      connState
	closeCode  uint16
	lingering  bool // closed by the relay, waiting for the client (linger)
	halfClosed bool // end of stream sent
	deflate    bool // permessage-deflate negotiated
	// closeAfterPublishes: told to go while publishes were pending (see
	// publishing).
	closeAfterPublishes bool

	deadline     int64 // unix ns: end of handshake (stateHTTP, stateWS), of the linger (stateClosing)
	lastFrame    int64 // unix ns of the last complete frame (idle timeout)
	nextPing     int64 // unix ns
	pongDeadline int64 // unix ns, 0 = no ping outstanding
	expiresAt    int64 // unix ns: token exp + ExpiredCloseDelay, 0 = never
	subExpiry    int64 // unix ns: earliest expiresAt of the subscriptions, 0 = none

	// Publish rate limit: token bucket and rejections in the current window.
	pubTokens    float64
	pubLast      int64 // unix ns of the last refill, 0 = bucket not started
	rejectWindow int64 // unix ns start of the rejection window
	rejects      int32

	// publishing counts this client's publishes waiting for Kafka. A client
	// told to go (drain, shutdown) while some are pending is disconnected
	// once they are answered (closeAfterPublishes), so it learns the
	// outcome of every publish it made instead of "disconnected".
	publishing int32
	// wheelPos is the client's place in its loop's timer wheel: slot <<
	// wheelIdxBits | index in the slot (see wheel.go).
	wheelPos uint32
	// iovBytes is the size of the frames queued in iov (at most the
	// outbound cap, far below 2 GiB).
	iovBytes int32

	// frag is the fragmented message being reassembled, nil between
	// messages (most connections never send one): its state lives behind
	// a pointer so that it costs an idle connection 8 bytes, not 40.
	frag *fragment

	id     [16]byte // connection id (UUID v4), formatted when sent
	claims *identity
	subs   subList
	// connect is the connect in progress, kept after its reply while
	// commands pipelined behind it wait to be replayed (connectOp.early).
	connect *connectOp

	iov [][]byte
}

// fragment is a fragmented message being reassembled.
type fragment struct {
	buf  []byte
	utf8 int // bytes of buf validated as UTF-8 (uncompressed text)
	op   byte
	zip  bool // the message is compressed
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
// A live subscription is small: what it needs only while being positioned
// is in init, dropped when it goes live.
type subscription struct {
	ch     string // the router entry's string, shared by all subscribers
	cl     *client
	idx    int32 // index in its loop's channel subscriber list
	server bool  // from the token's channels (connect)
	state  subState
	// pres: the channel has presence and this subscription is a member
	// (presence.go); joinLeave: it gets join/leave pushes. Both live in
	// the padding after state: no byte more for any subscription.
	pres      bool
	joinLeave bool
	last      uint64 // last seq sent (or positioned at)

	// tokenExp is the subscription token's exp (unix ns, 0 = none); the
	// subscription expires ExpiredCloseDelay later. One per subscription
	// of every connection: what is needed only until it goes live is in
	// init (TestClientSizeClass keeps this in the 64-byte size class).
	tokenExp int64

	init *subInit // nil once live
}

// subInit is a subscription's state until it goes live.
type subInit struct {
	pending []pushRef // pushes that arrived before the subscription went live

	recover   bool
	reqOffset uint64
	reqEpoch  string
	epoch     string // the channel's epoch when positioned
	cmdID     uint32
	result    protocol.SubscribeResult
}

// subList is a client's subscriptions (few: a slice beats a map in size
// and speed).
type subList []*subscription

func (sl subList) get(ch string) *subscription {
	for _, s := range sl {
		if s.ch == ch {
			return s
		}
	}
	return nil
}

func (sl *subList) remove(sub *subscription) {
	s := *sl
	for i, x := range s {
		if x == sub {
			last := len(s) - 1
			s[i] = s[last]
			s[last] = nil
			*sl = s[:last]
			if len(*sl) == 0 {
				*sl = nil
			}
			return
		}
	}
}

type connectOp struct {
	id        uint32
	remaining int
	order     []string
	result    protocol.ConnectResult
	// early holds commands that arrived while connect was positioning the
	// server-side subscriptions; they run in order right after the connect
	// reply (clients may pipeline commands after connect). It lives here,
	// not in client, because few connections ever have any.
	early []byte
}

var (
	errStop       = errors.New("connection closing")
	errBadRequest = errors.New("bad request")
	errPause      = errors.New("connect in progress")
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
		resp, ok, deflate := upgrade(buf[:end], wsPath, srv.cfg.MaxHeaderSize, srv.cfg.AllowedOrigins, srv.cfg.Compression)
		_, _ = c.Write(resp)
		consumed = end
		if !ok {
			_, _ = c.Discard(-1)
			cl.state = stateClosing
			_ = c.Close()
			return
		}
		cl.state = stateWS
		cl.deflate = deflate
		now := time.Now()
		cl.deadline = now.Add(srv.cfg.HandshakeTimeout).UnixNano()
		cl.lastFrame = now.UnixNano()
		cl.l.reschedule(cl)
	}
	maxMsg := uint64(srv.cfg.MaxMessageSize)
	frames := 0
	for cl.state < stateClosing {
		h, err := parseFrameHeader(buf[consumed:])
		if err != nil {
			break // incomplete header
		}
		if !cl.validHeader(&h) {
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
	if frames > 0 {
		cl.lastFrame = time.Now().UnixNano()
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

// validHeader checks a client frame header against RFC 6455 (and RFC 7692
// when compression was negotiated): masked, known opcode, control frames
// unfragmented and at most 125 bytes, the length's top bit clear, RSV1 only
// on the first frame of a compressed message.
func (cl *client) validHeader(h *frameHeader) bool {
	if !h.masked || !validOp(h.op) || h.length>>63 != 0 {
		return false
	}
	if h.op >= opClose && (!h.fin || h.length > 125) {
		return false
	}
	switch h.rsv {
	case 0:
		return true
	case rsv1:
		return cl.deflate && (h.op == opText || h.op == opBinary)
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
		cl.onClose(payload)
	case opText, opBinary:
		if cl.frag != nil {
			cl.closeWS(closeProtocolError, "expected continuation")
			return
		}
		zip := h.rsv == rsv1
		if !h.fin {
			cl.frag = &fragment{buf: append(make([]byte, 0, len(payload)*2), payload...), op: h.op, zip: zip}
			cl.checkFragUTF8()
			return
		}
		if zip {
			cl.onCompressed(h.op, payload)
			return
		}
		if h.op == opText && !utf8.Valid(payload) {
			cl.closeWS(closeInvalidData, "invalid UTF-8")
			return
		}
		cl.onMessage(payload)
	case opContinuation:
		f := cl.frag
		if f == nil {
			cl.closeWS(closeProtocolError, "unexpected continuation")
			return
		}
		if len(f.buf)+len(payload) > maxMsg {
			cl.frag = nil
			cl.closeWS(closeTooBig, "message too big")
			return
		}
		f.buf = append(f.buf, payload...)
		if !cl.checkFragUTF8() {
			return
		}
		if h.fin {
			msg, op, zip := f.buf, f.op, f.zip
			cl.frag = nil
			if zip {
				cl.onCompressed(op, msg)
				return
			}
			if op == opText && f.utf8 != len(msg) {
				cl.closeWS(closeInvalidData, "invalid UTF-8")
				return
			}
			cl.onMessage(msg)
		}
	}
}

// checkFragUTF8 validates the new bytes of an uncompressed fragmented text
// message, so invalid UTF-8 fails the connection (1007) as soon as it is
// seen rather than when the message completes. It reports false after
// closing.
func (cl *client) checkFragUTF8() bool {
	f := cl.frag
	if f.op != opText || f.zip {
		return true
	}
	n, ok := validUTF8Prefix(f.buf[f.utf8:])
	f.utf8 += n
	if !ok {
		cl.frag = nil
		cl.closeWS(closeInvalidData, "invalid UTF-8")
		return false
	}
	return true
}

// onClose answers a client close frame: its status code is echoed; a
// malformed close (1-byte payload, a code that must not be sent) is a
// protocol error, a reason in invalid UTF-8 is 1007.
func (cl *client) onClose(payload []byte) {
	switch {
	case len(payload) == 0:
		cl.sendClose(closeNormal, "", true)
	case len(payload) == 1:
		cl.sendClose(closeProtocolError, "bad close frame", true)
	case !validCloseCode(binary.BigEndian.Uint16(payload)):
		cl.sendClose(closeProtocolError, "bad close code", true)
	case !utf8.Valid(payload[2:]):
		cl.sendClose(closeInvalidData, "invalid UTF-8", true)
	default:
		cl.sendClose(binary.BigEndian.Uint16(payload), "", true)
	}
}

// onCompressed inflates a permessage-deflate message (capped at
// MaxMessageSize → 1009) and handles it.
func (cl *client) onCompressed(op byte, data []byte) {
	msg, err := cl.l.inflate(data, cl.l.srv.cfg.MaxMessageSize)
	switch {
	case errors.Is(err, errTooBig):
		cl.closeWS(closeTooBig, "message too big")
		return
	case err != nil:
		cl.closeWS(closeInvalidData, "bad compressed data")
		return
	}
	if op == opText && !utf8.Valid(msg) {
		cl.closeWS(closeInvalidData, "invalid UTF-8")
		return
	}
	cl.onMessage(msg)
}

func (cl *client) onMessage(data []byte) {
	if cl.connect != nil {
		cl.stash(data)
		return
	}
	err := cl.l.dec.Decode(data, cl)
	switch {
	case errors.Is(err, errPause):
		cl.stash(cl.l.dec.Unread())
	case err != nil && !errors.Is(err, errStop):
		cl.disconnect(discBadRequest)
	}
}

// stash keeps commands received during connect for replayEarly; more than
// MaxMessageSize of them is a bad request.
func (cl *client) stash(data []byte) {
	op := cl.connect
	if len(op.early)+len(data)+1 > cl.l.srv.cfg.MaxMessageSize {
		op.early = nil
		cl.disconnect(discBadRequest)
		return
	}
	op.early = append(append(op.early, '\n'), data...)
}

// replayEarly runs the commands stashed during connect. It runs as a loop
// task after the connect reply; messages arriving before it are stashed
// behind, so the order is kept.
func (cl *client) replayEarly() {
	op := cl.connect
	cl.connect = nil
	if op == nil || cl.state != stateConnected || op.early == nil {
		return
	}
	cl.onMessage(op.early)
}

// HandleCommand runs one client command (protocol.CommandHandler). The
// command and its publish data are only valid during the call.
func (cl *client) HandleCommand(cmd *protocol.Command) error {
	if cl.state >= stateClosing {
		return errStop
	}
	m := cmd.Method()
	if m == protocol.MethodConnect {
		return cl.handleConnect(cmd.ID, cmd.Connect)
	}
	if cl.state == stateConnecting {
		return errPause // run after the connect reply
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
		if sub := cl.subs.get(cmd.Unsubscribe.Channel); sub != nil && !sub.server {
			cl.l.removeSub(cl, sub)
			cl.recomputeSubExpiry()
		}
		cl.replyEmpty(cmd.ID, "unsubscribe")
	case protocol.MethodPublish:
		return cl.handlePublish(cmd.ID, cmd.Publish)
	case protocol.MethodSubRefresh:
		return cl.handleSubRefresh(cmd.ID, cmd.SubRefresh)
	case protocol.MethodHistory:
		cl.handleHistory(cmd.ID, cmd.History)
	case protocol.MethodRefresh:
		return cl.handleRefresh(cmd.ID, cmd.Refresh)
	case protocol.MethodPresence:
		cl.handlePresence(cmd.ID, cmd.Presence, false)
	case protocol.MethodPresenceStats:
		cl.handlePresence(cmd.ID, cmd.PresenceStats, true)
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
	cl.setClaims(claims)
	cl.id = newUUIDBytes()
	op := &connectOp{id: id, result: protocol.ConnectResult{
		Client:  formatUUID(cl.id),
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
	cl.subs = make(subList, 0, len(op.order))
	if op.remaining == 0 {
		cl.finishConnect()
		return nil
	}
	for _, ch := range op.order {
		sub := &subscription{ch: ch, server: true, init: &subInit{}}
		if r := req.Subs[ch]; r != nil && r.Recover {
			sub.init.recover, sub.init.reqOffset, sub.init.reqEpoch = true, r.Offset, r.Epoch
		}
		if o := srv.chopts.Lookup(ch); o.Presence {
			sub.pres, sub.joinLeave = true, o.JoinLeave
		}
		cl.startSub(sub, nil)
		if cl.state >= stateClosing {
			return errStop
		}
	}
	// A single server-side channel: keep the router entry's copy of its
	// name, shared by all its subscribers, rather than this token's.
	if len(cl.subs) == 1 && cl.subs[0].ch == cl.claims.channels {
		cl.claims.channels = cl.subs[0].ch
	}
	return nil
}

func (cl *client) setExpiry(claims *auth.Claims, expires *bool, ttl *uint32) {
	cl.expiresAt = 0
	if exp := claims.ExpiresAt(); !exp.IsZero() {
		cl.expiresAt = exp.Add(cl.l.srv.cfg.ExpiredCloseDelay).UnixNano()
		*expires = true
		*ttl = ttlSeconds(exp.UnixNano())
	}
	cl.l.reschedule(cl)
}

// ttlSeconds is the protocol's ttl of an expiry (at least 1).
func ttlSeconds(exp int64) uint32 {
	return uint32(max((exp-time.Now().UnixNano())/int64(time.Second), 1))
}

// setSubExpiry records sub's token expiry and recomputes the client's
// earliest subscription expiry.
func (cl *client) setSubExpiry(sub *subscription, exp int64) {
	sub.tokenExp = exp
	if cl.subs.get(sub.ch) == sub {
		cl.recomputeSubExpiry()
	}
}

func (cl *client) recomputeSubExpiry() {
	cl.subExpiry = 0
	delay := int64(cl.l.srv.cfg.ExpiredCloseDelay)
	for _, s := range cl.subs {
		if s.tokenExp != 0 && (cl.subExpiry == 0 || s.tokenExp+delay < cl.subExpiry) {
			cl.subExpiry = s.tokenExp + delay
		}
	}
	cl.l.reschedule(cl)
}

func (cl *client) finishConnect() {
	op := cl.connect
	if op.early == nil {
		cl.connect = nil // else replayEarly ends it, after the stash
	}
	srv := cl.l.srv
	subs := cl.l.connectSubs[:0] // the loop's: no allocation per connect
	for _, ch := range op.order {
		if sub := cl.subs.get(ch); sub != nil && sub.init != nil {
			subs = append(subs, protocol.ChannelResult{Channel: ch, Result: &sub.init.result})
		}
	}
	cl.l.scratch = protocol.AppendConnectReply(cl.l.scratch[:0], op.id, &op.result, subs)
	clear(subs)
	cl.l.connectSubs = subs[:0]
	cl.enqueueJSON(cl.l.scratch)
	cl.state = stateConnected
	cl.nextPing = firstPing(time.Now(), srv.cfg.PingInterval)
	cl.l.reschedule(cl)
	srv.m.connects.Inc()
	if op.early != nil {
		cl.l.execute(cl.replayEarly)
	}
	for _, ch := range op.order {
		if sub := cl.subs.get(ch); sub != nil {
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
	if cl.subs.get(ch) != nil {
		cl.replyError(id, protocol.ErrAlreadySubscribed)
		return
	}
	if len(cl.subs) >= srv.cfg.MaxSubscriptions {
		cl.replyError(id, protocol.ErrLimitExceeded)
		return
	}
	var exp int64
	var chanInfo []byte
	if req.Token != "" {
		sc, err := srv.verifier.VerifySubscription(req.Token, cl.claims.Subject, ch)
		if err != nil {
			if errors.Is(err, auth.ErrExpired) {
				cl.replyError(id, protocol.ErrTokenExpired)
			} else {
				cl.replyError(id, protocol.ErrPermissionDenied)
			}
			return
		}
		if sc.ExpiresAt != nil {
			exp = sc.ExpiresAt.UnixNano()
		}
		chanInfo = sc.Info
	} else if !cl.claims.Allows(ch, auth.AllowSubscribe) {
		cl.replyError(id, protocol.ErrPermissionDenied)
		return
	}
	sub := &subscription{ch: ch, init: &subInit{cmdID: id, recover: req.Recover, reqOffset: req.Offset, reqEpoch: req.Epoch}}
	if o := srv.chopts.Lookup(ch); o.Presence {
		sub.pres, sub.joinLeave = true, o.ForcePushJoinLeave || (o.JoinLeave && req.JoinLeave)
	}
	cl.setSubExpiry(sub, exp) // before startSub: the reply may go out at once
	cl.startSub(sub, chanInfo)
	cl.recomputeSubExpiry()
}

// handleSubRefresh extends a subscription made with a subscription token.
func (cl *client) handleSubRefresh(id uint32, req *protocol.SubRefreshRequest) error {
	sub := cl.subs.get(req.Channel)
	if sub == nil || sub.server || sub.tokenExp == 0 {
		cl.replyError(id, protocol.ErrPermissionDenied)
		return nil
	}
	sc, err := cl.l.srv.verifier.VerifySubscription(req.Token, cl.claims.Subject, req.Channel)
	if errors.Is(err, auth.ErrExpired) {
		cl.replyError(id, protocol.ErrTokenExpired)
		return nil
	}
	if err != nil {
		cl.disconnect(protocol.DisconnectInvalidToken)
		return errStop
	}
	var res protocol.SubRefreshResult
	var exp int64
	if sc.ExpiresAt != nil {
		exp = sc.ExpiresAt.UnixNano()
		res.Expires, res.TTL = true, ttlSeconds(exp)
	}
	cl.setSubExpiry(sub, exp)
	cl.l.scratch = protocol.AppendSubRefreshReply(cl.l.scratch[:0], id, &res)
	cl.enqueueJSON(cl.l.scratch)
	return nil
}

// startSub registers sub locally and with the router (and, on a channel
// with presence, as a member with chanInfo) and positions it now when the
// channel is synced, else when the router reports it ready.
func (cl *client) startSub(sub *subscription, chanInfo []byte) {
	l := cl.l
	ch, epoch, last, synced := l.srv.router.join(sub.ch, l.idx)
	sub.ch = ch // the entry's string: one copy per relay, not per subscriber
	l.addSub(cl, sub)
	if sub.pres {
		l.presenceJoin(cl, sub, chanInfo)
	}
	if synced {
		cl.position(sub, epoch, last)
	}
}

// position decides the subscription's start: the channel's current top, or
// the client's position plus the recovered publications.
func (cl *client) position(sub *subscription, epoch string, last uint64) {
	sub.init.epoch = epoch
	// An empty epoch from the client matches (as in Centrifugo): a channel
	// has no epoch before its first publication, so a client that subscribed
	// while the channel was empty only ever saw "" (the SDKs learn the epoch
	// from subscribe/connect replies only).
	// An empty epoch on this side is the same: the channel had no
	// publication when it was positioned (last is then 0).
	in := sub.init
	sameEpoch := in.reqEpoch == "" || epoch == "" || epoch == in.reqEpoch
	if in.recover && sameEpoch && in.reqOffset < last {
		sub.state = subRecovering
		l, srv := cl.l, cl.l.srv
		since := in.reqOffset
		ok := srv.pool.trySubmit(func() {
			pubs, ok := srv.recoverRange(srv.bg, sub.ch, since, epoch, last)
			l.execute(func() {
				if cl.state >= stateClosing || cl.subs.get(sub.ch) != sub {
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
	recovered := in.recover && sameEpoch && in.reqOffset == last
	cl.resolve(sub, last, recovered, nil)
}

func (cl *client) resolve(sub *subscription, last uint64, recovered bool, pubs []*heraldv1.Publication) {
	sub.last = last
	sub.state = subResolved
	in := sub.init
	in.result = protocol.SubscribeResult{
		Recoverable: true,
		Positioned:  true,
		Epoch:       in.epoch,
		Offset:      last,
		Recovered:   recovered,
		WasRecover:  in.recover,
	}
	if sub.tokenExp != 0 {
		in.result.Expires, in.result.TTL = true, ttlSeconds(sub.tokenExp)
	}
	if len(pubs) > 0 {
		in.result.Publications = make([]protocol.Publication, 0, len(pubs))
		for _, p := range pubs {
			in.result.Publications = append(in.result.Publications, toProtoPub(p))
		}
	}
	if sub.server {
		if op := cl.connect; op != nil && cl.state == stateConnecting {
			if op.remaining--; op.remaining == 0 {
				cl.finishConnect()
			}
		}
		return
	}
	cl.l.scratch = protocol.AppendSubscribeReply(cl.l.scratch[:0], in.cmdID, &in.result)
	cl.enqueueJSON(cl.l.scratch)
	cl.goLive(sub)
}

// goLive sends the pushes buffered while sub was being positioned and makes
// it receive pushes directly.
func (cl *client) goLive(sub *subscription) {
	sub.state = subLive
	if in := sub.init; in != nil {
		for _, p := range in.pending {
			cl.push(sub, p)
		}
		sub.init = nil
	}
}

// insufficientState tells the client that sub's stream lost continuity
// (epoch change, a gap that could not be filled, its controller away): a
// client-side subscription gets an unsubscribe push with code 2500, on which
// the SDKs resubscribe with recovery; a server-side one can only be
// recovered by reconnecting, so the client is disconnected with 3010.
func (cl *client) insufficientState(sub *subscription) {
	if sub.server {
		cl.disconnect(protocol.DisconnectInsufficientState)
		return
	}
	cl.l.scratch = protocol.AppendUnsubscribePush(cl.l.scratch[:0], sub.ch, unsubInsufficientState, "insufficient state")
	cl.enqueueJSON(cl.l.scratch)
	cl.l.removeSub(cl, sub)
	cl.recomputeSubExpiry()
}

// unsubInsufficientState is the unsubscribe code that makes SDKs
// resubscribe (2500-2999 resubscribe; below 2500 stay unsubscribed).
const unsubInsufficientState = 2500

// failSub ends a subscription whose channel could not be positioned.
func (cl *client) failSub(sub *subscription) {
	if sub.server {
		cl.disconnect(protocol.DisconnectServerError)
		return
	}
	cl.replyError(sub.init.cmdID, protocol.ErrInternal)
	cl.l.removeSub(cl, sub)
	cl.recomputeSubExpiry()
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
	cl.setClaims(claims)
	res := protocol.RefreshResult{Client: formatUUID(cl.id), Version: Version}
	cl.setExpiry(claims, &res.Expires, &res.TTL)
	cl.l.scratch = protocol.AppendRefreshReply(cl.l.scratch[:0], id, &res)
	cl.enqueueJSON(cl.l.scratch)
	return nil
}

// handlePublish produces a publish to Kafka and answers after the ack.
// req.Data is only valid during the call (srv.publish copies it).
func (cl *client) handlePublish(id uint32, req *protocol.PublishRequest) error {
	srv := cl.l.srv
	ch := req.Channel
	if !cl.allowPublish() {
		cl.replyError(id, protocol.ErrTooManyRequests)
		return cl.rejected()
	}
	if !validChannel(ch) || len(req.Data) == 0 || !json.Valid(req.Data) {
		cl.replyError(id, protocol.ErrBadRequest)
		return nil
	}
	if !cl.claims.HasChannel(ch) && !cl.claims.Allows(ch, auth.AllowPublish) {
		cl.replyError(id, protocol.ErrPermissionDenied)
		return nil
	}
	if cl.closeAfterPublishes {
		// Leaving: answer now rather than start a publish whose outcome
		// the client might not hear about.
		cl.replyError(id, errShuttingDown)
		return nil
	}
	l := cl.l
	op := &pubOp{cl: cl, id: id, deadline: time.Now().Add(srv.cfg.PublishTimeout).UnixNano()}
	l.inflight = append(l.inflight, op)
	cl.publishing++
	srv.publishing.Add(1)
	srv.publish(ch, cl.claims.Subject, cl.claims.Info, req.Data, func(err error) {
		l.execute(func() { op.finish(err) })
	})
	return nil
}

// pubOp is a publish waiting for Kafka's ack. The loop answers it once:
// with the ack, the produce error, or — when neither came within
// PublishTimeout — a timeout error (loop.expirePublishes). A record that
// Kafka stores after the timeout was answered is delivered although the
// client was told it failed: an error reply is never a false ack, the
// reverse is impossible.
type pubOp struct {
	cl       *client
	id       uint32
	deadline int64
	done     bool
}

func (op *pubOp) finish(err error) {
	if op.done {
		return
	}
	op.done = true
	cl := op.cl
	cl.publishing--
	cl.l.srv.publishing.Add(-1)
	if cl.state >= stateClosing {
		return
	}
	if err != nil {
		cl.replyError(op.id, errPublishFailed)
	} else {
		cl.replyEmpty(op.id, "publish")
	}
	if cl.closeAfterPublishes && cl.publishing == 0 {
		cl.disconnect(protocol.DisconnectShutdown)
	}
}

// leave disconnects the client with 3001 (drain, shutdown), or, while it
// has publishes waiting for Kafka, as soon as the last one is answered.
func (cl *client) leave() {
	if cl.publishing > 0 {
		cl.closeAfterPublishes = true
		return
	}
	cl.disconnect(protocol.DisconnectShutdown)
}

// rejectWindow is the window over which rejected publishes are counted.
const rejectWindow = 10 * time.Second

// allowPublish takes a token from the client's publish bucket.
func (cl *client) allowPublish() bool {
	cfg := &cl.l.srv.cfg
	if cfg.PublishRate < 0 {
		return true
	}
	now := time.Now().UnixNano()
	burst := float64(cfg.PublishBurst)
	if cl.pubLast == 0 {
		cl.pubTokens = burst
	} else if el := now - cl.pubLast; el > 0 {
		cl.pubTokens = min(burst, cl.pubTokens+float64(el)*float64(cfg.PublishRate)/float64(time.Second))
	}
	cl.pubLast = now
	if cl.pubTokens >= 1 {
		cl.pubTokens--
		return true
	}
	return false
}

// rejected counts a rate-limited publish; sustained abuse disconnects with
// 3013 too many requests.
func (cl *client) rejected() error {
	now := time.Now().UnixNano()
	if now-cl.rejectWindow > int64(rejectWindow) {
		cl.rejectWindow, cl.rejects = now, 0
	}
	cl.rejects++
	if int(cl.rejects) > cl.l.srv.cfg.PublishAbuseLimit {
		cl.l.srv.m.rateLimited.WithLabelValues("disconnect").Inc()
		cl.disconnect(protocol.DisconnectTooManyRequests)
		return errStop
	}
	cl.l.srv.m.rateLimited.WithLabelValues("rejected").Inc()
	return nil
}

// errShuttingDown answers a publish from a client that is being
// disconnected because the relay shuts down; it may retry after reconnecting.
var errShuttingDown = &protocol.Error{Code: protocol.ErrInternal.Code, Message: "internal server error: relay shutting down, publish not accepted", Temporary: true}

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
	l, user, r := cl.l, cl.claims.Subject, *req
	ok := srv.pool.trySubmit(func() {
		res, perr := srv.history(user, &r)
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

// pushRef is a push group queued for a subscription, with its compressed
// frame for a client that negotiated permessage-deflate.
type pushRef struct {
	g *pushGroup
	z []byte
}

// push queues the publications of p.g that sub has not had yet and reports
// whether there were any.
func (cl *client) push(sub *subscription, p pushRef) bool {
	g := p.g
	if g.last <= sub.last {
		return false
	}
	switch {
	case sub.last < g.first:
		if p.z != nil {
			cl.enqueue(p.z)
		} else {
			cl.enqueue(g.frame)
		}
	default:
		// Positioned in the middle of the run (rare): the rest, copied.
		rest := g.suffix(sub.last + 1 - g.first)
		if cl.deflate {
			f := cl.l.arena.alloc(headerSize(len(rest)) + len(rest))
			putHeader(f[:headerSize(len(rest))], opText, len(rest))
			copy(f[headerSize(len(rest)):], rest)
			cl.enqueue(cl.l.z.compressFrame(f))
		} else {
			cl.enqueueFrame(opText, rest)
		}
	}
	sub.last = g.last
	return true
}

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
	cl.iovBytes += int32(len(frame))
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
	if cl.c.OutboundBuffered()+int(cl.iovBytes) > srv.cfg.OutboundCap {
		cl.clearIOV()
		srv.m.slowDisconnects.Inc()
		cl.sendClose(protocol.DisconnectSlow.Code, protocol.DisconnectSlow.Reason, true)
		return
	}
	n, frames := int(cl.iovBytes), len(cl.iov)
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

// closeLinger bounds how long a connection the relay closed waits for the
// client to close its side (see linger).
const closeLinger = 2 * time.Second

// closeWS flushes queued frames, sends a close frame and closes the
// connection once the client has closed its side, or after closeLinger.
func (cl *client) closeWS(code uint16, reason string) { cl.sendClose(code, reason, false) }

// sendClose sends a close frame. closeNow closes the connection at once:
// when the frame answers the client's close (the handshake is complete),
// and for a slow consumer, whose unsent bytes must not be held for the
// linger.
func (cl *client) sendClose(code uint16, reason string, closeNow bool) {
	if cl.state >= stateClosing {
		return
	}
	cl.flush()
	if cl.state >= stateClosing { // flush found a slow consumer
		return
	}
	cl.l.srv.log.Debug("closing connection", "code", code, "reason", reason, "state", cl.state)
	frame := appendFrame(nil, opClose, closePayload(code, reason))
	_, _ = cl.c.Write(frame)
	cl.state = stateClosing
	cl.closeCode = code
	if closeNow {
		_ = cl.c.Close()
		return
	}
	cl.linger()
}

// linger half-closes the connection after the relay's close frame (the
// client reads the frame, then end of stream) and leaves the full close to
// the client, or to the loop's timer after closeLinger. Closing at once
// with the client's frames still unread would make the kernel answer them
// with a reset, which can destroy the close frame (and its code) before the
// client reads it, and fails the client's writes in between.
func (cl *client) linger() {
	cl.lingering = true
	cl.deadline = time.Now().Add(closeLinger).UnixNano()
	cl.shutWrite()
	cl.l.reschedule(cl)
}

// shutWrite sends end of stream once the close frame has left gnet's
// buffer (shutting down earlier would drop it).
func (cl *client) shutWrite() {
	if cl.halfClosed || cl.c.OutboundBuffered() > 0 {
		return
	}
	cl.halfClosed = true
	if err := unix.Shutdown(cl.c.Fd(), unix.SHUT_WR); err != nil {
		_ = cl.c.Close()
	}
}

func codeLabel(code uint16) string {
	if code == 0 {
		return "0"
	}
	return strconv.Itoa(int(code))
}

// firstPing is when a new connection gets its first ping: uniformly within
// the second half of the interval, so connections that arrive together (a
// reconnect wave after a relay restart, a load test) do not all ping, and
// answer with a pong, in the same timer tick for as long as they live. Each
// later ping follows the previous one by the interval, so the spread stays;
// a client never waits longer than the interval it was told. Without it,
// 10,000 connections made within 3 s pinged in 4 ticks, and each such burst
// put 60–90 ms on the p99.9 of chat deliveries (docs/performance.md).
func firstPing(now time.Time, interval time.Duration) int64 {
	half := int64(interval / 2)
	return now.UnixNano() + half + rand.Int64N(half+1)
}
