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
	"github.com/herald-chat/herald/internal/tick"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// interestChunk caps the channels of one InterestDelta.
const interestChunk = 1000

// links holds one stream per controller and the partition ownership they
// announced, to route Recover to the owner.
type links struct {
	srv   *Server
	links []*link

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

// link is one controller: a gRPC client and its current stream.
type link struct {
	idx    int
	addr   string
	cc     *grpc.ClientConn
	client heraldv1.RouterClient

	mu     sync.Mutex // serializes Send; guards stream
	stream heraldv1.Router_StreamClient

	// noPositions: the controller answered Positions with Unimplemented (an
	// older one); asked again once its stream reopens.
	noPositions atomic.Bool
}

func newLinks(srv *Server, addrs []string, dialOpts ...grpc.DialOption) (*links, error) {
	ls := &links{srv: srv, owners: map[int32]int{}, lost: map[int]lostParts{}}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dialOpts...)
	for i, a := range addrs {
		cc, err := grpc.NewClient(a, opts...)
		if err != nil {
			ls.close()
			return nil, fmt.Errorf("creating gRPC client for controller %s: %w", a, err)
		}
		ls.links = append(ls.links, &link{idx: i, addr: a, cc: cc, client: heraldv1.NewRouterClient(cc)})
	}
	return ls, nil
}

func (ls *links) close() {
	for _, l := range ls.links {
		_ = l.cc.Close()
	}
}

// up reports how many streams are open.
func (ls *links) up() int {
	n := 0
	for _, l := range ls.links {
		l.mu.Lock()
		if l.stream != nil {
			n++
		}
		l.mu.Unlock()
	}
	return n
}

// addInterest sends interest adds for chs on every open stream. A stream
// that is down gets the whole interest set when it reconnects.
func (ls *links) addInterest(chs ...string) {
	ls.sendInterest(chs, func(part []string) *heraldv1.InterestDelta { return &heraldv1.InterestDelta{Add: part} })
}

// removeInterest sends interest removals on every open stream.
func (ls *links) removeInterest(chs []string) {
	ls.sendInterest(chs, func(part []string) *heraldv1.InterestDelta { return &heraldv1.InterestDelta{Remove: part} })
}

// sendInterest sends chs on every open stream in deltas of at most
// interestChunk channels.
func (ls *links) sendInterest(chs []string, delta func([]string) *heraldv1.InterestDelta) {
	for len(chs) > 0 {
		n := min(len(chs), interestChunk)
		msg := &heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Interest{Interest: delta(chs[:n])}}
		for _, l := range ls.links {
			l.send(msg)
		}
		chs = chs[n:]
	}
}

func (l *link) send(msg *heraldv1.RelayMessage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stream == nil {
		return
	}
	if err := l.stream.Send(msg); err != nil {
		// The receive side sees the failure too and reconnects.
		l.stream = nil
	}
}

// run keeps the stream to one controller open until ctx ends: Hello, the
// current interest set, then publications and ownership until it breaks.
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

func (ls *links) session(ctx context.Context, l *link) error {
	srv := ls.srv
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := l.client.Stream(sctx)
	if err != nil {
		return fmt.Errorf("opening stream: %w", err)
	}
	l.mu.Lock()
	err = stream.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Hello{Hello: &heraldv1.Hello{RelayId: srv.cfg.RelayID}}})
	chs := srv.router.channels()
	for len(chs) > 0 && err == nil {
		n := min(len(chs), interestChunk)
		err = stream.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Interest{Interest: &heraldv1.InterestDelta{Add: chs[:n]}}})
		chs = chs[n:]
	}
	if err == nil {
		l.stream = stream
	}
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("sending hello and interest: %w", err)
	}
	srv.log.Info("controller stream open", "controller", l.addr)
	l.noPositions.Store(false) // it may have been upgraded while away
	srv.m.controllerStreams.WithLabelValues("down").Dec()
	srv.m.controllerStreams.WithLabelValues("up").Inc()
	defer func() {
		l.mu.Lock()
		l.stream = nil
		l.mu.Unlock()
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

var errNoOwner = errors.New("no controller owns the channel's partition")

// recover asks the owner of req.Channel; a controller answering
// FailedPrecondition is not the owner and the next one is tried.
func (ls *links) recover(ctx context.Context, req *heraldv1.RecoverRequest) (*heraldv1.RecoverResponse, error) {
	var lastErr error = errNoOwner
	for _, l := range ls.order(req.GetChannel()) {
		cctx, cancel := context.WithTimeout(ctx, ls.srv.cfg.RPCTimeout)
		resp, err := l.client.Recover(cctx, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		if status.Code(err) != codes.FailedPrecondition {
			lastErr = fmt.Errorf("recover from controller %s: %w", l.addr, err)
		}
	}
	return nil, lastErr
}

// positions asks each known owner, in one Positions call, for the
// positions of its channels among chs. An entry is nil where no owner
// answered (unknown owner, a failed call, a controller without Positions,
// ownership moved): the caller asks Recover for it.
func (ls *links) positions(ctx context.Context, chs []string) []*heraldv1.Position {
	out := make([]*heraldv1.Position, len(chs))
	parts := int32(ls.srv.cfg.Partitions)
	byOwner := make(map[int][]int) // link index → indexes into chs
	ls.mu.RLock()
	for i, ch := range chs {
		if owner, ok := ls.owners[partition.For(ch, parts)]; ok {
			byOwner[owner] = append(byOwner[owner], i)
		}
	}
	ls.mu.RUnlock()
	for owner, idxs := range byOwner {
		l := ls.links[owner]
		if l.noPositions.Load() {
			continue
		}
		req := &heraldv1.PositionsRequest{Channels: make([]string, len(idxs))}
		for j, i := range idxs {
			req.Channels[j] = chs[i]
		}
		cctx, cancel := context.WithTimeout(ctx, ls.srv.cfg.RPCTimeout)
		resp, err := l.client.Positions(cctx, req)
		cancel()
		if status.Code(err) == codes.Unimplemented {
			l.noPositions.Store(true) // an older controller: Recover per channel
			ls.srv.log.Info("controller has no Positions; positioning channels with Recover", "controller", l.addr)
		}
		if err != nil || len(resp.GetPositions()) != len(idxs) {
			continue
		}
		for j, i := range idxs {
			if p := resp.Positions[j]; p.GetOwned() {
				out[i] = p
			}
		}
	}
	return out
}

// recoverRetry retries recover a few times with backoff (the owner may be
// moving between controllers).
func (ls *links) recoverRetry(ctx context.Context, req *heraldv1.RecoverRequest) (*heraldv1.RecoverResponse, error) {
	backoff := 100 * time.Millisecond
	var err error
	for attempt := 0; attempt < 6; attempt++ {
		var resp *heraldv1.RecoverResponse
		if resp, err = ls.recover(ctx, req); err == nil {
			return resp, nil
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
