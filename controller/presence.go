package controller

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/tick"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// Presence on the controller (docs/architecture.md, "Presence").
//
// Every relay reports its members of channels with presence on its stream
// to every controller (PresenceDelta), so every controller holds the
// presence of every channel, indexed by relay: a relay's first delta on a
// stream (full=true, then more chunks, ended by an empty delta) replaces
// what the controller held for it, and a relay whose stream has been gone
// for PresenceGrace is dropped. A controller that gains a partition
// therefore already knows its channels' members; a restarted one learns
// them from the full deltas of the relays' new streams.
//
// Only the owner of a channel's partition answers Presence and emits
// join/leave events (for changes with join_leave): queued per channel,
// coalesced over PresenceTick (a join and a leave of one client in the same
// tick cancel), at most PresenceEvents per channel per tick (the rest
// dropped and counted), sent to the relays interested in the channel.
// Deltas the controller applies while it does not own the channel queue
// nothing after the tick: the owner at flush time emits, the others drop.
// The first snapshot of a relay this controller has not seen before
// (after the controller started) emits nothing: its members were known to
// the previous owner, and replaying them as joins would flood subscribers.
//
// Locks: presence.mu (relays; one delta applied at a time) before a
// presShard.mu before presence.evMu (pending events, a leaf). The event
// flush takes evMu alone, then interest shard read locks; no lock is held
// across I/O (relay streams are queued to without blocking).
type presence struct {
	s      *Server
	seed   maphash.Seed
	shards [numShards]presShard

	mu     sync.Mutex
	relays map[string]*relayPresence

	evMu    sync.Mutex
	pending map[string]*chanEvents
}

type presShard struct {
	mu sync.RWMutex
	m  map[string]*chanPresence
}

// chanPresence is one channel's members, by relay id then client id.
type chanPresence struct {
	byRelay map[string]map[string]*member
	n       int
}

type member struct {
	info *heraldv1.ClientInfo
	jl   bool   // the channel pushes join/leave (as the relay reported)
	gen  uint64 // the relay's snapshot generation that last reported it
}

// relayPresence is what the controller knows of one relay's presence.
// Guarded by presence.mu.
type relayPresence struct {
	id string
	// cur is the stream whose deltas apply (the one that sent the last
	// full); nil while the relay has no stream here, since goneAt.
	cur    *relayStream
	goneAt time.Time
	gen    uint64
	// syncing: between a full delta and the empty delta that ends it.
	syncing bool
	// seeded: a snapshot of this relay completed before; later snapshots
	// emit events for their differences.
	seeded bool
	chans  map[string]int // channel → members of this relay
}

// chanEvents are a channel's pending join/leave events of this tick.
type chanEvents struct {
	list []*heraldv1.PresenceEvent // nil entries were cancelled
	idx  map[string]int            // client id → index in list
	n    int
}

func newPresence(s *Server) *presence {
	p := &presence{s: s, seed: maphash.MakeSeed(), relays: map[string]*relayPresence{}, pending: map[string]*chanEvents{}}
	for i := range p.shards {
		p.shards[i].m = map[string]*chanPresence{}
	}
	return p
}

func (p *presence) shard(ch string) *presShard {
	return &p.shards[maphash.String(p.seed, ch)&(numShards-1)]
}

// apply applies one delta of stream r. Called from r's receive goroutine.
func (p *presence) apply(r *relayStream, d *heraldv1.PresenceDelta) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rp := p.relays[r.relayID]
	if d.GetFull() {
		if rp == nil {
			rp = &relayPresence{id: r.relayID, chans: map[string]int{}}
			p.relays[r.relayID] = rp
			p.s.m.presenceRelays.Set(float64(len(p.relays)))
		}
		rp.cur, rp.goneAt = r, time.Time{}
		rp.gen++
		rp.syncing = true
	} else if rp == nil || rp.cur != r {
		return // a stream that is not (or no longer) the relay's current one
	}
	emit := !rp.syncing || rp.seeded
	for _, c := range d.GetChanges() {
		p.applyChange(rp, c, emit)
	}
	if rp.syncing && !d.GetFull() && len(d.GetChanges()) == 0 {
		p.sweep(rp, rp.seeded)
		rp.syncing, rp.seeded = false, true
	}
}

