package controller

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// This file serves the server API's two RPCs: Control (a command run on
// every relay with a stream to this controller) and Published (the seq of a
// record the API produced), and keeps the idempotency window.
//
// Control ids are local to this controller (commands.next); a command goes
// out on every open stream's bounded queue, and the stream's handler
// goroutine (its only sender) sends it. The stream's receive goroutine hands
// each CommandReply to the waiting call by id (commands.deliver, never
// blocks). The management service sends a command to one controller and
// falls back to another only when the call fails, so relays do not dedupe
// command ids: disconnect and unsubscribe run twice at worst, the second
// time affecting nothing.

// commands are the Control calls waiting for relay replies. mu is a leaf.
type commands struct {
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan *heraldv1.CommandReply
}

// deliver hands a relay's reply to its call; a reply to a call that ended
// (timeout) is dropped. Never blocks: the channel has room for one reply
// per relay the command was sent to.
func (c *commands) deliver(r *heraldv1.CommandReply) {
	c.mu.Lock()
	ch := c.waiting[r.GetId()]
	c.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- r:
	default:
	}
}

// Control implements heraldv1.RouterServer: it sends the command to every
// open relay stream and answers the replies that arrived within
// ControlTimeout (or all of them earlier), with the number of relays it was
// sent to, so a partial answer says so.
func (s *Server) Control(ctx context.Context, req *heraldv1.ControlRequest) (*heraldv1.ControlResponse, error) {
	in := req.GetCommand()
	if in == nil || in.GetKind() == nil {
		return nil, status.Error(codes.InvalidArgument, "command is required")
	}
	s.streamsMu.Lock()
	streams := make([]*relayStream, 0, len(s.streams))
	for r := range s.streams {
		streams = append(streams, r)
	}
	s.streamsMu.Unlock()

	replies := make(chan *heraldv1.CommandReply, len(streams))
	s.cmds.mu.Lock()
	s.cmds.next++
	id := s.cmds.next
	if s.cmds.waiting == nil {
		s.cmds.waiting = map[uint64]chan *heraldv1.CommandReply{}
	}
	s.cmds.waiting[id] = replies
	s.cmds.mu.Unlock()
	defer func() {
		s.cmds.mu.Lock()
		delete(s.cmds.waiting, id)
		s.cmds.mu.Unlock()
	}()

	cmd := &heraldv1.Command{Id: id, Kind: in.GetKind()}
	cm := &heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Command{Command: cmd}}
	sent := 0
	for _, r := range streams {
		if r.enqueue(cm, s.m) {
			sent++
		}
	}
	resp := &heraldv1.ControlResponse{Relays: uint32(sent), Controller: s.nodeInfo()}
	t := time.NewTimer(s.cfg.ControlTimeout)
	defer t.Stop()
	for len(resp.Replies) < sent {
		select {
		case r := <-replies:
			resp.Replies = append(resp.Replies, r)
		case <-t.C:
			s.m.controlCommands.WithLabelValues("partial").Inc()
			return resp, nil
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	s.m.controlCommands.WithLabelValues("complete").Inc()
	return resp, nil
}

// nodeInfo describes this controller for the server API's info.
func (s *Server) nodeInfo() *heraldv1.NodeInfo {
	s.streamsMu.Lock()
	n := len(s.streams)
	s.streamsMu.Unlock()
	chans := 0
	for i := range s.interest.shards {
		sh := &s.interest.shards[i]
		sh.mu.RLock()
		chans += len(sh.m)
		sh.mu.RUnlock()
	}
	return &heraldv1.NodeInfo{
		Id: s.cfg.ID, Kind: "controller",
		Connections:   uint32(n), // relay streams
		Subscriptions: uint32(len(s.ownedParts())),
		Channels:      uint32(chans),
		UptimeSeconds: int64(time.Since(s.startedAt).Seconds()),
	}
}

// apiRecord is the outcome of a record the server API produced.
type apiRecord struct {
	offset    int64
	seq       uint64
	duplicate bool
}

// maxAPIRecords bounds the API records a partition remembers for Published
// (the oldest are forgotten first; Published then reads the store).
const maxAPIRecords = 1 << 14

// rememberAPI records the outcome of the API record at offset. Caller holds
// ps.mu (fetch loop).
func (ps *partState) rememberAPI(r apiRecord) {
	if ps.api == nil {
		ps.api = make(map[int64]apiRecord)
	}
	if len(ps.apiOrder) >= maxAPIRecords {
		delete(ps.api, ps.apiOrder[0])
		ps.apiOrder = ps.apiOrder[1:]
	}
	ps.api[r.offset] = r
	ps.apiOrder = append(ps.apiOrder, r.offset)
}

// Published implements heraldv1.RouterServer: it waits (up to
// PublishedTimeout) until the fetch loop has passed the offset, then answers
// the seq the record got (of the first record with its client_msg_id when
// it was a duplicate). owned is false when this controller does not own the
// partition (or lost it while waiting).
func (s *Server) Published(ctx context.Context, req *heraldv1.PublishedRequest) (*heraldv1.PublishedResponse, error) {
	ch, p, off := req.GetChannel(), req.GetPartition(), req.GetOffset()
	if ch == "" || off < 0 {
		return nil, status.Error(codes.InvalidArgument, "channel and offset are required")
	}
	if n := s.numParts.Load(); n > 0 && partition.For(ch, n) != p {
		return nil, status.Errorf(codes.InvalidArgument, "channel %q is in partition %d, not %d", ch, partition.For(ch, n), p)
	}
	t := time.NewTimer(s.cfg.PublishedTimeout)
	defer t.Stop()
	for {
		ps := s.part(p)
		if ps == nil {
			return &heraldv1.PublishedResponse{}, nil
		}
		ps.mu.RLock()
		passed, wake := ps.next > off, ps.advanced
		rec, known := ps.api[off]
		epoch := epochFor(s.streamID, ch)
		if cs := ps.chans[ch]; cs != nil && cs.epoch != "" {
			epoch = cs.epoch
		}
		ps.mu.RUnlock()
		if passed {
			if known {
				return &heraldv1.PublishedResponse{Owned: true, Epoch: epoch, Offset: rec.seq, Duplicate: rec.duplicate}, nil
			}
			return s.publishedFromStore(ctx, ch, epoch, off)
		}
		select {
		case <-wake:
		case <-t.C:
			return nil, status.Errorf(codes.DeadlineExceeded, "partition %d has not reached offset %d within %s", p, off, s.cfg.PublishedTimeout)
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// publishedFromStore answers a record sequenced before this controller
// owned its partition (or forgotten): the message stored with that offset
// among the channel's newest.
func (s *Server) publishedFromStore(ctx context.Context, ch, epoch string, off int64) (*heraldv1.PublishedResponse, error) {
	msgs, err := s.store.Messages(ctx, store.Range{Channel: ch, Desc: true, Limit: maxAPIRecords})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading the channel's messages: %v", err)
	}
	for _, m := range msgs {
		if m.Offset == off {
			return &heraldv1.PublishedResponse{Owned: true, Epoch: epoch, Offset: m.Seq}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no message of channel %q at offset %d (a duplicate sequenced by a previous owner, or not stored yet)", ch, off)
}

// dedupeEntry is a client_msg_id the channel had: its seq and published_at
// (unix ms, from the record).
type dedupeEntry struct {
	seq uint64
	at  int64
}

// dedupeWin is a channel's idempotency window, built on the channel's
// first keyed record after assignment (from the store: the keyed messages
// among its last DedupeSeqs seqs) and kept by the fetch loop after that.
type dedupeWin struct {
	keys map[string]dedupeEntry
}

// duplicate reports the first record's seq when m repeats a client_msg_id
// within the window of cs (head cs.seq). Poll loop, ps.mu held.
func (s *Server) duplicate(cs *chanState, m *heraldv1.Message) (uint64, bool) {
	e, ok := cs.dedupe.keys[m.ClientMsgId]
	if !ok {
		return 0, false
	}
	if cs.seq+1-e.seq > uint64(s.cfg.DedupeSeqs) || m.PublishedAt-e.at > s.cfg.DedupeWindow.Milliseconds() {
		return 0, false
	}
	return e.seq, true
}

// remember adds a keyed message that got seq, and forgets entries that no
// later record can match (more than DedupeSeqs seqs back). Poll loop.
func (s *Server) remember(cs *chanState, m *heraldv1.Message, seq uint64) {
	w := cs.dedupe
	w.keys[m.ClientMsgId] = dedupeEntry{seq: seq, at: m.PublishedAt}
	if len(w.keys) > 2*s.cfg.DedupeSeqs {
		for k, e := range w.keys {
			if seq-e.seq >= uint64(s.cfg.DedupeSeqs) {
				delete(w.keys, k)
			}
		}
	}
}

// loadDedupe builds the window of a channel at head: the keyed messages of
// seqs head-DedupeSeqs+1 … head from the store. Every seq up to head there
// is either stored (the store holds it by the checkpoint) or was sequenced
// by this controller since assignment without a key (the first keyed one
// triggers this load), so the window is what a replay rebuilds. It retries
// until the store answers or ctx ends: deciding without it could give a
// duplicate a seq. Runs on the fetch loop without partition locks.
func (s *Server) loadDedupe(ctx context.Context, ch string, head uint64) *dedupeWin {
	w := &dedupeWin{keys: map[string]dedupeEntry{}}
	if head == 0 {
		return w
	}
	from := uint64(1)
	if n := uint64(s.cfg.DedupeSeqs); head > n {
		from = head - n + 1
	}
	backoff := 50 * time.Millisecond
	for {
		msgs, err := s.store.Messages(ctx, store.Range{Channel: ch, From: from, To: head})
		if err == nil {
			for _, m := range msgs {
				if m.ClientMsgID != "" {
					w.keys[m.ClientMsgID] = dedupeEntry{seq: m.Seq, at: m.PublishedAt.UnixMilli()}
				}
			}
			s.m.dedupeLoads.Inc()
			return w
		}
		s.m.storeErrors.Inc()
		s.log.Error("loading the idempotency window, retrying", "channel", ch, "err", err)
		select {
		case <-ctx.Done():
			return w
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
