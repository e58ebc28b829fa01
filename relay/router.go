package relay

import (
	"bytes"
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/protocol"
	"github.com/herald-chat/herald/internal/tick"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

const numShards = 64

// itemKind is what a loop task does for one channel.
type itemKind uint8

const (
	itemPub      itemKind = iota // deliver frame (seq) to live subscriptions
	itemReady                    // the channel is positioned at (epoch, seq)
	itemFail                     // the channel could not be positioned
	itemReset                    // continuity broke (epoch change, lost gap): subscribers must recover
	itemSkip                     // merged into an earlier item by loop.coalesce
	itemPresence                 // join/leave pushes (grp.frame; seq: how many) for subscriptions with joinLeave
)

// item is one unit of work for a loop, for one channel.
type item struct {
	kind  itemKind
	ch    string
	seq   uint64 // itemReady: the position
	epoch string
	grp   *pushGroup // itemPub: consecutive publications in one shared frame
	// zframe is grp's frame compressed (permessage-deflate), made by the
	// loop on first use for a client that negotiated compression.
	zframe []byte
	// ahead: some subscribers already got grp with an earlier publication
	// of the channel (loop.lookahead), so no later group may be merged into
	// it (they would then need a copy of the rest).
	ahead bool
	// posted is when the router handed the item to the loop (unix ns; 0 in
	// tests that deliver directly): the start of herald_relay_fanout_seconds.
	posted int64
}

// pushGroup is a run of consecutive publications of one channel (seqs
// first..last) from one controller batch, encoded once per relay into one
// text frame whose payload is their pushes separated by '\n' (the
// protocol's several-messages-per-frame form; AppendRaw strips newlines
// from the data, so '\n' only separates pushes). Every subscriber's writev
// shares the frame; one that must skip the first publications (positioned
// in the middle of the run) gets a copy of the rest.
type pushGroup struct {
	first, last uint64
	buf         []byte // maxServerHeader bytes reserved, then the payload
	frame       []byte // the complete frame, set by finish before dispatch
}

func newPushGroup(p *heraldv1.Publication) *pushGroup {
	g := &pushGroup{first: p.GetSeq(), last: p.GetSeq()}
	g.buf = appendPushPayload(make([]byte, maxServerHeader, maxServerHeader+pushSizeHint(p)), p)
	return g
}

// add appends p, the publication after g.last.
func (g *pushGroup) add(p *heraldv1.Publication) {
	g.buf = appendPushPayload(append(g.buf, '\n'), p)
	g.last = p.GetSeq()
}

func (g *pushGroup) finish() { g.frame = framePrefixed(g.buf) }

// suffix returns the payload of g's publications after the first k.
func (g *pushGroup) suffix(k uint64) []byte {
	payload := g.buf[maxServerHeader:]
	for ; k > 0; k-- {
		i := bytes.IndexByte(payload, '\n')
		if i < 0 {
			return nil
		}
		payload = payload[i+1:]
	}
	return payload
}

// entryState is the lifecycle of a channel entry.
type entryState uint8

const (
	entrySyncing entryState = iota // interest sent, asking the owner for the position
	entrySynced
	entryFilling    // a gap was seen; recovering the missing publications
	entryRechecking // its controller stream (re)opened: fetching what may have been missed
	entryFailed     // positioning failed (or its controller is gone); the next join retries
)

// entry is one channel with local subscribers. Guarded by its shard's mutex.
//
// With a channel per user there is one per connection: it is kept in the
// 96-byte size class (TestEntrySizeClass), what only a syncing or filling
// entry needs behind a pointer.
type entry struct {
	ch        string
	epoch     string
	last      uint64 // last seq broadcast (no push with seq <= last goes out)
	perLoop   []int32
	held      *[]*heraldv1.Publication // pushes held while syncing or filling, nil when none
	idleSince int64                    // unix ns the last subscriber left, 0 = has subscribers
	part      int32                    // Kafka partition of ch
	total     int32                    // local subscribers, all loops
	state     entryState
	queued    bool
}

// pending returns the publications held for e.
func (e *entry) pending() []*heraldv1.Publication {
	if e.held == nil {
		return nil
	}
	return *e.held
}

type shard struct {
	mu sync.Mutex // guards m and every entry in it; no I/O and no other lock under it
	m  map[string]*entry
}

// router maps channels to local subscribers (per event loop) and keeps every
// channel's broadcast gap-free and duplicate-free (I4). Lock order: shard
// mutex, then nothing (no I/O under a shard lock; loop tasks are queued
// after unlocking).
type router struct {
	srv    *Server
	seed   maphash.Seed
	shards [numShards]shard

	// imu orders interest messages: the janitor deletes idle entries and
	// queues their removal under it, and a new entry's add is queued under
	// it, so a re-added channel's add never precedes its removal on any
	// link. Only non-blocking work runs under it (links.addInterest and
	// removeInterest queue per link, see link.enqueue): a controller that
	// does not read cannot hold it. Order: imu, then a shard mutex or a
	// link's qmu.
	imu sync.Mutex

	// Workers' queues: channels to position (first local subscriber),
	// taken in batches, and channels to gap-fill or re-check, taken one at
	// a time so that the workers run those in parallel. qmu guards syncq
	// and queue (a leaf).
	qmu    sync.Mutex
	syncq  []string
	queue  []string
	notify chan struct{}

	// batches recycles batch structs with their per-loop slices and group
	// map: a controller batch of n publications would otherwise allocate
	// them afresh (the per-loop slices growing 1, 2, 4… items of 96 bytes).
	// Loops copy the items they are posted, so a dispatched batch is free.
	batches sync.Pool
}

func newRouter(srv *Server) *router {
	r := &router{srv: srv, seed: maphash.MakeSeed(), notify: make(chan struct{}, 1)}
	for i := range r.shards {
		r.shards[i].m = map[string]*entry{}
	}
	return r
}

func (r *router) shard(ch string) *shard {
	return &r.shards[maphash.String(r.seed, ch)%numShards]
}

// join adds a subscriber of loop li. It returns the entry's copy of the
// channel name (to share) and, when the channel is positioned, its epoch and
// last seq; otherwise the loop gets an itemReady (or itemFail) later.
func (r *router) join(ch string, li int) (name, epoch string, last uint64, synced bool) {
	sh := r.shard(ch)
	sh.mu.Lock()
	e := sh.m[ch]
	need := false
	if e == nil {
		e = &entry{ch: ch, part: partition.For(ch, int32(r.srv.cfg.Partitions)), perLoop: make([]int32, r.srv.numLoops)}
		sh.m[ch] = e
		need = true
	} else if e.state == entryFailed {
		e.state = entrySyncing
		need = true
	}
	e.perLoop[li]++
	e.total++
	e.idleSince = 0
	synced = e.state == entrySynced || e.state == entryFilling || e.state == entryRechecking
	name, epoch, last = e.ch, e.epoch, e.last
	if need {
		need = !e.queued
		e.queued = true
	}
	sh.mu.Unlock()
	if need {
		r.enqueueSync(ch)
	}
	return name, epoch, last, synced
}

// leave removes a subscriber of loop li; an entry without subscribers is
// dropped by the janitor after the grace period.
func (r *router) leave(ch string, li int) {
	sh := r.shard(ch)
	sh.mu.Lock()
	if e := sh.m[ch]; e != nil && e.perLoop[li] > 0 {
		e.perLoop[li]--
		e.total--
		if e.total == 0 {
			e.idleSince = time.Now().UnixNano()
		}
	}
	sh.mu.Unlock()
}

// position returns the epoch and last seq of a synced channel.
func (r *router) position(ch string) (epoch string, last uint64, ok bool) {
	sh := r.shard(ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[ch]; e != nil && (e.state == entrySynced || e.state == entryFilling || e.state == entryRechecking) {
		return e.epoch, e.last, true
	}
	return "", 0, false
}

// channels returns every channel with an entry (the interest set).
func (r *router) channels() []string {
	var out []string
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for ch := range sh.m {
			out = append(out, ch)
		}
		sh.mu.Unlock()
	}
	return out
}

// batch collects loop items while the router processes publications.
type batch struct {
	perLoop [][]item
	groups  []*pushGroup
	// open is, per entry, its group that is the entry's last item in this
	// batch (publications that follow join it).
	open map[*entry]*pushGroup
}

func (r *router) newBatch() *batch {
	if b, _ := r.batches.Get().(*batch); b != nil && len(b.perLoop) == r.srv.numLoops {
		return b
	}
	return &batch{perLoop: make([][]item, r.srv.numLoops)}
}

// maxPooledItems bounds the per-loop slice kept by a recycled batch (a
// recovery's catch-up can make one of thousands of items).
const maxPooledItems = 4096

// release recycles b; nothing of it may be used afterwards.
func (r *router) release(b *batch) {
	for li, items := range b.perLoop {
		if cap(items) > maxPooledItems {
			b.perLoop[li] = nil
			continue
		}
		clear(items) // drop the groups and strings they point to
		b.perLoop[li] = items[:0]
	}
	if cap(b.groups) > maxPooledItems {
		b.groups = nil
	}
	clear(b.groups)
	b.groups = b.groups[:0]
	clear(b.open)
	r.batches.Put(b)
}

// add queues it for every loop with subscribers of e. Caller holds the lock.
func (b *batch) add(e *entry, it item) {
	if it.kind != itemPub && b.open != nil {
		delete(b.open, e) // later publications must come after it
	}
	for li, n := range e.perLoop {
		if n > 0 {
			b.perLoop[li] = append(b.perLoop[li], it)
		}
	}
}

// addPub queues p, the next publication of e: appended to e's group of this
// batch when it is the last item of e, else in a new group. Caller holds
// the lock.
func (b *batch) addPub(e *entry, p *heraldv1.Publication) {
	if g := b.open[e]; g != nil && g.last+1 == p.GetSeq() {
		g.add(p)
		return
	}
	g := newPushGroup(p)
	if b.open == nil {
		b.open = make(map[*entry]*pushGroup)
	}
	b.open[e] = g
	b.groups = append(b.groups, g)
	b.add(e, item{kind: itemPub, ch: e.ch, grp: g})
}

// dispatch hands each loop its items as one task.
func (r *router) dispatch(b *batch) {
	for _, g := range b.groups {
		g.finish()
	}
	now := time.Now().UnixNano()
	for li, items := range b.perLoop {
		if len(items) == 0 {
			continue
		}
		l := r.srv.loopAt(li)
		if l == nil {
			continue
		}
		for i := range items {
			items[i].posted = now
		}
		l.post(items)
	}
	r.release(b)
}

// handleBatch applies a controller's publications. Called from the
// controller session goroutines (links.session), one per controller,
// concurrently; it takes shard locks and posts loop tasks, never blocks.
func (r *router) handleBatch(pubs []*heraldv1.Publication) {
	b := r.newBatch()
	for _, p := range pubs {
		sh := r.shard(p.GetChannel())
		sh.mu.Lock()
		e := sh.m[p.GetChannel()]
		if e == nil {
			sh.mu.Unlock()
			r.srv.m.pushesDropped.WithLabelValues("unknown").Inc()
			continue
		}
		r.applyLocked(e, p, b)
		sh.mu.Unlock()
	}
	r.dispatch(b)
}

// applyLocked moves one publication through e's state machine: hold it while
// positioning, drop it when not new, broadcast it when next, or start a gap
// fill. Caller holds the shard lock.
func (r *router) applyLocked(e *entry, p *heraldv1.Publication, b *batch) {
	switch e.state {
	case entrySyncing, entryFilling, entryRechecking:
		r.hold(e, p)
		return
	case entryFailed:
		return
	}
	if p.GetEpoch() != e.epoch {
		if e.epoch != "" || e.last != 0 {
			// The channel restarted with a new epoch: positions are void.
			b.add(e, item{kind: itemReset, ch: e.ch})
		}
		e.epoch, e.last = p.GetEpoch(), 0
	}
	switch seq := p.GetSeq(); {
	case seq <= e.last:
		r.srv.m.pushesDropped.WithLabelValues("duplicate").Inc()
	case seq == e.last+1:
		e.last = seq
		b.addPub(e, p)
	default:
		e.state = entryFilling
		r.hold(e, p)
		if !e.queued {
			e.queued = true
			r.enqueue(e.ch)
		}
	}
}

func (r *router) hold(e *entry, p *heraldv1.Publication) {
	if len(e.pending()) >= r.srv.cfg.PendingLimit {
		// Dropping is safe: the hole shows up as a gap and is filled.
		r.srv.m.pushesDropped.WithLabelValues("overflow").Inc()
		return
	}
	if e.held == nil {
		e.held = new([]*heraldv1.Publication)
	}
	*e.held = append(*e.held, p)
}

// drainLocked re-applies held publications in seq order.
func (r *router) drainLocked(e *entry, b *batch) {
	held := e.pending()
	e.held = nil
	slices.SortFunc(held, func(a, b *heraldv1.Publication) int {
		switch {
		case a.GetSeq() < b.GetSeq():
			return -1
		case a.GetSeq() > b.GetSeq():
			return 1
		}
		return 0
	})
	for _, p := range held {
		r.applyLocked(e, p, b)
	}
}

// encodePush builds the complete WebSocket frame of one publication push.
func encodePush(p *heraldv1.Publication) []byte {
	g := newPushGroup(p)
	g.finish()
	return g.frame
}

func pushSizeHint(p *heraldv1.Publication) int {
	m := p.GetMessage()
	return 128 + len(p.GetChannel()) + len(m.GetData()) + len(m.GetInfo()) + len(m.GetSender())
}

// appendPushPayload appends the push JSON of p.
func appendPushPayload(dst []byte, p *heraldv1.Publication) []byte {
	pub := protocol.Publication{Offset: p.GetSeq()}
	var info protocol.ClientInfo
	if m := p.GetMessage(); m != nil {
		pub.Data = m.GetData()
		info = protocol.ClientInfo{User: m.GetSender(), ConnInfo: m.GetInfo()}
		pub.Info = &info
	}
	return protocol.AppendPush(dst, p.GetChannel(), &pub)
}

// --- sync and gap-fill workers ---------------------------------------------

func (r *router) enqueue(ch string) {
	r.qmu.Lock()
	r.queue = append(r.queue, ch)
	r.qmu.Unlock()
	r.wake()
}

// enqueueSync queues a new entry's positioning.
func (r *router) enqueueSync(ch string) {
	r.qmu.Lock()
	r.syncq = append(r.syncq, ch)
	r.qmu.Unlock()
	r.wake()
}

// wake makes sure a worker looks at the queues.
func (r *router) wake() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// maxSyncBatch bounds the new channels a worker positions together: one
// interest message and one Positions call per controller for all of them.
const maxSyncBatch = 256

// take moves up to maxSyncBatch queued syncs into syncs and takes one gap
// fill or re-check (ok false when there is none); it wakes another worker
// when work is left.
func (r *router) take(syncs []string) (_ []string, ch string, ok bool) {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	n := min(len(r.syncq), maxSyncBatch)
	syncs = append(syncs, r.syncq[:n]...)
	clear(r.syncq[:n])
	r.syncq = r.syncq[n:]
	if len(r.queue) > 0 {
		ch, ok = r.queue[0], true
		r.queue[0] = ""
		r.queue = r.queue[1:]
	}
	if len(r.syncq) > 0 || len(r.queue) > 0 {
		r.wake()
	}
	return syncs, ch, ok
}

// worker runs syncs and gap fills until ctx ends (RouterWorkers of them,
// started and waited for by Server.Run). It blocks on controller RPCs,
// each bounded by RPCTimeout, never while holding a lock. It positions what
// queued meanwhile together, so a connect storm of new channels (personal
// channels) costs a few calls instead of a round trip per channel.
func (r *router) worker(ctx context.Context) {
	var chs []string
	var jobs []syncJob
	for {
		var ch string
		var ok bool
		chs, ch, ok = r.take(chs[:0])
		if len(chs) == 0 && !ok {
			select {
			case <-ctx.Done():
				return
			case <-r.notify:
				continue
			}
		}
		jobs = jobs[:0]
		for _, c := range chs {
			if job, ok := r.process(ctx, c); ok {
				jobs = append(jobs, job)
			}
		}
		if ok {
			if job, ok := r.process(ctx, ch); ok {
				jobs = append(jobs, job)
			}
		}
		r.syncBatch(ctx, jobs)
		clear(jobs)
		clear(chs)
	}
}

// syncJob is an entry waiting for its position.
type syncJob struct {
	sh *shard
	e  *entry
}

// process runs ch's queued gap fill or re-check; a new entry's sync is
// returned instead, for syncBatch.
func (r *router) process(ctx context.Context, ch string) (syncJob, bool) {
	sh := r.shard(ch)
	sh.mu.Lock()
	e := sh.m[ch]
	if e == nil {
		sh.mu.Unlock()
		return syncJob{}, false
	}
	e.queued = false
	state, since, epoch := e.state, e.last, e.epoch
	var target uint64
	if state == entryFilling {
		target = minSeq(e.pending()) - 1
	}
	sh.mu.Unlock()

	switch state {
	case entrySyncing:
		return syncJob{sh, e}, true
	case entryFilling:
		r.fill(ctx, sh, e, since, epoch, target)
	case entryRechecking:
		r.recheckOne(ctx, sh, e, since, epoch)
	}
	return syncJob{}, false
}

// recheck re-checks the position of every synced channel of parts (whose
// controller stream just opened, or whose ownership moved): publications
// streamed while no stream carried them are fetched with Recover and
// broadcast in order, without waiting for a later publication to reveal the
// gap.
func (r *router) recheck(parts []int32) {
	if len(parts) == 0 {
		return
	}
	set := make(map[int32]bool, len(parts))
	for _, p := range parts {
		set[p] = true
	}
	var chs []string
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for ch, e := range sh.m {
			if set[e.part] && e.state == entrySynced {
				e.state = entryRechecking
				if !e.queued {
					e.queued = true
					chs = append(chs, ch)
				}
			}
		}
		sh.mu.Unlock()
	}
	r.srv.m.rechecks.Add(float64(len(chs)))
	for _, ch := range chs {
		r.enqueue(ch)
	}
}