// applyChange applies one change of relay rp. Caller holds p.mu.
func (p *presence) applyChange(rp *relayPresence, c *heraldv1.PresenceChange, emit bool) {
	ch, info := c.GetChannel(), c.GetClient()
	id := info.GetClient()
	if ch == "" || id == "" {
		return
	}
	sh := p.shard(ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cp := sh.m[ch]
	if c.GetLeave() {
		if cp == nil {
			return
		}
		mm := cp.byRelay[rp.id]
		m := mm[id]
		if m == nil {
			return
		}
		p.removeLocked(sh, cp, rp, ch, mm, id)
		if emit && (m.jl || c.GetJoinLeave()) {
			p.event(ch, m.info, true)
		}
		return
	}
	if cp == nil {
		cp = &chanPresence{byRelay: map[string]map[string]*member{}}
		sh.m[ch] = cp
		p.s.m.presenceChannels.Inc()
	}
	mm := cp.byRelay[rp.id]
	if mm == nil {
		mm = map[string]*member{}
		cp.byRelay[rp.id] = mm
	}
	if mm[id] == nil {
		cp.n++
		rp.chans[ch]++
		p.s.m.presenceMembers.Inc()
		if emit && c.GetJoinLeave() {
			p.event(ch, info, false)
		}
	}
	mm[id] = &member{info: info, jl: c.GetJoinLeave(), gen: rp.gen}
}

// removeLocked removes member id of relay rp from channel ch. Caller holds
// p.mu and sh.mu.
func (p *presence) removeLocked(sh *presShard, cp *chanPresence, rp *relayPresence, ch string, mm map[string]*member, id string) {
	delete(mm, id)
	cp.n--
	p.s.m.presenceMembers.Dec()
	if len(mm) == 0 {
		delete(cp.byRelay, rp.id)
	}
	if cp.n == 0 {
		delete(sh.m, ch)
		p.s.m.presenceChannels.Dec()
	}
	if rp.chans[ch]--; rp.chans[ch] <= 0 {
		delete(rp.chans, ch)
	}
}

// sweep removes rp's members its last snapshot did not report, emitting
// their leaves when emit. Caller holds p.mu.
func (p *presence) sweep(rp *relayPresence, emit bool) {
	p.removeWhere(rp, emit, func(m *member) bool { return m.gen < rp.gen })
}

// removeWhere removes rp's members for which stale is true. Caller holds
// p.mu.
func (p *presence) removeWhere(rp *relayPresence, emit bool, stale func(*member) bool) {
	chs := make([]string, 0, len(rp.chans))
	for ch := range rp.chans {
		chs = append(chs, ch)
	}
	for _, ch := range chs {
		sh := p.shard(ch)
		sh.mu.Lock()
		if cp := sh.m[ch]; cp != nil {
			mm := cp.byRelay[rp.id]
			for id, m := range mm {
				if !stale(m) {
					continue
				}
				p.removeLocked(sh, cp, rp, ch, mm, id)
				if emit && m.jl {
					p.event(ch, m.info, true)
				}
			}
		}
		sh.mu.Unlock()
	}
}

// streamEnded marks r's relay gone (since now) when r was its current
// stream. Called when r's receive loop ends.
func (p *presence) streamEnded(r *relayStream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rp := p.relays[r.relayID]; rp != nil && rp.cur == r {
		rp.cur, rp.goneAt, rp.syncing = nil, time.Now(), false
	}
}

// expire drops the members of relays gone for longer than grace (their
// leaves are emitted).
func (p *presence) expire(now time.Time, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, rp := range p.relays {
		if rp.cur != nil || now.Sub(rp.goneAt) < grace {
			continue
		}
		p.removeWhere(rp, true, func(*member) bool { return true })
		delete(p.relays, id)
		p.s.m.presenceRelaysExpired.Inc()
	}
	p.s.m.presenceRelays.Set(float64(len(p.relays)))
}

// event queues a join (leave false) or leave of info on ch for this tick,
// cancelling the opposite event of the same client. Caller holds the
// channel's shard lock (evMu is a leaf).
func (p *presence) event(ch string, info *heraldv1.ClientInfo, leave bool) {
	p.evMu.Lock()
	defer p.evMu.Unlock()
	ce := p.pending[ch]
	if ce == nil {
		ce = &chanEvents{idx: map[string]int{}}
		p.pending[ch] = ce
	}
	id := info.GetClient()
	if i, ok := ce.idx[id]; ok {
		if ce.list[i].GetLeave() != leave {
			ce.list[i] = nil // joined and left within the tick: nothing to tell
			delete(ce.idx, id)
			ce.n--
		}
		return
	}
	ce.idx[id] = len(ce.list)
	ce.list = append(ce.list, &heraldv1.PresenceEvent{Channel: ch, Client: info, Leave: leave})
	ce.n++
}

// flush sends this tick's events of the channels this controller owns to
// the relay streams interested in them: at most max per channel (the rest
// dropped and counted), one message per stream. It never blocks.
func (p *presence) flush(max int) {
	p.evMu.Lock()
	pend := p.pending
	if len(pend) == 0 {
		p.evMu.Unlock()
		return
	}
	p.pending = map[string]*chanEvents{}
	p.evMu.Unlock()
	s := p.s
	byStream := map[*relayStream][]*heraldv1.PresenceEvent{}
	for ch, ce := range pend {
		if ce.n == 0 || !s.ownsChannel(ch) {
			continue
		}
		evs := make([]*heraldv1.PresenceEvent, 0, min(ce.n, max))
		for _, ev := range ce.list {
			if ev == nil {
				continue
			}
			if len(evs) == max {
				s.m.presenceEvents.WithLabelValues("dropped").Add(float64(ce.n - max))
				break
			}
			evs = append(evs, ev)
		}
		s.m.presenceEvents.WithLabelValues("emitted").Add(float64(len(evs)))
		sh := s.interest.shard(ch)
		sh.mu.RLock()
		for _, r := range sh.m[ch] {
			byStream[r] = append(byStream[r], evs...)
		}
		sh.mu.RUnlock()
	}
	for r, evs := range byStream {
		r.enqueue(&heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Presence{Presence: &heraldv1.PresenceEvents{Events: evs}}}, s.m)
	}
}

