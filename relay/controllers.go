package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/rpcflow"
	"github.com/herald-chat/herald/internal/tick"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// interestChunk caps the channels of one InterestDelta.
const interestChunk = 1000

// links holds one stream per controller and the partition ownership they
// announced, to route Recover to the owner.
//
// Nothing here blocks one controller's work on another's: each link has
// its own stream, its own sender goroutine and its own bounded outbound
// queue, and the RPCs (Positions, Recover) go to one controller each with
// RPCTimeout, concurrently for different owners.
type links struct {
	srv   *Server
	links []*link

	// mu guards owners and lost; a leaf: no I/O and no other lock under it.
	mu     sync.RWMutex
	owners map[int32]int // partition → index in links
	// lost records, per link index, the partitions a broken stream owned
	// and when it broke; watch orphans those still unowned after
	// ControllerGrace.
	lost map[int]lostParts
}

type lostParts struct {
	at    time.Time
	parts []int32
}

// link is one controller: a gRPC client, its current stream and the
// stream's outbound queue of interest deltas.
//
// Goroutines: the session goroutine (links.run → session) opens the stream,
// sends Hello and the interest set, then receives (publications,
// ownership) until the stream breaks; the sender goroutine (started and
// waited for by the session) is the only other goroutine that calls Send,
// and only after the session's own sends are done. Both may block in gRPC
// flow control for as long as the controller does not read: that stalls
// this link only. Router workers and the janitor only enqueue (never
// block) while they hold router.imu.
type link struct {
	idx    int
	addr   string
	cc     *grpc.ClientConn
	client heraldv1.RouterClient
	// max is the bound of q in channels (Config.ControllerQueue).
	max int

	// qmu guards open, q, head, queued and brk. A leaf: taken under
	// router.imu (enqueue) and taking shard locks only while the session
	// snapshots the interest set; no I/O under it.
	qmu sync.Mutex
	// open: the current stream takes deltas. While no stream is open they
	// are dropped: the next stream starts with the whole interest set.
	open bool
	// q[head:] are the deltas not yet taken by the sender, in order;
	// queued counts their channels.
	q      []queuedDelta
	head   int
	queued int
	// brk breaks the current stream (its context's cancel).
	brk context.CancelFunc
	// wake (capacity 1) tells the sender that q has something.
	wake chan struct{}

	// up: a stream is open and its Hello and interest set were sent
	// (Ready, tests). Written by the session goroutine.
	up atomic.Bool
	// noPositions: the controller answered Positions with Unimplemented (an
	// older one); asked again once its stream reopens.
	noPositions atomic.Bool
	// stalledAt is when (unix ns) a Positions or Recover call to this
	// controller last ran out of RPCTimeout without an answer since; 0 when
	// it answers. For RPCTimeout after that, calls to it fail at once
	// (errStalled) instead of tying up a router or pool worker for
	// RPCTimeout each; the first call after that probes it again, and any
	// message on its stream clears it.
	stalledAt atomic.Int64
}

// queuedDelta is one interest message waiting for a link's sender and how
// many channels it carries.
type queuedDelta struct {
	msg *heraldv1.RelayMessage
	n   int
}

func newLinks(srv *Server, addrs []string, dialOpts ...grpc.DialOption) (*links, error) {
	ls := &links{srv: srv, owners: map[int32]int{}, lost: map[int]lostParts{}}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, rpcflow.DialOptions()...)
	opts = append(opts, dialOpts...)
	for i, a := range addrs {
		cc, err := grpc.NewClient(a, opts...)
		if err != nil {
			ls.close()
			return nil, fmt.Errorf("creating gRPC client for controller %s: %w", a, err)
		}
		ls.links = append(ls.links, &link{idx: i, addr: a, cc: cc, client: heraldv1.NewRouterClient(cc),
			max: srv.cfg.ControllerQueue, wake: make(chan struct{}, 1)})
	}
	return ls, nil
}

func (ls *links) close() {
	for _, l := range ls.links {
		_ = l.cc.Close()
	}
}