// recheckOne asks the owner for what follows since and broadcasts it. When
// that is out of reach the subscribers are told to recover (itemReset). An
// empty epoch is unknown (the channel was positioned before its first
// publication), not a change: the owner's epoch is adopted.
func (r *router) recheckOne(ctx context.Context, sh *shard, e *entry, since uint64, epoch string) {
	resp, err := r.srv.links.recoverRetry(ctx, &heraldv1.RecoverRequest{Channel: e.ch, Since: since, Epoch: epoch, Limit: recoverSlack})
	var pubs []*heraldv1.Publication
	ok := err == nil && (epoch == "" || resp.GetEpoch() == epoch)
	var top uint64
	if ok {
		epoch = resp.GetEpoch()
		top = resp.GetOffset()
		pubs = resp.GetPublications()
		if top > since && (len(pubs) == 0 || pubs[len(pubs)-1].GetSeq() < top) {
			pubs, ok = r.srv.recoverRange(ctx, e.ch, since, epoch, top)
		}
	}
	r.settle(sh, e, entryRechecking, pubs, ok, top, func() {
		if ok && e.epoch == "" {
			e.epoch = epoch
		}
	}, func() {
		switch {
		case err == nil && !ok:
			e.epoch, e.last = resp.GetEpoch(), resp.GetOffset()
		case e.last < top:
			e.last = top
		}
	})
}

