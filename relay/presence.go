package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/protocol"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// Presence on the relay (docs/architecture.md, "Presence").
//
// A subscription to a channel whose namespace has presence
// (channelopt.Options.Presence) makes its client a member of the channel:
// (client id, user, conn_info = the connection token's info, chan_info =
// the subscription token's info). The relay keeps its own members in one
// table (presenceTable, only channels with presence: a subscription of any
// other channel adds nothing to an idle connection) and reports every
// change on every controller stream, like interest: each controller holds
// the presence of every channel, so a controller that gains a partition
// already has its channels' members. A stream starts with the whole table
// (PresenceDelta full=true, in chunks, ended by an empty delta).
//
// Join and leave pushes come from the channel's owner (PresenceEvents,
// coalesced per tick) and go, one frame per channel and controller message,
// to the live subscriptions that asked for them (subscribe join_leave, or
// server-side, on a join_leave namespace) or to all with
// force_push_join_leave.

// presenceTable is the relay's members of channels with presence.
//
// Lock order: presenceTable.mu before link.qmu (apply queues deltas on the
// links under it, and a session opening a stream snapshots the table and
// opens its queue under both); no I/O under it.
type presenceTable struct {
	mu sync.Mutex
	// m maps channel → client id → the change that made the member (a
	// join; immutable, shared with queued deltas and snapshots).
	m       map[string]map[string]*heraldv1.PresenceChange
	members int
}

func newPresenceTable() *presenceTable {
	return &presenceTable{m: map[string]map[string]*heraldv1.PresenceChange{}}
}

// apply records changes (in order) and queues them on every open
// controller stream, at most interestChunk per message. It never blocks.
func (s *Server) applyPresence(changes []*heraldv1.PresenceChange) {
	t := s.pres
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range changes {
		ch, id := c.GetChannel(), c.GetClient().GetClient()
		members := t.m[ch]
		if c.GetLeave() {
			if _, ok := members[id]; ok {
				delete(members, id)
				t.members--
				if len(members) == 0 {
					delete(t.m, ch)
				}
			}
			continue
		}
		if members == nil {
			members = map[string]*heraldv1.PresenceChange{}
			t.m[ch] = members
		}
		if _, ok := members[id]; !ok {
			t.members++
		}
		members[id] = c
	}
	s.m.presenceChannels.Set(float64(len(t.m)))
	s.m.presenceMembers.Set(float64(t.members))
	for len(changes) > 0 {
		n := min(len(changes), interestChunk)
		msg := &heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Presence{Presence: &heraldv1.PresenceDelta{Changes: changes[:n:n]}}}
		for _, l := range s.links.links {
			if l.enqueue(msg, n) {
				s.m.controllerQueueFull.Inc()
				s.log.Warn("controller not reading presence changes: its stream is reopened with the whole presence set",
					"controller", l.addr, "queue", l.max)
			}
		}
		changes = changes[n:]
	}
}

// snapshotLocked returns every member's join change. Caller holds t.mu.
func (t *presenceTable) snapshotLocked() []*heraldv1.PresenceChange {
	out := make([]*heraldv1.PresenceChange, 0, t.members)
	for _, members := range t.m {
		for _, c := range members {
			out = append(out, c)
		}
	}
	return out
}

// sendPresenceSnapshot sends a new stream's first presence: full=true with
// the first chunk, the rest in chunks, then an empty delta that ends the
// snapshot (the controller then drops what it held for this relay and was
// not in it). Runs on the session goroutine before the sender starts.
func sendPresenceSnapshot(stream heraldv1.Router_StreamClient, snap []*heraldv1.PresenceChange) error {
	full := true
	for full || len(snap) > 0 {
		n := min(len(snap), interestChunk)
		msg := &heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Presence{Presence: &heraldv1.PresenceDelta{Full: full, Changes: snap[:n:n]}}}
		if err := stream.Send(msg); err != nil {
			return err
		}
		full, snap = false, snap[n:]
	}
	return stream.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Presence{Presence: &heraldv1.PresenceDelta{}}})
}

// presenceJoin makes cl a member of sub's channel (sub.pres). The change is
// reported once the loop's current round is over (flushPresence), together
// with the others of the round. Runs on the loop.
func (l *loop) presenceJoin(cl *client, sub *subscription, chanInfo []byte) {
	l.queuePresence(&heraldv1.PresenceChange{
		Channel:   sub.ch,
		JoinLeave: l.srv.chopts.Lookup(sub.ch).JoinLeave,
		Client: &heraldv1.ClientInfo{
			Client:   formatUUID(cl.id),
			User:     cl.claims.Subject,
			ConnInfo: cl.claims.Info,
			ChanInfo: chanInfo,
		},
	})
}

// presenceLeave ends cl's membership of sub's channel. Runs on the loop.
func (l *loop) presenceLeave(cl *client, sub *subscription) {
	l.queuePresence(&heraldv1.PresenceChange{
		Channel:   sub.ch,
		Leave:     true,
		JoinLeave: l.srv.chopts.Lookup(sub.ch).JoinLeave,
		Client:    &heraldv1.ClientInfo{Client: formatUUID(cl.id), User: cl.claims.Subject},
	})
}

func (l *loop) queuePresence(c *heraldv1.PresenceChange) {
	l.presq = append(l.presq, c)
	if len(l.presq) == 1 {
		l.execute(l.flushPresence)
	}
}

// flushPresence reports the changes queued by this loop (a loop task).
func (l *loop) flushPresence() {
	if len(l.presq) == 0 {
		return
	}
	q := l.presq
	l.presq = nil // the table and queued deltas keep the changes
	l.srv.applyPresence(q)
}