// up reports how many streams are open. It never blocks.
func (ls *links) up() int {
	n := 0
	for _, l := range ls.links {
		if l.up.Load() {
			n++
		}
	}
	return n
}

// addInterest queues interest adds for chs on every open stream. A stream
// that is down gets the whole interest set when it reconnects. It never
// blocks; the caller holds router.imu, which orders the deltas.
func (ls *links) addInterest(chs ...string) {
	ls.sendInterest(chs, func(part []string) *heraldv1.InterestDelta { return &heraldv1.InterestDelta{Add: part} })
}

// removeInterest queues interest removals on every open stream, like
// addInterest.
func (ls *links) removeInterest(chs []string) {
	ls.sendInterest(chs, func(part []string) *heraldv1.InterestDelta { return &heraldv1.InterestDelta{Remove: part} })
}

// sendInterest queues chs on every open stream in deltas of at most
// interestChunk channels (one message shared by all links: gRPC only reads
// it).
func (ls *links) sendInterest(chs []string, delta func([]string) *heraldv1.InterestDelta) {
	for len(chs) > 0 {
		n := min(len(chs), interestChunk)
		msg := &heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Interest{Interest: delta(chs[:n])}}
		for _, l := range ls.links {
			if l.enqueue(msg, n) {
				ls.srv.m.controllerQueueFull.Inc()
				ls.srv.log.Warn("controller not reading interest changes: its stream is reopened with the whole interest set",
					"controller", l.addr, "queue", l.max)
			}
		}
		chs = chs[n:]
	}
}

// enqueue queues msg (n channels) for the sender of l's open stream; it is
// dropped when no stream is open. When the queue would exceed l.max
// channels (the controller has not been reading), the queue is dropped and
// the stream broken (full reports it): its session ends, run reopens it,
// and the new stream starts with the whole interest set, which replaces
// the dropped deltas (a delta may carry removes, and only a new stream
// clears the controller's interest set, so they cannot be merged into a
// resend on the same stream). Meanwhile the broken stream's partitions are
// lost: re-checked with Recover once a stream claims them again, orphaned
// after ControllerGrace otherwise. Never blocks.
func (l *link) enqueue(msg *heraldv1.RelayMessage, n int) (full bool) {
	l.qmu.Lock()
	if !l.open {
		l.qmu.Unlock()
		return false
	}
	if l.queued > 0 && l.queued+n > l.max {
		l.dropLocked()
		brk := l.brk
		l.qmu.Unlock()
		brk()
		return true
	}
	l.q = append(l.q, queuedDelta{msg, n})
	l.queued += n
	l.qmu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return false
}

// dropLocked closes the queue to deltas and forgets the queued ones.
// Caller holds l.qmu.
func (l *link) dropLocked() {
	l.open = false
	clear(l.q)
	l.q, l.head, l.queued = l.q[:0], 0, 0
}

// next takes the oldest queued delta, ok false when there is none.
func (l *link) next() (d queuedDelta, ok bool) {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.head == len(l.q) {
		return queuedDelta{}, false
	}
	d = l.q[l.head]
	l.q[l.head] = queuedDelta{}
	l.head++
	l.queued -= d.n
	if l.head == len(l.q) {
		l.q, l.head = l.q[:0], 0
	}
	return d, true
}

// sender is the sender goroutine of one stream: it sends the queued
// deltas in order until ctx (the stream's) ends or a Send fails, which
// breaks the stream (brk) so that the session's Recv ends too. It blocks
// in Send while the controller does not read; that blocks nobody else.
func (l *link) sender(ctx context.Context, stream heraldv1.Router_StreamClient, brk context.CancelFunc) {
	for {
		d, ok := l.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-l.wake:
				continue
			}
		}
		if err := stream.Send(d.msg); err != nil {
			brk()
			return
		}
	}
}