// settle ends a re-check or gap fill of e, which must still be the shard's
// entry for its channel and in state want (else it was replaced or moved on
// meanwhile and nothing happens). Under the shard lock it marks e synced,
// runs adopt, applies pubs when ok and, when the channel could not be
// brought up to target, tells the subscribers to recover (itemReset) and
// runs reset to set the position; then it releases what was held and
// broadcasts. adopt and reset run under sh.mu and must not block.
func (r *router) settle(sh *shard, e *entry, want entryState, pubs []*heraldv1.Publication, ok bool, target uint64, adopt, reset func()) {
	b := r.newBatch()
	sh.mu.Lock()
	if sh.m[e.ch] != e || e.state != want {
		sh.mu.Unlock()
		return
	}
	e.state = entrySynced
	if adopt != nil {
		adopt()
	}
	if ok {
		for _, p := range pubs {
			r.applyLocked(e, p, b)
		}
	}
	if !ok || e.last < target {
		b.add(e, item{kind: itemReset, ch: e.ch})
		reset()
	}
	r.drainLocked(e, b)
	sh.mu.Unlock()
	r.dispatch(b)
}

// orphan tells the subscribers of every channel of parts, which no
// controller owns any more, that their stream lost continuity (itemReset:
// client-side subscriptions resubscribe with recovery, server-side ones
// reconnect), and marks the channels failed so that new subscribers
// position them afresh from the next owner.
func (r *router) orphan(parts []int32) {
	set := make(map[int32]bool, len(parts))
	for _, p := range parts {
		set[p] = true
	}
	b := r.newBatch()
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for _, e := range sh.m {
			if !set[e.part] || e.state == entrySyncing || e.state == entryFailed {
				continue
			}
			e.state = entryFailed
			e.held = nil
			b.add(e, item{kind: itemReset, ch: e.ch})
			n++
		}
		sh.mu.Unlock()
	}
	r.srv.m.orphaned.Add(float64(n))
	if n > 0 {
		r.srv.log.Warn("controller gone: subscribers told to recover", "channels", n, "partitions", len(parts))
	}
	r.dispatch(b)
}