// run flushes events every PresenceTick and expires gone relays, until
// ctx ends (owned by Run).
func (p *presence) run(ctx context.Context) {
	cfg := &p.s.cfg
	lastExpire := time.Now()
	tick.Every(ctx, cfg.PresenceTick, func(now time.Time) {
		p.flush(cfg.PresenceEvents)
		if now.Sub(lastExpire) >= min(time.Second, cfg.PresenceGrace/4) {
			lastExpire = now
			p.expire(now, cfg.PresenceGrace)
		}
	})
}

// members returns ch's members (nil with statsOnly) and counts, over all
// relays; a client reported by two relays (never, ids are per connection)
// counts once.
func (p *presence) members(ch string, statsOnly bool) (clients []*heraldv1.ClientInfo, numClients, numUsers int) {
	sh := p.shard(ch)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	cp := sh.m[ch]
	if cp == nil {
		return nil, 0, 0
	}
	users := make(map[string]struct{})
	seen := make(map[string]struct{}, cp.n)
	if !statsOnly {
		clients = make([]*heraldv1.ClientInfo, 0, cp.n)
	}
	for _, mm := range cp.byRelay {
		for id, m := range mm {
			if _, dup := seen[id]; dup {
				continue
			}
			seen[id] = struct{}{}
			users[m.info.GetUser()] = struct{}{}
			if !statsOnly {
				clients = append(clients, m.info)
			}
		}
	}
	return clients, len(seen), len(users)
}

// ownsChannel reports whether this controller owns ch's partition now.
func (s *Server) ownsChannel(ch string) bool {
	n := s.numParts.Load()
	if n <= 0 {
		return false
	}
	return s.part(partition.For(ch, n)) != nil
}

// Presence implements heraldv1.RouterServer: the members of a channel
// over all relays, from the owner of its partition (owned=false
// elsewhere).
func (s *Server) Presence(_ context.Context, req *heraldv1.PresenceRequest) (*heraldv1.PresenceResponse, error) {
	ch := req.GetChannel()
	if ch == "" {
		return nil, status.Error(codes.InvalidArgument, "channel is required")
	}
	if !s.ownsChannel(ch) {
		s.m.presenceRequests.WithLabelValues("not_owner").Inc()
		return &heraldv1.PresenceResponse{Owned: false}, nil
	}
	clients, nc, nu := s.presence.members(ch, req.GetStatsOnly())
	s.m.presenceRequests.WithLabelValues("ok").Inc()
	return &heraldv1.PresenceResponse{Owned: true, Clients: clients, NumClients: uint32(nc), NumUsers: uint32(nu)}, nil
}