// run keeps the stream to one controller open until ctx ends: Hello, the
// current interest set, then publications and ownership until it breaks.
// It runs on its own goroutine per link (started and waited for by
// Server.Run) and blocks for the link's lifetime.
func (ls *links) run(ctx context.Context, l *link) {
	srv := ls.srv
	backoff := 100 * time.Millisecond
	srv.m.controllerStreams.WithLabelValues("down").Inc()
	defer srv.m.controllerStreams.WithLabelValues("down").Dec()
	for ctx.Err() == nil {
		err := ls.session(ctx, l)
		if ctx.Err() != nil {
			return
		}
		srv.log.Warn("controller stream broken", "controller", l.addr, "err", err)
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		backoff = min(backoff*2, 5*time.Second)
		if err == nil {
			backoff = 100 * time.Millisecond
		}
	}
}

// session runs one stream on the link's run goroutine: it opens the
// stream, opens the link's queue and snapshots the interest set at once
// (under l.qmu, so every change after the snapshot is queued behind it),
// sends Hello and the set, starts the sender, then receives until the
// stream breaks (a failed Recv or Send, a full queue, ctx) and waits for
// the sender before returning.
func (ls *links) session(ctx context.Context, l *link) error {
	srv := ls.srv
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := l.client.Stream(sctx)
	if err != nil {
		return fmt.Errorf("opening stream: %w", err)
	}
	srv.pres.mu.Lock()
	l.qmu.Lock()
	chs := srv.router.channels()
	snap := srv.pres.snapshotLocked()
	l.open, l.brk = true, cancel
	l.qmu.Unlock()
	srv.pres.mu.Unlock()
	defer func() {
		l.qmu.Lock()
		l.dropLocked()
		l.brk = nil
		l.qmu.Unlock()
	}()
	// These sends may block while the controller does not read; a full
	// queue meanwhile breaks the stream (cancel), which ends them.
	err = stream.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Hello{Hello: &heraldv1.Hello{RelayId: srv.cfg.RelayID}}})
	for len(chs) > 0 && err == nil {
		n := min(len(chs), interestChunk)
		err = stream.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Interest{Interest: &heraldv1.InterestDelta{Add: chs[:n]}}})
		chs = chs[n:]
	}
	if err == nil {
		err = sendPresenceSnapshot(stream, snap)
	}
	snap = nil
	if err != nil {
		return fmt.Errorf("sending hello, interest and presence: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { l.sender(sctx, stream, cancel) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	srv.log.Info("controller stream open", "controller", l.addr)
	l.noPositions.Store(false) // it may have been upgraded while away
	l.up.Store(true)
	srv.m.controllerStreams.WithLabelValues("down").Dec()
	srv.m.controllerStreams.WithLabelValues("up").Inc()
	defer func() {
		l.up.Store(false)
		ls.setOwnership(l.idx, nil)
		ls.markLost(l.idx)
		srv.m.controllerStreams.WithLabelValues("up").Dec()
		srv.m.controllerStreams.WithLabelValues("down").Inc()
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("receiving: %w", err)
		}
		l.stalledAt.Store(0) // it is alive
		switch k := msg.GetKind().(type) {
		case *heraldv1.ControllerMessage_Batch:
			srv.router.handleBatch(k.Batch.GetPublications())
		case *heraldv1.ControllerMessage_Ownership:
			gained := ls.setOwnership(l.idx, k.Ownership.GetPartitions())
			// Whatever this controller published while no stream carried it
			// to us (it was away, or another controller owned the
			// partition) is fetched now, not when a later publication
			// reveals the gap.
			srv.router.recheck(gained)
		case *heraldv1.ControllerMessage_Presence:
			srv.router.handlePresenceEvents(k.Presence.GetEvents())
		case *heraldv1.ControllerMessage_Command:
			srv.runCommand(l, k.Command)
		}
	}
}