// syncBatch positions new entries on a router worker: interest adds first
// (one message queued per controller stream; never blocks), then the
// owners' positions (one Positions call per owner, all owners at once, each
// owner's channels positioned as soon as it answers), then a Recover,
// retried, for each channel no owner answered, and the publications held
// meanwhile. It blocks the worker for the slowest owner, at most about
// RPCTimeout for Positions plus the Recover fallback of unanswered
// channels; a controller that does not answer delays none of the other
// owners' channels.
func (r *router) syncBatch(ctx context.Context, jobs []syncJob) {
	if len(jobs) == 0 {
		return
	}
	names := make([]string, len(jobs))
	for i, j := range jobs {
		names[i] = j.e.ch
	}
	r.imu.Lock()
	r.srv.links.addInterest(names...)
	r.imu.Unlock()
	answered := make([]bool, len(jobs)) // index i written only by the call of chs[i]'s owner
	r.srv.links.positions(ctx, names, func(i int, p *heraldv1.Position) {
		answered[i] = true
		r.synced(jobs[i].sh, jobs[i].e, p.GetEpoch(), p.GetOffset(), nil)
	})
	// Once a channel without an answer could not be positioned with
	// Recover either (retried for seconds, or its controller does not
	// answer), the batch's other unanswered channels of the same owner
	// fail at once instead of retrying one after another for minutes:
	// their subscribers get an error now and resubscribe.
	var unreachable map[int]error // owner link index (-1 unknown) → error
	failed := 0
	var lastErr error
	for i, j := range jobs {
		if answered[i] {
			continue
		}
		owner := r.srv.links.ownerOf(j.e.ch)
		err := unreachable[owner]
		if err == nil {
			resp, rerr := r.srv.links.recoverRetry(ctx, &heraldv1.RecoverRequest{Channel: j.e.ch})
			if rerr == nil {
				r.synced(j.sh, j.e, resp.GetEpoch(), resp.GetOffset(), nil)
				continue
			}
			if unreachable == nil {
				unreachable = make(map[int]error)
			}
			unreachable[owner], err = rerr, rerr
		}
		failed++
		lastErr = err
		r.synced(j.sh, j.e, "", 0, err)
	}
	if failed > 0 {
		r.srv.log.Warn("positioning channels failed", "channels", failed, "err", lastErr)
	}
}