// handlePresenceEvents hands the owner's join/leave events to the loops
// with subscribers of their channels: one frame per run of events of a
// channel. Called from controller session goroutines; never blocks.
func (r *router) handlePresenceEvents(evs []*heraldv1.PresenceEvent) {
	b := r.newBatch()
	var ci protocol.ClientInfo
	for i := 0; i < len(evs); {
		ch := evs[i].GetChannel()
		j := i + 1
		for j < len(evs) && evs[j].GetChannel() == ch {
			j++
		}
		sh := r.shard(ch)
		sh.mu.Lock()
		if e := sh.m[ch]; e != nil && e.total > 0 {
			buf := make([]byte, maxServerHeader, maxServerHeader+(j-i)*160)
			for k, ev := range evs[i:j] {
				if k > 0 {
					buf = append(buf, '\n')
				}
				c := ev.GetClient()
				ci = protocol.ClientInfo{Client: c.GetClient(), User: c.GetUser(), ConnInfo: c.GetConnInfo(), ChanInfo: c.GetChanInfo()}
				buf = protocol.AppendJoinPush(buf, ch, &ci, ev.GetLeave())
			}
			b.add(e, item{kind: itemPresence, ch: e.ch, grp: &pushGroup{frame: framePrefixed(buf)}, seq: uint64(j - i)})
		}
		sh.mu.Unlock()
		i = j
	}
	r.dispatch(b)
}

// deliverPresence queues a join/leave frame (it: itemPresence) for sub when
// it takes them; it reports whether it did. Runs on the loop.
func (l *loop) deliverPresence(it *item, sub *subscription) bool {
	cl := sub.cl
	if !sub.joinLeave || sub.state != subLive || cl.state >= stateClosing {
		return false
	}
	if cl.deflate {
		if it.zframe == nil {
			it.zframe = l.z.compressFrame(it.grp.frame)
		}
		cl.enqueue(it.zframe)
	} else {
		cl.enqueue(it.grp.frame)
	}
	l.srv.m.presencePushes.Add(float64(it.seq))
	return true
}

// handlePresence answers presence (stats false) and presence_stats. The
// channel's namespace must have presence (else 108 not available), and the
// connection must be subscribed to it or hold a caps grant with prs (else
// 103). The members come from the channel's owner (Presence RPC) on the
// worker pool.
func (cl *client) handlePresence(id uint32, req *protocol.PresenceRequest, stats bool) {
	srv := cl.l.srv
	if req == nil || !validChannel(req.Channel) {
		cl.replyError(id, protocol.ErrBadRequest)
		return
	}
	ch := req.Channel
	if !srv.chopts.Lookup(ch).Presence {
		cl.replyError(id, protocol.ErrNotAvailable)
		return
	}
	if cl.subs.get(ch) == nil && !cl.claims.HasChannel(ch) && !cl.claims.Allows(ch, auth.AllowPresence) {
		cl.replyError(id, protocol.ErrPermissionDenied)
		return
	}
	method := "presence"
	if stats {
		method = "presence_stats"
	}
	l := cl.l
	ok := srv.pool.trySubmit(func() {
		resp, err := srv.links.presence(srv.bg, &heraldv1.PresenceRequest{Channel: ch, StatsOnly: stats})
		l.execute(func() {
			if cl.state >= stateClosing {
				return
			}
			if err != nil {
				srv.m.presenceRequests.WithLabelValues(method, "error").Inc()
				cl.replyError(id, protocol.ErrInternal)
				return
			}
			srv.m.presenceRequests.WithLabelValues(method, "ok").Inc()
			if stats {
				l.scratch = protocol.AppendPresenceStatsReply(l.scratch[:0], id, &protocol.PresenceStatsResult{NumClients: resp.GetNumClients(), NumUsers: resp.GetNumUsers()})
				cl.enqueueJSON(l.scratch)
				return
			}
			members := make([]protocol.ClientInfo, len(resp.GetClients()))
			for i, c := range resp.GetClients() {
				members[i] = protocol.ClientInfo{Client: c.GetClient(), User: c.GetUser(), ConnInfo: c.GetConnInfo(), ChanInfo: c.GetChanInfo()}
			}
			l.scratch = protocol.AppendPresenceReply(l.scratch[:0], id, members)
			cl.enqueueJSON(l.scratch)
		})
	})
	if !ok {
		srv.m.presenceRequests.WithLabelValues(method, "busy").Inc()
		cl.replyError(id, protocol.ErrTooManyRequests)
	}
}

var errNoPresence = errors.New("controller has no Presence")

// presence asks the owner of req.Channel (a controller answering
// owned=false is not, and the next one is asked), each call bounded by
// RPCTimeout; stalled controllers are skipped. It blocks the calling pool
// worker.
func (ls *links) presence(ctx context.Context, req *heraldv1.PresenceRequest) (*heraldv1.PresenceResponse, error) {
	var lastErr error = errNoOwner
	timeout := ls.srv.cfg.RPCTimeout
	for _, l := range ls.order(req.GetChannel()) {
		if l.stalled(timeout) {
			lastErr = fmt.Errorf("presence from controller %s: %w", l.addr, errStalled)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := l.client.Presence(cctx, req)
		cancel()
		l.observe(ctx, err)
		switch {
		case err == nil && resp.GetOwned():
			return resp, nil
		case err == nil:
		case status.Code(err) == codes.Unimplemented:
			lastErr = fmt.Errorf("presence from controller %s: %w", l.addr, errNoPresence)
		default:
			lastErr = fmt.Errorf("presence from controller %s: %w", l.addr, err)
		}
	}
	return nil, lastErr
}