// setOwnership records that link idx owns exactly parts and returns the
// partitions it did not own before. The partitions it owned before are kept
// in lost (see markLost) until the stream breaks or they are reassigned.
func (ls *links) setOwnership(idx int, parts []int32) (gained []int32) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	prev := make(map[int32]bool)
	for p, i := range ls.owners {
		if i == idx {
			prev[p] = true
			delete(ls.owners, p)
		}
	}
	for _, p := range parts {
		if !prev[p] {
			gained = append(gained, p)
		}
		ls.owners[p] = idx
	}
	if parts == nil && len(prev) > 0 {
		lp := lostParts{at: time.Now()}
		for p := range prev {
			lp.parts = append(lp.parts, p)
		}
		ls.lost[idx] = lp
	}
	return gained
}

// markLost is called when link idx's stream broke (setOwnership(idx, nil)
// already recorded the partitions it owned).
func (ls *links) markLost(idx int) {
	ls.mu.RLock()
	lp, ok := ls.lost[idx]
	ls.mu.RUnlock()
	if ok {
		ls.srv.log.Warn("controller stream lost with owned partitions", "controller", ls.links[idx].addr, "partitions", len(lp.parts))
	}
}

// watch orphans, every tick, the partitions of broken streams that no
// controller has claimed within ControllerGrace: their subscribers are told
// to recover instead of silently missing what is published meanwhile.
func (ls *links) watch(ctx context.Context) {
	grace := ls.srv.cfg.ControllerGrace
	tick.Every(ctx, max(min(grace/4, time.Second), 20*time.Millisecond), func(now time.Time) {
		var orphaned []int32
		ls.mu.Lock()
		for idx, lp := range ls.lost {
			if now.Sub(lp.at) < grace {
				continue
			}
			for _, p := range lp.parts {
				if _, owned := ls.owners[p]; !owned {
					orphaned = append(orphaned, p)
				}
			}
			delete(ls.lost, idx)
		}
		ls.mu.Unlock()
		if len(orphaned) > 0 {
			ls.srv.router.orphan(orphaned)
		}
	})
}

// order returns the links to ask for ch: the known owner first.
func (ls *links) order(ch string) []*link {
	p := partition.For(ch, int32(ls.srv.cfg.Partitions))
	ls.mu.RLock()
	owner, ok := ls.owners[p]
	ls.mu.RUnlock()
	out := make([]*link, 0, len(ls.links))
	if ok {
		out = append(out, ls.links[owner])
	}
	for i, l := range ls.links {
		if !ok || i != owner {
			out = append(out, l)
		}
	}
	return out
}

var (
	errNoOwner = errors.New("no controller owns the channel's partition")
	// errStalled: the controller did not answer a call within RPCTimeout
	// (or did not recently, see link.stalledAt).
	errStalled = errors.New("controller not answering within the RPC timeout")
)

// stalled reports whether calls to l should fail at once (see stalledAt).
func (l *link) stalled(timeout time.Duration) bool {
	at := l.stalledAt.Load()
	return at != 0 && time.Now().UnixNano()-at < int64(timeout)
}

// observe records the outcome of a call to l: a timeout marks it stalled,
// an answer (also an error status from the controller) clears that. A
// call cut short by the caller's ctx says nothing.
func (l *link) observe(ctx context.Context, err error) {
	switch {
	case ctx.Err() != nil:
	case status.Code(err) == codes.DeadlineExceeded:
		l.stalledAt.Store(time.Now().UnixNano())
	case status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled:
		l.stalledAt.Store(0)
	}
}