// synced applies a new entry's position (or the failure to get it) and
// broadcasts what was held meanwhile (the caller logs failures).
func (r *router) synced(sh *shard, e *entry, epoch string, last uint64, err error) {
	b := r.newBatch()
	sh.mu.Lock()
	if sh.m[e.ch] != e {
		sh.mu.Unlock()
		return
	}
	if err != nil {
		e.state = entryFailed
		e.held = nil
		b.add(e, item{kind: itemFail, ch: e.ch})
		if e.total == 0 {
			delete(sh.m, e.ch)
		}
		sh.mu.Unlock()
		r.dispatch(b)
		return
	}
	e.state = entrySynced
	e.epoch, e.last = epoch, last
	b.add(e, item{kind: itemReady, ch: e.ch, epoch: e.epoch, seq: e.last})
	r.drainLocked(e, b)
	sh.mu.Unlock()
	r.dispatch(b)
}

// fill recovers the publications between e.last and the first held one.
func (r *router) fill(ctx context.Context, sh *shard, e *entry, since uint64, epoch string, target uint64) {
	var pubs []*heraldv1.Publication
	ok := true
	if target > since {
		pubs, ok = r.srv.recoverRange(ctx, e.ch, since, epoch, target)
	}
	r.settle(sh, e, entryFilling, pubs, ok, target, nil, func() {
		// Out of reach: skip ahead; subscribers must recover themselves.
		if e.last < target {
			e.last = target
		}
	})
}

func minSeq(ps []*heraldv1.Publication) uint64 {
	var m uint64
	for i, p := range ps {
		if i == 0 || p.GetSeq() < m {
			m = p.GetSeq()
		}
	}
	return m
}

// janitor drops entries that have had no subscriber for the grace period and
// queues the interest removals (never blocks on a controller). It runs on
// its own goroutine, started and waited for by Server.Run.
func (r *router) janitor(ctx context.Context) {
	grace := r.srv.cfg.InterestGrace
	tick.Every(ctx, max(grace/4, 50*time.Millisecond), func(now time.Time) {
		var removed []string
		r.imu.Lock()
		for i := range r.shards {
			sh := &r.shards[i]
			sh.mu.Lock()
			for ch, e := range sh.m {
				if e.total == 0 && e.idleSince != 0 && now.UnixNano()-e.idleSince >= int64(grace) {
					delete(sh.m, ch)
					removed = append(removed, ch)
				}
			}
			sh.mu.Unlock()
		}
		if len(removed) > 0 {
			r.srv.links.removeInterest(removed)
		}
		r.imu.Unlock()
	})
}