// recover asks the owner of req.Channel; a controller answering
// FailedPrecondition is not the owner and the next one is tried. Each call
// is bounded by RPCTimeout, and a controller that is stalled is skipped
// (errStalled). It blocks the calling goroutine (a router or pool worker)
// for at most RPCTimeout per controller.
func (ls *links) recover(ctx context.Context, req *heraldv1.RecoverRequest) (*heraldv1.RecoverResponse, error) {
	var lastErr error = errNoOwner
	timeout := ls.srv.cfg.RPCTimeout
	for _, l := range ls.order(req.GetChannel()) {
		if l.stalled(timeout) {
			lastErr = fmt.Errorf("recover from controller %s: %w", l.addr, errStalled)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := l.client.Recover(cctx, req)
		cancel()
		l.observe(ctx, err)
		if err == nil {
			return resp, nil
		}
		switch status.Code(err) {
		case codes.FailedPrecondition:
		case codes.DeadlineExceeded:
			lastErr = fmt.Errorf("recover from controller %s: %w (%w)", l.addr, errStalled, err)
		default:
			lastErr = fmt.Errorf("recover from controller %s: %w", l.addr, err)
		}
	}
	return nil, lastErr
}

// positions asks each known owner, in one Positions call, for the
// positions of its channels among chs, all owners at once (one goroutine
// per owner beyond the first, waited for), so that a controller that does
// not answer delays no other owner's channels. got(i, p) is called for
// every channel chs[i] its owner answered, from the goroutine of that
// owner's call as soon as it answers (concurrently for different owners;
// it must not block for long). Channels left out (unknown owner, a failed
// call, a stalled controller, a controller without Positions, ownership
// moved) are for the caller to ask Recover for. Positions calls are bounded
// by RPCTimeout.
func (ls *links) positions(ctx context.Context, chs []string, got func(i int, p *heraldv1.Position)) {
	parts := int32(ls.srv.cfg.Partitions)
	byOwner := make(map[int][]int) // link index → indexes into chs
	ls.mu.RLock()
	for i, ch := range chs {
		if owner, ok := ls.owners[partition.For(ch, parts)]; ok {
			byOwner[owner] = append(byOwner[owner], i)
		}
	}
	ls.mu.RUnlock()
	timeout := ls.srv.cfg.RPCTimeout
	ask := func(l *link, idxs []int) {
		req := &heraldv1.PositionsRequest{Channels: make([]string, len(idxs))}
		for j, i := range idxs {
			req.Channels[j] = chs[i]
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := l.client.Positions(cctx, req)
		cancel()
		l.observe(ctx, err)
		if status.Code(err) == codes.Unimplemented {
			l.noPositions.Store(true) // an older controller: Recover per channel
			ls.srv.log.Info("controller has no Positions; positioning channels with Recover", "controller", l.addr)
		}
		if err != nil || len(resp.GetPositions()) != len(idxs) {
			return
		}
		for j, i := range idxs {
			if p := resp.Positions[j]; p.GetOwned() {
				got(i, p)
			}
		}
	}
	var wg sync.WaitGroup
	var inline func()
	for owner, idxs := range byOwner {
		l := ls.links[owner]
		if l.noPositions.Load() || l.stalled(timeout) {
			continue
		}
		if inline == nil {
			inline = func() { ask(l, idxs) }
			continue
		}
		wg.Go(func() { ask(l, idxs) })
	}
	if inline != nil {
		inline()
	}
	wg.Wait()
}

// ownerOf returns the index of the link owning ch's partition, -1 when
// unknown.
func (ls *links) ownerOf(ch string) int {
	p := partition.For(ch, int32(ls.srv.cfg.Partitions))
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	if owner, ok := ls.owners[p]; ok {
		return owner
	}
	return -1
}

// recoverRetry retries recover a few times with backoff (the owner may be
// moving between controllers). A controller that did not answer within
// RPCTimeout (errStalled) is not asked again: the caller fails now (its
// subscriber gets an error and resubscribes) instead of holding a worker
// for several timeouts. It blocks the calling worker for at most about
// 5 s plus RPCTimeout per controller asked.
func (ls *links) recoverRetry(ctx context.Context, req *heraldv1.RecoverRequest) (*heraldv1.RecoverResponse, error) {
	backoff := 100 * time.Millisecond
	var err error
	for attempt := 0; attempt < 6; attempt++ {
		var resp *heraldv1.RecoverResponse
		if resp, err = ls.recover(ctx, req); err == nil {
			return resp, nil
		}
		if errors.Is(err, errStalled) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
	return nil, err
}
